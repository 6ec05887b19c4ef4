// tcp_relay.hpp — A loopback TCP relay between two real peers, for tests that watch or break
// the bytes on the wire.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

namespace uffdm::test {

// Listens on 127.0.0.1 (port()), and joins each connection it accepts to 127.0.0.1:target_port,
// one thread a pair. Bytes from the connecting side pass through `upstream`: given every byte
// received and not yet forwarded, it says how many of them to forward now (the rest wait for
// more) and whether to reset both sides after those. It is called for one connection at a time.
// Bytes the other way pass through `downstream`, when given, which may change them in place
// (connection: 0 for the first pair accepted, 1 for the next...). A side that ends its writing
// is half-closed on the other; a pair is closed once both directions have ended, or when the
// relay goes.
class TcpRelay {
  public:
    struct Verdict {
        std::size_t forward = 0;
        bool reset = false;  // then close both sockets with RST
    };
    using Upstream = std::function<Verdict(std::span<const std::byte> pending)>;
    using Downstream = std::function<void(std::size_t connection, std::span<std::byte> bytes)>;

    TcpRelay(std::uint16_t target_port, Upstream upstream, Downstream downstream = {});
    ~TcpRelay();
    TcpRelay(const TcpRelay&) = delete;
    TcpRelay& operator=(const TcpRelay&) = delete;

    // 0 when the relay could not listen.
    [[nodiscard]] std::uint16_t port() const { return port_; }

  private:
    void accept_loop();
    void pump(std::size_t connection, int client, int server);

    std::uint16_t target_port_;
    Upstream upstream_;
    Downstream downstream_;
    std::mutex upstream_mutex_;  // both callbacks are called under it
    std::uint16_t port_ = 0;
    int listener_ = -1;
    std::atomic<bool> stopping_{false};
    std::vector<std::thread> pumps_;  // touched by the accept thread only, until it is joined
    std::thread acceptor_;
};

}  // namespace uffdm::test
