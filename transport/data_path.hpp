// data_path.hpp — Frames over joined connections on one event-loop thread, io_uring or Asio.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <expected>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include "transport/connection.hpp"
#include "transport/frame.hpp"

namespace uffdm::transport {

// Which machinery moves the bytes once a connection is joined. Set-up and the handshake always
// run on Asio; the data path is io_uring (liburing: batched gather sends, reads into rings
// registered as fixed buffers) where the kernel allows it, else Asio's reactor. Both present
// the same interface and behaviour.
enum class Backend : std::uint8_t { Invalid = 0, Auto, IoUring, Asio };

[[nodiscard]] std::string_view to_string(Backend backend) noexcept;

using ChannelId = std::uint32_t;

// A frame to send. The inline bytes (a descriptor) are copied when the frame is taken; the
// borrowed spans (page data, straight from guest memory) are read by the kernel while the frame
// is in flight and must stay valid and unchanged until on_sent(token) or on_closed.
struct OutgoingFrame {
    static constexpr std::size_t kMaxInline = 64;
    FrameType type = FrameType::Invalid;
    std::array<std::byte, kMaxInline> inline_bytes{};
    std::uint32_t inline_size = 0;
    std::array<std::span<const std::byte>, 2> borrowed{};
    std::uint64_t token = 0;

    [[nodiscard]] std::size_t payload_size() const noexcept {
        return inline_size + borrowed[0].size() + borrowed[1].size();
    }
    // Copies bytes into the inline part; false when they do not fit.
    bool set_inline(std::span<const std::byte> bytes) noexcept;
};

// A received application frame. The payload lies in the channel's receive ring and is valid only
// during on_frame, unless on_frame keeps it: then it stays valid, unwritten, until
// DataPath::release with the ticket keep() returned (from any thread), or until on_closed
// returns, whichever comes first. Kept frames hold their ring space: when the ring is full of
// them the channel stops reading and TCP pushes back on the sender.
struct FrameView {
    FrameType type = FrameType::Invalid;
    std::uint16_t version = 0;
    std::span<const std::byte> payload;
    bool* kept = nullptr;  // set by keep()
    std::uint64_t ticket = 0;

    // Only in on_frame. Every kept frame must be released once (or its channel end).
    [[nodiscard]] std::uint64_t keep() const noexcept {
        *kept = true;
        return ticket;
    }
};

// What the data path calls, always on its loop thread.
class ChannelHandler {
  public:
    virtual ~ChannelHandler() = default;
    // A whole, validated application frame (types 0x40..0x7f). Transport frames (PING, PONG,
    // GOODBYE, ERROR) are handled by the data path.
    virtual void on_frame(ChannelId channel, const FrameView& frame) = 0;
    // There is room in this channel's send window: the next frame to send, or nothing (then call
    // DataPath::want_send when there is). Frames go out in the order they are returned.
    virtual std::optional<OutgoingFrame> next_frame(ChannelId /*channel*/) { return std::nullopt; }
    // The frame with this token has been handed whole to the kernel; its borrowed memory is free.
    virtual void on_sent(ChannelId /*channel*/, std::uint64_t /*token*/) {}
    // The channel is over; nothing of this handler is used afterwards. why.code is empty for an
    // orderly end (GOODBYE either way); otherwise Errc::PeerLost (closed, reset, silent, stopped
    // reading), Errc::ProtocolViolation (a bad frame; nothing past it was used) or Errc::Closed
    // (the data path stopped).
    virtual void on_closed(ChannelId channel, const Failure& why) = 0;
};

struct DataPathOptions {
    Backend backend = Backend::Auto;
    // Per channel: received frames wait here until on_frame has used them. At least one whole
    // frame of max_payload. A full ring stops reading, and TCP pushes back on the sender.
    std::size_t receive_ring_bytes = 4U << 20;
    std::uint32_t max_payload = kMaxPayload;
    // Per channel: frames taken from next_frame and not yet sent; then one gather write carries
    // up to send_batch_bytes (at least one frame).
    std::size_t send_window_frames = 16;
    std::size_t send_batch_bytes = 1U << 20;
    // idle_timeout, heartbeat_interval, stall_timeout (the rest applies to the socket earlier).
    LivenessOptions liveness;
    // io_uring only: register the receive rings as fixed buffers (falls back to plain reads
    // when the kernel or RLIMIT_MEMLOCK refuses).
    bool register_buffers = true;
    std::size_t uring_entries = 256;
};

struct DataPathStats {
    std::uint64_t frames_sent = 0;
    std::uint64_t frames_received = 0;
    std::uint64_t bytes_sent = 0;
    std::uint64_t bytes_received = 0;
    std::uint64_t send_calls = 0;     // gather writes (sendmsg / write_some) issued
    std::uint64_t receive_calls = 0;  // reads issued
    std::uint64_t pings_sent = 0;
    std::uint64_t fixed_buffer_channels = 0;  // channels whose ring is an io_uring fixed buffer
};

class DataPath {
  public:
    // Backend::Auto picks io_uring when a ring can be set up and supports the operations used,
    // else Asio. Backend::IoUring fails when it cannot be used. UFFDM_DATA_PATH=asio in the
    // environment forces Asio for Auto (operators and tests use it to compare).
    [[nodiscard]] static std::expected<std::unique_ptr<DataPath>, Failure> create(
        DataPathOptions options = {});

    DataPath() = default;
    DataPath(const DataPath&) = delete;
    DataPath& operator=(const DataPath&) = delete;
    virtual ~DataPath() = default;

    [[nodiscard]] virtual Backend backend() const noexcept = 0;
    // The backend and how it runs, e.g. "io_uring (fixed buffers)".
    [[nodiscard]] virtual std::string describe() const = 0;

    // Thread-safe. The connection's socket (and any bytes read past its handshake) moves into the
    // data path; the handler must stay alive until its on_closed.
    [[nodiscard]] virtual ChannelId add(Connection connection, ChannelHandler& handler) = 0;
    // Thread-safe: call next_frame for this channel when its window has room.
    virtual void want_send(ChannelId channel) = 0;
    // Thread-safe: stop asking for frames, send the frames already taken, then GOODBYE, and close
    // once the peer has closed too (bounded by the stall timeout). on_closed follows.
    virtual void close(ChannelId channel) = 0;
    // Thread-safe: ends the channel now and tells the peer why in an ERROR frame (best effort):
    // for a peer whose frames are well formed but wrong for the layer above. on_closed follows
    // with this failure.
    virtual void abort(ChannelId channel, Failure why) = 0;
    // Thread-safe: the kept frame's ring space (FrameView::keep) may be written again. A
    // channel that has ended ignores it.
    virtual void release(ChannelId channel, std::uint64_t ticket) = 0;
    // Thread-safe: runs task on the loop thread.
    virtual void post(std::function<void()> task) = 0;
    // The loop. Returns after stop(), once every channel has had its on_closed.
    virtual void run() = 0;
    // Thread-safe: ends every channel (on_closed with Errc::Closed) and makes run() return.
    virtual void stop() = 0;
    // Thread-safe.
    [[nodiscard]] virtual DataPathStats stats() const = 0;
};

}  // namespace uffdm::transport
