// traffic_class.hpp — Which connection's packets hosts and switches send first: DSCP, priority.
#pragma once

#include <cstdint>
#include <expected>
#include <system_error>

namespace uffdm::transport {

// The urgent connection carries a blocked vCPU's page; the bulk connections the background
// stream that fills the link. Marked, a host's queue discipline (pfifo_fast's three bands, by
// the socket priority) and a network's switches (by the DSCP) send an answer ahead of the
// stream frames queued before it. Both sides mark both kinds (the destination's REQUESTs share
// the reverse path with the stream's acknowledgements).
struct TrafficMarking {
    bool enabled = true;
    std::uint8_t urgent_dscp = 46;  // EF, expedited forwarding
    std::uint8_t bulk_dscp = 8;     // CS1, lower effort
    // SO_PRIORITY: 6 is TC_PRIO_INTERACTIVE (pfifo_fast band 0), 2 TC_PRIO_BULK (band 2). Both
    // are within 0..6, which needs no CAP_NET_ADMIN (a destination that dropped every
    // capability still marks the connections of a session it makes after a break).
    int urgent_priority = 6;
    int bulk_priority = 2;
    // A bulk socket's unsent backlog (TCP_NOTSENT_LOWAT), so that a request that moves the
    // stream's cursor acts within a few hundred microseconds at 1 Gbit/s, not after the
    // megabytes a socket buffer can hold. 0: the kernel's default.
    std::uint32_t bulk_unsent_bytes = 256U << 10;
};

// Marks a connected socket as urgent or bulk. A no-op for Unix sockets (no DSCP, no queue).
[[nodiscard]] std::expected<void, std::error_code> mark_connection(int fd, bool urgent,
                                                                   const TrafficMarking& marking);

}  // namespace uffdm::transport
