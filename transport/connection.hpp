// connection.hpp — An authenticated connection: framed reads and writes on an Asio socket.
#pragma once

#include <chrono>
#include <expected>
#include <memory>
#include <span>
#include <vector>

#include "transport/asio.hpp"
#include "transport/endpoint.hpp"
#include "transport/handshake.hpp"
#include "transport/liveness.hpp"
#include "transport/tls.hpp"

namespace uffdm::transport {

class Connection {
  public:
    Connection(Socket socket, Joined joined, FrameDecoder decoder, LivenessOptions liveness = {},
               std::unique_ptr<TlsSession> tls = nullptr)
        : socket_(std::move(socket)),
          joined_(joined),
          decoder_(std::move(decoder)),
          liveness_(liveness),
          tls_(std::move(tls)) {}

    [[nodiscard]] const Joined& joined() const noexcept { return joined_; }
    [[nodiscard]] Socket& socket() noexcept { return socket_; }
    [[nodiscard]] const LivenessOptions& liveness() const noexcept { return liveness_; }
    // Bytes already read past the last frame returned (see FrameDecoder::take_buffered).
    [[nodiscard]] std::vector<std::byte> take_buffered() { return decoder_.take_buffered(); }
    // The connection's TLS state (null without TLS): ciphertext it holds and not yet decrypted
    // goes with it.
    [[nodiscard]] bool is_tls() const noexcept { return tls_ != nullptr; }
    [[nodiscard]] std::unique_ptr<TlsSession> take_tls() noexcept { return std::move(tls_); }

    // The next whole, validated frame. A malformed frame, a peer that closes mid-frame or
    // resets is a Failure naming what happened (Errc::ProtocolViolation or Errc::PeerLost).
    [[nodiscard]] asio::awaitable<std::expected<Frame, Failure>> read_frame();
    // Writes all bytes. A peer that accepts nothing for liveness.stall_timeout is PeerLost
    // ("stopped reading"), and the connection is closed.
    [[nodiscard]] asio::awaitable<std::expected<void, Failure>> write(
        std::span<const std::byte> bytes);

  private:
    asio::awaitable<std::expected<void, Failure>> write_plain(std::span<const std::byte> bytes);

    Socket socket_;
    Joined joined_;
    FrameDecoder decoder_;
    LivenessOptions liveness_;
    std::unique_ptr<TlsSession> tls_;
    std::vector<std::byte> read_buffer_ = std::vector<std::byte>(64 * 1024);
};

// A connect that failed. reached: the attempt got somewhere and was then cut (ECONNABORTED,
// as when the socket is destroyed mid-connect, or ECONNRESET), so the address is right and
// trying again may work; not for a refusal (nothing listens) or an unreachable network.
struct ConnectFailure : Failure {
    bool reached = false;
};

// Connects to a tcp: or unix: endpoint and applies the liveness options.
[[nodiscard]] asio::awaitable<std::expected<Socket, ConnectFailure>> connect_to(
    const Endpoint& endpoint, const LivenessOptions& liveness);

// Runs the client side of the handshake within liveness.handshake_timeout: TLS first when tls is
// given, then the transport handshake inside it.
[[nodiscard]] asio::awaitable<std::expected<Connection, Failure>> client_handshake(
    Socket socket, ClientHandshakeConfig config, LivenessOptions liveness,
    std::shared_ptr<TlsContext> tls = nullptr);

// Closes the socket when the deadline passes. The handler may already be queued when the
// deadline is destroyed, so it reaches the socket only through state the destructor clears.
class Deadline {
  public:
    Deadline(Socket& socket, std::chrono::milliseconds after)
        : timer_(socket.get_executor()), state_(std::make_shared<State>(State{&socket, false})) {
        timer_.expires_after(after);
        timer_.async_wait([state = state_](const boost::system::error_code& ec) {
            if (!ec && state->socket != nullptr) {
                state->fired = true;
                boost::system::error_code ignored;
                state->socket->close(ignored);
            }
        });
    }
    Deadline(const Deadline&) = delete;
    Deadline& operator=(const Deadline&) = delete;
    ~Deadline() {
        state_->socket = nullptr;
        timer_.cancel();
    }
    [[nodiscard]] bool fired() const { return state_->fired; }

  private:
    struct State {
        Socket* socket;
        bool fired;
    };
    asio::steady_timer timer_;
    std::shared_ptr<State> state_;
};

// Reads frames into a decoder until one is complete (shared by both handshake sides), decrypting
// first when tls is given.
[[nodiscard]] asio::awaitable<std::expected<Frame, Failure>> read_frame_from(
    Socket& socket, FrameDecoder& decoder, std::span<std::byte> scratch, TlsSession* tls = nullptr);
// Writes all of bytes, encrypted when tls is given.
[[nodiscard]] asio::awaitable<std::expected<void, Failure>> write_all(
    Socket& socket, std::span<const std::byte> bytes, TlsSession* tls = nullptr);
// The TLS handshake over the socket (the caller bounds it with a Deadline).
[[nodiscard]] asio::awaitable<std::expected<void, Failure>> tls_handshake(Socket& socket,
                                                                          TlsSession& tls);

}  // namespace uffdm::transport
