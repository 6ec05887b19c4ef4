// listener.hpp — Accepts connections, authenticates them under a deadline, groups sessions.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <vector>

#include <sys/types.h>

#include "transport/auth.hpp"
#include "transport/connection.hpp"

namespace uffdm::transport {

struct ListenerOptions {
    Endpoint endpoint;
    const Secret* secret = nullptr;  // nullptr: unauthenticated, loopback only unless insecure
    // TLS 1.3 before anything else on every connection (nullptr: none). With a CA for client
    // certificates it authenticates clients by itself; without one, a secret is still needed.
    std::shared_ptr<TlsContext> tls;
    bool insecure =
        false;  // allow listening on a non-loopback address without client authentication
    // Unix sockets only. The socket file is created with this mode whatever the umask (never
    // wider for a moment), and a connecting process must run as this process's user, as root,
    // or as one of allowed_uids (SO_PEERCRED, checked before the handshake).
    mode_t unix_mode = 0600;
    std::vector<uid_t> allowed_uids;
    LivenessOptions liveness;
    // Connections still in their handshake; more are closed at once (a slow-handshake flood
    // cannot exhaust the server, and every one of them times out).
    std::size_t max_pending_handshakes = 64;
    std::uint8_t max_bulk_channels = kMaxBulkChannels;
};

struct ListenerStats {
    std::uint64_t accepted = 0;
    std::uint64_t joined = 0;
    std::uint64_t refused = 0;        // handshake failed: bad frame, wrong secret, foreign session
    std::uint64_t refused_peers = 0;  // Unix socket peers running as a user not allowed
    std::uint64_t timed_out = 0;
    std::uint64_t shed = 0;  // closed at once: too many handshakes pending
};

// All of a Listener's work runs on the io_context it was opened with; run that io_context on
// one thread. on_joined receives each authenticated connection (urgent ones open a session,
// bulk ones join it).
class Listener : public std::enable_shared_from_this<Listener> {
  public:
    using OnJoined = std::function<void(Connection)>;

    [[nodiscard]] static std::expected<std::shared_ptr<Listener>, Failure> open(
        asio::io_context& io, ListenerOptions options, OnJoined on_joined);

    // The bound address (with the port the kernel picked for port 0).
    [[nodiscard]] Endpoint local_endpoint() const { return local_; }
    void start();
    void stop();
    // Forgets a session: its id can no longer be joined.
    void end_session(std::uint64_t session_id);
    [[nodiscard]] ListenerStats stats() const;

  private:
    Listener(asio::io_context& io, ListenerOptions options, OnJoined on_joined);
    asio::awaitable<void> accept_loop();
    asio::awaitable<void> handshake(Socket socket);
    // Unix sockets: the peer's uid is this process's, root's or an allowed one. Otherwise the
    // peer is told why (ERROR) and false is returned.
    bool peer_allowed(Socket& socket);
    std::uint64_t new_session_id();

    asio::io_context& io_;
    ListenerOptions options_;
    OnJoined on_joined_;
    asio::basic_socket_acceptor<asio::generic::stream_protocol> acceptor_;
    Endpoint local_;
    std::size_t pending_ = 0;
    // session id -> bulk indices already joined (bit i = index i)
    std::map<std::uint64_t, std::uint32_t> sessions_;
    struct Counters {
        std::atomic<std::uint64_t> accepted{0}, joined{0}, refused{0}, refused_peers{0},
            timed_out{0}, shed{0};
    } counters_;
};

}  // namespace uffdm::transport
