// source_channels.hpp — What one source session's connections check, answer and stream.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <optional>
#include <vector>

#include "migration/page_bitmap.hpp"
#include "migration/source_pages.hpp"
#include "migration/wire.hpp"
#include "transport/data_path.hpp"

namespace uffdm::migration {

class SourceLink;

// A streaming connection's part of a live source's rounds: the pages it carried in the round,
// and ROUND_END once it has nothing more for that round.
struct RoundCounter {
    std::optional<std::uint32_t> ended;  // the last round this connection ended
    std::uint64_t pages = 0;             // in the current round
    // The ROUND_END to send when the stream has no page left, or none (a source that is not
    // live, or this round ended here already).
    std::optional<transport::OutgoingFrame> end_of_round(const SourceLink& link);
};

// The urgent connection: LAYOUT first, then START (or BITMAP* and RESUME), then every REQUEST
// answered at once. Urgent loop thread only.
class SourceUrgentChannel final : public transport::ChannelHandler {
  public:
    // The session's side of protocol.md's "Source state machine".
    enum class State : std::uint8_t {
        AwaitStart,  // LAYOUT sent; BITMAPs may come, then START or RESUME
        Serving,
        Finished,  // DONE received
    };

    SourceUrgentChannel(SourceLink& link, std::size_t window, std::uint64_t session);

    void on_frame(transport::ChannelId channel, const transport::FrameView& frame) override;
    std::optional<transport::OutgoingFrame> next_frame(transport::ChannelId channel) override;
    void on_closed(transport::ChannelId channel, const transport::Failure& why) override;

  private:
    void on_bitmap(transport::ChannelId channel, const transport::FrameView& frame);
    void on_resume(transport::ChannelId channel, const transport::FrameView& frame);
    // ROUND_DONE and RUNNING: a live source's precopy (precopy_source.hpp).
    void on_precopy(transport::ChannelId channel, wire::MessageType type,
                    const transport::FrameView& frame);
    // With no bulk connections the stream fills what the answers leave of this connection:
    // an answer then waits behind the stream frames already in the send window.
    std::optional<transport::OutgoingFrame> stream_frame();
    void violation(transport::ChannelId channel, const std::string& detail);

    SourceLink& link_;
    FrameBuilder builder_;
    std::uint64_t session_;
    State state_ = State::AwaitStart;
    bool layout_sent_ = false;
    std::deque<wire::Request> answers_;
    std::vector<PageBitmap> received_;  // BITMAPs of a resuming destination, per region
    RoundCounter rounds_;               // with no bulk connections, this one streams
};

// How much of the stream a bulk connection has chosen and not yet handed to its socket: about
// 4 ms of what the socket has been taking (at least 512 KiB, at most the send window), so that
// a request that moves the stream's cursor acts within milliseconds on a slow link too, not
// after a whole window of frames chosen before it (4 MiB: 33 ms at 1 Gbit/s).
class StreamBacklog {
  public:
    using Clock = std::chrono::steady_clock;
    explicit StreamBacklog(std::uint64_t most) : most_(most) {}
    [[nodiscard]] bool full() const noexcept { return bytes_ >= budget(); }
    void queued(std::uint64_t bytes) {
        sizes_.push_back(bytes);
        bytes_ += bytes;
    }
    // A frame was taken by the socket (frames go in order). True when the backlog just made
    // room after being full.
    bool taken(Clock::time_point now);
    [[nodiscard]] std::uint64_t budget() const noexcept;

  private:
    std::uint64_t most_;
    std::deque<std::uint64_t> sizes_;
    std::uint64_t bytes_ = 0;
    double rate_ = 0;  // bytes per second the socket took, moving average over 50 ms spans
    Clock::time_point span_start_{};
    std::uint64_t span_bytes_ = 0;
};

// One bulk connection: pulls runs from the shared stream while the window and the backlog
// have room.
class SourceBulkChannel final : public transport::ChannelHandler {
  public:
    SourceBulkChannel(SourceLink& link, std::size_t window, std::uint64_t session);

    void on_frame(transport::ChannelId channel, const transport::FrameView& frame) override;
    std::optional<transport::OutgoingFrame> next_frame(transport::ChannelId channel) override;
    void on_sent(transport::ChannelId channel, std::uint64_t token) override;
    void on_closed(transport::ChannelId channel, const transport::Failure& why) override;

  private:
    // Frames compressed together with the pool's helpers, made ahead of the send window: at
    // most this many, and batches of about this many guest bytes (the wake-ups amortised over
    // small runs; a request's new stream order waits at most one batch).
    static constexpr std::size_t kBatchFrames = 256;
    static constexpr std::uint64_t kBatchBytes = 1U << 20;

    std::optional<transport::OutgoingFrame> choose_frame();
    // The stream's next frame, and when it is compressed and a pool helps, a batch of them
    // behind it in made_.
    std::optional<transport::OutgoingFrame> stream_frame(const PageRun& run);

    StreamBacklog backlog_;
    SourceLink& link_;
    FrameBuilder builder_;
    std::uint64_t session_;
    std::uint64_t sent_ = 0;
    bool ended_ = false;
    RoundCounter rounds_;
    std::deque<transport::OutgoingFrame> made_;  // compressed in a batch, not yet handed out
    std::vector<FrameBuilder::Pending> batch_;
};

}  // namespace uffdm::migration
