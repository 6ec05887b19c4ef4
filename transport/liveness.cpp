// liveness.cpp — setsockopt for keepalive, TCP_USER_TIMEOUT and TCP_NODELAY.
#include "transport/liveness.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

namespace uffdm::transport {

std::expected<void, std::error_code> apply_liveness(int fd, const LivenessOptions& options) {
    sockaddr_storage addr{};
    socklen_t length = sizeof addr;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &length) < 0) {
        return std::unexpected(std::error_code(errno, std::system_category()));
    }
    if (addr.ss_family != AF_INET && addr.ss_family != AF_INET6) {
        return {};
    }
    auto set = [fd](int level, int name, int value) {
        return ::setsockopt(fd, level, name, &value, sizeof value) == 0;
    };
    bool ok =
        set(IPPROTO_TCP, TCP_NODELAY, 1) && set(SOL_SOCKET, SO_KEEPALIVE, 1) &&
        set(IPPROTO_TCP, TCP_KEEPIDLE, static_cast<int>(options.keepalive_idle.count())) &&
        set(IPPROTO_TCP, TCP_KEEPINTVL, static_cast<int>(options.keepalive_interval.count())) &&
        set(IPPROTO_TCP, TCP_KEEPCNT, options.keepalive_count) &&
        set(IPPROTO_TCP, TCP_USER_TIMEOUT, static_cast<int>(options.user_timeout.count()));
    if (!ok) {
        return std::unexpected(std::error_code(errno, std::system_category()));
    }
    return {};
}

}  // namespace uffdm::transport
