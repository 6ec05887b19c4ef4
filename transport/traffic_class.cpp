// traffic_class.cpp — IP_TOS / IPV6_TCLASS, SO_PRIORITY and TCP_NOTSENT_LOWAT on a socket.
#include "transport/traffic_class.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

namespace uffdm::transport {

std::expected<void, std::error_code> mark_connection(int fd, bool urgent,
                                                     const TrafficMarking& marking) {
    if (!marking.enabled) {
        return {};
    }
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
    int tos = (urgent ? marking.urgent_dscp : marking.bulk_dscp) << 2;  // ECN bits stay 0
    // IP_TOS also sets the priority from the TOS; SO_PRIORITY after it says what we mean.
    bool ok = addr.ss_family == AF_INET ? set(IPPROTO_IP, IP_TOS, tos)
                                        : set(IPPROTO_IPV6, IPV6_TCLASS, tos);
    ok = ok &&
         set(SOL_SOCKET, SO_PRIORITY, urgent ? marking.urgent_priority : marking.bulk_priority);
    if (ok && !urgent && marking.bulk_unsent_bytes > 0) {
        ok = set(IPPROTO_TCP, TCP_NOTSENT_LOWAT, static_cast<int>(marking.bulk_unsent_bytes));
    }
    if (!ok) {
        return std::unexpected(std::error_code(errno, std::system_category()));
    }
    return {};
}

}  // namespace uffdm::transport
