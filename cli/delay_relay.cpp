// delay_relay.cpp — Per direction a reader that stamps chunks and a writer that waits them out.
#include "cli/delay_relay.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <condition_variable>
#include <deque>
#include <mutex>

namespace uffdm::cli {

namespace {

using Clock = std::chrono::steady_clock;
constexpr std::size_t kChunk = 64 << 10;
constexpr std::size_t kMaxWaiting = 16 << 20;

// One direction: bytes read from `from` go to `to` one_way after they arrived.
class Direction {
  public:
    Direction(int from, int to, std::chrono::microseconds one_way, const std::atomic<bool>& stop)
        : from_(from), to_(to), one_way_(one_way), stop_(stop) {
        reader_ = std::thread([this] { read_loop(); });
        writer_ = std::thread([this] { write_loop(); });
    }
    ~Direction() {
        {
            std::lock_guard lock(mutex_);
            ended_ = true;
        }
        changed_.notify_all();
        reader_.join();
        writer_.join();
    }
    Direction(const Direction&) = delete;
    Direction& operator=(const Direction&) = delete;

  private:
    struct Chunk {
        Clock::time_point due;
        std::vector<char> bytes;
    };

    void read_loop() {
        for (;;) {
            pollfd ready{.fd = from_, .events = POLLIN, .revents = 0};
            int polled = ::poll(&ready, 1, 100);
            if (stop_.load()) {
                break;
            }
            if (polled <= 0) {
                continue;
            }
            std::vector<char> bytes(kChunk);
            ssize_t got = ::recv(from_, bytes.data(), bytes.size(), 0);
            if (got <= 0) {
                break;
            }
            bytes.resize(static_cast<std::size_t>(got));
            std::unique_lock lock(mutex_);
            changed_.wait(lock, [&] { return waiting_ < kMaxWaiting || ended_; });
            if (ended_) {
                return;
            }
            waiting_ += bytes.size();
            queue_.push_back({Clock::now() + one_way_, std::move(bytes)});
            changed_.notify_all();
        }
        std::lock_guard lock(mutex_);
        eof_ = true;
        changed_.notify_all();
    }

    void write_loop() {
        for (;;) {
            std::unique_lock lock(mutex_);
            changed_.wait(lock, [&] { return !queue_.empty() || eof_ || ended_; });
            if (queue_.empty()) {
                if (eof_) {
                    ::shutdown(to_, SHUT_WR);  // the half-close goes on, after the bytes
                }
                return;
            }
            Chunk chunk = std::move(queue_.front());
            queue_.pop_front();
            lock.unlock();
            std::this_thread::sleep_until(chunk.due);
            std::size_t sent = 0;
            while (sent < chunk.bytes.size()) {
                ssize_t n =
                    ::send(to_, chunk.bytes.data() + sent, chunk.bytes.size() - sent, MSG_NOSIGNAL);
                if (n <= 0) {
                    return;
                }
                sent += static_cast<std::size_t>(n);
            }
            lock.lock();
            waiting_ -= chunk.bytes.size();
            changed_.notify_all();
        }
    }

    int from_;
    int to_;
    std::chrono::microseconds one_way_;
    const std::atomic<bool>& stop_;
    std::mutex mutex_;
    std::condition_variable changed_;
    std::deque<Chunk> queue_;
    std::size_t waiting_ = 0;
    bool eof_ = false;
    bool ended_ = false;
    std::thread reader_;
    std::thread writer_;
};

}  // namespace

struct DelayRelay::Pipe {
    int client;
    int server;
    Direction up;
    Direction down;
    Pipe(int c, int s, std::chrono::microseconds one_way, const std::atomic<bool>& stop)
        : client(c), server(s), up(c, s, one_way, stop), down(s, c, one_way, stop) {}
    ~Pipe() = default;
};

DelayRelay::DelayRelay(std::string host, std::uint16_t port, std::chrono::microseconds one_way)
    : host_(std::move(host)), target_port_(port), one_way_(one_way) {
    listener_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof addr;
    if (listener_ < 0 || ::bind(listener_, reinterpret_cast<sockaddr*>(&addr), length) != 0 ||
        ::listen(listener_, 64) != 0 ||
        ::getsockname(listener_, reinterpret_cast<sockaddr*>(&addr), &length) != 0) {
        return;
    }
    port_ = ntohs(addr.sin_port);
    acceptor_ = std::thread([this] { accept_loop(); });
}

void DelayRelay::accept_loop() {
    while (!stopping_.load()) {
        pollfd ready{.fd = listener_, .events = POLLIN, .revents = 0};
        if (::poll(&ready, 1, 100) <= 0) {
            continue;
        }
        int client = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
        if (client < 0) {
            continue;
        }
        int server = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in target{};
        target.sin_family = AF_INET;
        target.sin_port = htons(target_port_);
        if (server < 0 || ::inet_pton(AF_INET, host_.c_str(), &target.sin_addr) != 1 ||
            ::connect(server, reinterpret_cast<sockaddr*>(&target), sizeof target) != 0) {
            ::close(client);
            if (server >= 0) {
                ::close(server);
            }
            continue;
        }
        int one = 1;
        ::setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        ::setsockopt(server, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        pipes_.push_back(std::make_shared<Pipe>(client, server, one_way_, stopping_));
    }
}

DelayRelay::~DelayRelay() {
    stopping_.store(true);
    if (acceptor_.joinable()) {
        acceptor_.join();
    }
    for (auto& pipe : pipes_) {
        ::shutdown(pipe->client, SHUT_RDWR);
        ::shutdown(pipe->server, SHUT_RDWR);
    }
    for (auto& pipe : pipes_) {
        int client = pipe->client;
        int server = pipe->server;
        pipe.reset();  // joins its threads
        ::close(client);
        ::close(server);
    }
    if (listener_ >= 0) {
        ::close(listener_);
    }
}

DelayRelayProcess::DelayRelayProcess(const std::string& host, std::uint16_t port,
                                     std::chrono::microseconds one_way) {
    int ready[2];
    int lifeline[2];
    if (::pipe2(ready, O_CLOEXEC) != 0) {
        return;
    }
    if (::pipe2(lifeline, O_CLOEXEC) != 0) {
        ::close(ready[0]);
        ::close(ready[1]);
        return;
    }
    pid_ = ::fork();
    if (pid_ == 0) {
        ::close(ready[0]);
        ::close(lifeline[1]);
        {
            DelayRelay relay(host, port, one_way);
            std::uint16_t listening = relay.port();
            (void)::write(ready[1], &listening, sizeof listening);
            char byte = 0;
            while (::read(lifeline[0], &byte, 1) > 0) {
            }
        }
        ::_exit(0);
    }
    ::close(ready[1]);
    ::close(lifeline[0]);
    lifeline_ = lifeline[1];
    if (pid_ > 0 && ::read(ready[0], &port_, sizeof port_) != sizeof port_) {
        port_ = 0;
    }
    ::close(ready[0]);
}

DelayRelayProcess::~DelayRelayProcess() {
    if (lifeline_ >= 0) {
        ::close(lifeline_);
    }
    if (pid_ > 0) {
        int status = 0;
        ::waitpid(pid_, &status, 0);
    }
}

}  // namespace uffdm::cli
