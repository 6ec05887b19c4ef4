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

namespace uffdm::transport {

class Connection {
  public:
    Connection(Socket socket, Joined joined, FrameDecoder decoder, LivenessOptions liveness = {})
        : socket_(std::move(socket)),
          joined_(joined),
          decoder_(std::move(decoder)),
          liveness_(liveness) {}

    [[nodiscard]] const Joined& joined() const noexcept { return joined_; }
    [[nodiscard]] Socket& socket() noexcept { return socket_; }
    [[nodiscard]] const LivenessOptions& liveness() const noexcept { return liveness_; }
    // Bytes already read past the last frame returned (see FrameDecoder::take_buffered).
    [[nodiscard]] std::vector<std::byte> take_buffered() { return decoder_.take_buffered(); }

    // The next whole, validated frame. A malformed frame, a peer that closes mid-frame or
    // resets is a Failure naming what happened (Errc::ProtocolViolation or Errc::PeerLost).
    [[nodiscard]] asio::awaitable<std::expected<Frame, Failure>> read_frame();
    // Writes all bytes. A peer that accepts nothing for liveness.stall_timeout is PeerLost
    // ("stopped reading"), and the connection is closed.
    [[nodiscard]] asio::awaitable<std::expected<void, Failure>> write(
        std::span<const std::byte> bytes);

  private:
    Socket socket_;
    Joined joined_;
    FrameDecoder decoder_;
    LivenessOptions liveness_;
    std::vector<std::byte> read_buffer_ = std::vector<std::byte>(64 * 1024);
};

// Connects to a tcp: or unix: endpoint and applies the liveness options.
[[nodiscard]] asio::awaitable<std::expected<Socket, Failure>> connect_to(
    const Endpoint& endpoint, const LivenessOptions& liveness);

// Runs the client side of the handshake within liveness.handshake_timeout.
[[nodiscard]] asio::awaitable<std::expected<Connection, Failure>> client_handshake(
    Socket socket, ClientHandshakeConfig config, LivenessOptions liveness);

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

// Reads frames into a decoder until one is complete (shared by both handshake sides).
[[nodiscard]] asio::awaitable<std::expected<Frame, Failure>> read_frame_from(
    Socket& socket, FrameDecoder& decoder, std::span<std::byte> scratch);

}  // namespace uffdm::transport
