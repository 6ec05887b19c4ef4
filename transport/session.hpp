// session.hpp — A client session: one urgent connection plus N bulk connections, all joined.
#pragma once

#include <vector>

#include "transport/connection.hpp"

namespace uffdm::transport {

struct SessionOptions {
    Endpoint endpoint;
    const Secret* secret = nullptr;
    std::shared_ptr<TlsContext> tls;  // TLS 1.3 on every connection of the session (or none)
    std::size_t bulk_channels = 1;    // 0..16; capped by what the server's ACCEPT allows
    LivenessOptions liveness;
    std::uint16_t max_version = kMaxVersion;  // the newest protocol version offered
};

// The urgent connection carries only fault requests and the pages that answer them; the bulk
// connections carry the background stream. Separate sockets mean an urgent frame never
// waits behind bulk bytes in a socket buffer on either side.
struct Session {
    std::uint64_t id = 0;
    Connection urgent;
    std::vector<Connection> bulk;
};

// Why a session could not be made, and whether the server was reached at all: false when the
// urgent connection's connect(2) failed (nothing listens at the endpoint), true when a
// connection was made and then broke or was refused.
struct SessionFailure : Failure {
    bool reached = false;
};

// Connects and authenticates the urgent connection first (it opens the session), then each
// bulk connection with the session id. Any failure ends the whole attempt.
[[nodiscard]] asio::awaitable<std::expected<Session, SessionFailure>> connect_session(
    SessionOptions options);

}  // namespace uffdm::transport
