// handshake.hpp — The connection handshake as two pure state machines (no I/O, fuzzable).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "transport/auth.hpp"
#include "transport/control.hpp"
#include "transport/frame.hpp"

namespace uffdm::transport {

//   client                                   server
//     HELLO(versions, role, session, Nc) ---->
//                                        <---- CHALLENGE(Ns, HMAC_s(HELLO, Ns))
//     RESPONSE(HMAC_c(HELLO, Ns))      ---->
//                                        <---- ACCEPT(session, version) | ERROR
// Nothing but these frames is accepted before ACCEPT. With AuthMode::None (an insecure
// server) the proofs are all zero and not checked; both sides must agree on the mode.

// What one connection became once accepted.
struct Joined {
    Role role = Role::Invalid;
    std::uint64_t session_id = 0;
    std::uint8_t bulk_index = 0;
    std::uint16_t version = 0;
    std::uint8_t max_bulk_channels = 0;
};

// The outcome of feeding one frame: bytes to send (possibly an ERROR frame), and either
// joined (done), failed (the connection must close after sending), or neither (go on).
struct HandshakeStep {
    std::vector<std::byte> send;
    std::optional<Joined> joined;
    std::optional<Failure> failed;
};

struct ServerHandshakeConfig {
    const Secret* secret = nullptr;  // nullptr: AuthMode::None
    std::uint8_t max_bulk_channels = kMaxBulkChannels;
    // For a bulk HELLO: does this session exist and is this bulk index free?
    std::function<bool(std::uint64_t session_id, std::uint8_t bulk_index)> may_join;
    // For an urgent HELLO: a fresh, unused, non-zero session id.
    std::function<std::uint64_t()> new_session_id;
};

class ServerHandshake {
  public:
    explicit ServerHandshake(ServerHandshakeConfig config) : config_(std::move(config)) {}
    [[nodiscard]] HandshakeStep on_frame(const Frame& frame);
    [[nodiscard]] bool finished() const noexcept { return state_ == State::Done; }

  private:
    enum class State { AwaitHello, AwaitResponse, Done };
    HandshakeStep on_hello(const Frame& frame);
    HandshakeStep on_response(const Frame& frame);
    HandshakeStep fail(ErrorCode code, const std::string& to_peer, std::string detail);

    ServerHandshakeConfig config_;
    State state_ = State::AwaitHello;
    Hello hello_;
    Nonce server_nonce_{};
    std::uint16_t version_ = 0;
};

struct ClientHandshakeConfig {
    const Secret* secret = nullptr;  // nullptr: AuthMode::None
    Role role = Role::Urgent;
    std::uint64_t session_id = 0;  // the session a bulk connection joins
    std::uint8_t bulk_index = 0;
    // The newest version offered (a peer built before a later one is kMaxVersion's past).
    std::uint16_t max_version = kMaxVersion;
};

class ClientHandshake {
  public:
    explicit ClientHandshake(ClientHandshakeConfig config) : config_(config) {}
    // The HELLO frame to send first.
    [[nodiscard]] std::vector<std::byte> start();
    [[nodiscard]] HandshakeStep on_frame(const Frame& frame);
    [[nodiscard]] bool finished() const noexcept { return state_ == State::Done; }

  private:
    enum class State { Start, AwaitChallenge, AwaitAccept, Done };
    HandshakeStep fail(std::string detail, Errc code = Errc::ProtocolViolation);

    ClientHandshakeConfig config_;
    State state_ = State::Start;
    Hello hello_;
};

}  // namespace uffdm::transport
