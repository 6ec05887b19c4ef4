// liveness.hpp — Timeouts and dead-peer detection settings, applied to a socket.
#pragma once

#include <chrono>
#include <expected>
#include <system_error>

namespace uffdm::transport {

// Defaults find a dead peer within seconds: keepalive probes after 2 s idle, every 1 s, 3
// misses; unacknowledged data for 5 s (TCP_USER_TIMEOUT) ends the connection; a peer that is
// alive but stops reading is found by the stall timeout.
struct LivenessOptions {
    std::chrono::milliseconds handshake_timeout{5000};
    // A write that makes no progress for this long means the peer stopped reading (its
    // receive buffer and our send buffer are full): the connection is reported PeerLost.
    std::chrono::milliseconds stall_timeout{10000};
    // Once joined, a connection that receives nothing for this long is dead even where TCP
    // still says it is alive (a stopped or hung peer process, a Unix socket): 0 turns it off.
    // Each side sends a PING after heartbeat_interval without sending anything, so an idle but
    // healthy connection never reaches it.
    std::chrono::milliseconds idle_timeout{10000};
    std::chrono::milliseconds heartbeat_interval{2000};
    std::chrono::seconds keepalive_idle{2};
    std::chrono::seconds keepalive_interval{1};
    int keepalive_count = 3;
    std::chrono::milliseconds user_timeout{5000};
};

// TCP_NODELAY, SO_KEEPALIVE with the probe timing, TCP_USER_TIMEOUT. A no-op for Unix sockets.
[[nodiscard]] std::expected<void, std::error_code> apply_liveness(int fd,
                                                                  const LivenessOptions& options);

}  // namespace uffdm::transport
