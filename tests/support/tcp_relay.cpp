// tcp_relay.cpp — Blocking sockets and poll(2): accept, connect to the target, pump both ways.
#include "tests/support/tcp_relay.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace uffdm::test {
namespace {

sockaddr_in loopback(std::uint16_t port) {
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = htons(port);
    return address;
}

bool send_all(int fd, const std::byte* data, std::size_t size) {
    while (size > 0) {
        ssize_t n = ::send(fd, data, size, MSG_NOSIGNAL);
        if (n <= 0) {
            return false;
        }
        data += n;
        size -= static_cast<std::size_t>(n);
    }
    return true;
}

}  // namespace

TcpRelay::TcpRelay(std::uint16_t target_port, Upstream upstream, Downstream downstream)
    : target_port_(target_port),
      upstream_(std::move(upstream)),
      downstream_(std::move(downstream)) {
    listener_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address = loopback(0);
    socklen_t length = sizeof address;
    if (listener_ < 0 || ::bind(listener_, reinterpret_cast<sockaddr*>(&address), length) < 0 ||
        ::listen(listener_, 16) < 0 ||
        ::getsockname(listener_, reinterpret_cast<sockaddr*>(&address), &length) < 0) {
        return;
    }
    port_ = ntohs(address.sin_port);
    acceptor_ = std::thread([this] { accept_loop(); });
}

TcpRelay::~TcpRelay() {
    stopping_ = true;
    ::shutdown(listener_, SHUT_RDWR);
    if (acceptor_.joinable()) {
        acceptor_.join();
    }
    for (auto& pump : pumps_) {
        pump.join();
    }
    ::close(listener_);
}

void TcpRelay::accept_loop() {
    for (;;) {
        int client = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
        if (client < 0) {
            return;  // shut down
        }
        int server = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in address = loopback(target_port_);
        if (server < 0 ||
            ::connect(server, reinterpret_cast<sockaddr*>(&address), sizeof address) < 0) {
            ::close(client);
            if (server >= 0) {
                ::close(server);
            }
            continue;
        }
        std::size_t connection = pumps_.size();
        pumps_.emplace_back(
            [this, connection, client, server] { pump(connection, client, server); });
    }
}

void TcpRelay::pump(std::size_t connection, int client, int server) {
    std::vector<std::byte> pending;  // from the client, not yet forwarded
    std::vector<std::byte> buffer(64 * 1024);
    bool from_client = true;
    bool from_server = true;
    bool reset = false;
    while (!stopping_ && !reset && (from_client || from_server)) {
        // A negative descriptor is skipped by poll(2): a direction that ended is not watched.
        pollfd ready[2] = {{from_client ? client : -1, POLLIN, 0},
                           {from_server ? server : -1, POLLIN, 0}};
        if (::poll(ready, 2, 100) < 0) {
            break;
        }
        if (ready[1].revents != 0) {
            ssize_t n = ::recv(server, buffer.data(), buffer.size(), 0);
            if (n <= 0) {
                from_server = false;
                ::shutdown(client, SHUT_WR);
            } else {
                if (downstream_) {
                    std::lock_guard lock(upstream_mutex_);
                    downstream_(connection, std::span(buffer.data(), static_cast<std::size_t>(n)));
                }
                if (!send_all(client, buffer.data(), static_cast<std::size_t>(n))) {
                    break;
                }
            }
        }
        if (ready[0].revents != 0) {
            ssize_t n = ::recv(client, buffer.data(), buffer.size(), 0);
            if (n <= 0) {
                from_client = false;
                ::shutdown(server, SHUT_WR);
                continue;
            }
            pending.insert(pending.end(), buffer.begin(), buffer.begin() + n);
            Verdict verdict;
            {
                std::lock_guard lock(upstream_mutex_);
                verdict = upstream_(pending);
            }
            if (!send_all(server, pending.data(), verdict.forward)) {
                break;
            }
            pending.erase(pending.begin(),
                          pending.begin() + static_cast<std::ptrdiff_t>(verdict.forward));
            reset = verdict.reset;
        }
    }
    if (reset) {
        linger zero{.l_onoff = 1, .l_linger = 0};  // close(2) then sends RST
        ::setsockopt(client, SOL_SOCKET, SO_LINGER, &zero, sizeof zero);
        ::setsockopt(server, SOL_SOCKET, SO_LINGER, &zero, sizeof zero);
    }
    ::close(client);
    ::close(server);
}

}  // namespace uffdm::test
