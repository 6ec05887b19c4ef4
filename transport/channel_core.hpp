// channel_core.hpp — One data channel's protocol state, shared by the io_uring and Asio backends.
#pragma once

#include <sys/uio.h>

#include <chrono>
#include <deque>
#include <optional>
#include <vector>

#include "transport/data_path.hpp"
#include "transport/mirror_ring.hpp"
#include "transport/tls.hpp"

namespace uffdm::transport {

using Clock = std::chrono::steady_clock;

// How often a backend's loop checks every channel's heartbeat and idle and stall deadlines.
inline constexpr auto kLivenessTick = std::chrono::milliseconds(100);

// Everything about a channel except how bytes move: cutting received bytes into frames in the
// ring, answering PING, ending on GOODBYE/ERROR/bad frames, the send window and its gather
// list, heartbeat and idle/stall deadlines. A backend reads into receive_space(), writes
// send_iovecs(), and reports what the kernel did. With TLS the bytes it hands out and takes in are
// ciphertext: received records are decrypted into the ring, and each send batch is encrypted
// (its frames count as sent once OpenSSL has copied them).
class ChannelCore {
  public:
    enum class State : std::uint8_t {
        Open,      // frames both ways
        Flushing,  // close() asked: send what is taken, then GOODBYE
        Draining,  // GOODBYE sent and write side shut: read until the peer closes
        Done,      // ended; why() says how
    };

    ChannelCore(ChannelId id, ChannelHandler& handler, MirrorRing ring,
                const DataPathOptions& options, Clock::time_point now,
                std::unique_ptr<TlsSession> tls = nullptr);

    [[nodiscard]] ChannelId id() const noexcept { return id_; }
    // The version the handshake agreed on, stamped on every frame sent (0: the newest, for
    // a connection made without a handshake).
    void set_version(std::uint16_t version) noexcept {
        version_ = version == 0 ? kMaxVersion : version;
    }
    [[nodiscard]] ChannelHandler& handler() const noexcept { return handler_; }
    [[nodiscard]] State state() const noexcept { return state_; }
    [[nodiscard]] bool done() const noexcept { return state_ == State::Done; }
    [[nodiscard]] const Failure& why() const noexcept { return why_; }
    [[nodiscard]] const MirrorRing& ring() const noexcept { return ring_; }
    // Reads land in the ring itself (false with TLS: they land in a ciphertext buffer).
    [[nodiscard]] bool reads_into_ring() const noexcept { return tls_ == nullptr; }

    // ---- receiving
    // Where to read next. Empty while the ring is full of kept frames (reading waits for a
    // release; with TLS too, so that ciphertext does not pile up either).
    [[nodiscard]] std::span<std::byte> receive_space() noexcept {
        if (ring_.free_space().empty()) {
            return {};
        }
        return tls_ ? std::span<std::byte>(cipher_in_) : ring_.free_space();
    }
    // A kept frame's space may be written again (DataPath::release, on the loop thread); frames
    // the ring could not take meanwhile (a handshake's leftovers, TLS plaintext) go in now.
    void release(std::uint64_t ticket);
    // Bytes received before the data path took over (read during the handshake).
    void preload(std::span<const std::byte> bytes, Clock::time_point now);
    // n > 0 bytes arrived in receive_space(): hands every whole frame to the handler.
    void on_received(std::size_t n, Clock::time_point now);
    // The read ended: 0 bytes (the peer closed) or an error.
    void on_receive_error(int err);

    // ---- sending
    // The next gather write: pulls frames from the handler while the window has room (not after
    // close()), adds heartbeats, GOODBYE when flushing is complete. Empty: nothing to send.
    [[nodiscard]] std::span<const iovec> send_iovecs();
    // The last write from send_iovecs() moved n bytes (n may be short).
    void on_sent(std::size_t n, Clock::time_point now);
    void on_send_error(int err);
    // A write is in flight since this time (for the stall deadline).
    void send_started(Clock::time_point now) noexcept;

    // ---- ending and time
    void request_close() noexcept;
    // Ends the channel now with this reason (first reason wins).
    void fail(Failure why) noexcept;
    // The same, and leaves an ERROR frame with the reason, which finish() sends the peer.
    void abort(Failure why);
    // Checks heartbeat, idle and stall deadlines; may end the channel or queue a PING.
    void on_tick(Clock::time_point now, bool send_in_flight);
    // After GOODBYE has been written completely the backend shuts the write side.
    [[nodiscard]] bool wants_shutdown_write() const noexcept {
        return state_ == State::Draining && !write_shut_ && (!tls_ || tls_->output().empty());
    }
    void write_shut() noexcept { write_shut_ = true; }
    // The channel is over and nothing is in flight: tells the peer why when this side ended it
    // (a best-effort ERROR frame on fd, never blocking), adds its counters to retired, and calls
    // the handler's on_closed, the last call it gets. The backend closes fd afterwards.
    void finish(int fd, DataPathStats& retired);

    [[nodiscard]] DataPathStats& stats() noexcept { return stats_; }

  private:
    struct Slot {
        std::array<std::byte, kHeaderSize + OutgoingFrame::kMaxInline> head{};
        std::size_t head_size = 0;
        std::array<std::span<const std::byte>, 2> borrowed{};
        std::uint64_t token = 0;
        bool from_handler = false;
        std::size_t total = 0;
    };

    void deliver_frames();
    // Frees the ring space of every frame from the oldest up to the first still kept.
    void release_ring();
    void take_backlog();
    void decrypt_into_ring();
    void account_sent(std::size_t plaintext_bytes);
    std::span<const iovec> encrypt_batch();
    void handle_transport_frame(const FrameHeader& header, std::span<const std::byte> payload);
    void push_control(FrameType type, std::span<const std::byte> payload);
    bool push(const OutgoingFrame& frame, bool from_handler);
    void pull_from_handler();
    void protocol_violation(std::string detail);

    ChannelId id_;
    std::uint16_t version_ = kMaxVersion;
    ChannelHandler& handler_;
    MirrorRing ring_;
    const DataPathOptions& options_;
    State state_ = State::Open;
    Failure why_;
    bool goodbye_queued_ = false;
    bool write_shut_ = false;

    // Send window: slots_ is a queue (front = oldest), offset_ bytes of the front are written.
    std::vector<Slot> slots_;
    std::size_t front_ = 0;
    std::size_t count_ = 0;
    std::size_t offset_ = 0;
    std::size_t handler_frames_ = 0;
    std::vector<iovec> iovecs_;

    Clock::time_point last_received_;
    Clock::time_point last_sent_;
    Clock::time_point send_since_;
    std::uint64_t ping_token_ = 0;
    std::vector<std::byte> farewell_;
    DataPathStats stats_;

    // Frames parsed since the oldest one still kept, oldest first: where each ends in the ring
    // and whether it is still kept (empty when none is). kept_base_ is the ticket of the front.
    struct Kept {
        std::uint64_t end = 0;
        bool kept = false;
    };
    std::deque<Kept> kept_;
    std::uint64_t kept_base_ = 0;
    std::vector<std::byte> backlog_;  // preloaded bytes the ring had no room for yet

    std::unique_ptr<TlsSession> tls_;
    std::vector<std::byte> cipher_in_;    // TLS: where reads land
    std::vector<std::byte> plain_batch_;  // TLS: a batch gathered for one SSL_write
    iovec cipher_out_{};
};

}  // namespace uffdm::transport
