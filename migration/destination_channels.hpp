// destination_channels.hpp — What one destination session's connections send, check and place.
#pragma once

#include <cstdint>
#include <deque>
#include <vector>

#include "migration/compression.hpp"
#include "migration/wire.hpp"
#include "transport/data_path.hpp"

namespace uffdm::migration {

class DestinationLink;

// The urgent connection: checks LAYOUT, sends START (or BITMAPs and RESUME), REQUESTs as faults
// queue them, places the answers, and DONE once every page is present. Urgent loop thread only.
class DestinationUrgentChannel final : public transport::ChannelHandler {
  public:
    // The session's side of protocol.md's "Destination state machine".
    enum class State : std::uint8_t {
        AwaitLayout,  // nothing sent; the source's LAYOUT comes first
        Starting,     // the layout matches; START (or BITMAP* then RESUME) goes next
        Serving,      // requests and the STREAM hold go out, answers come in
        DoneSent,     // every page present and DONE sent: nothing more from this side
    };

    // `accept`: START's encoding bits for this session (none before protocol version 3).
    DestinationUrgentChannel(DestinationLink& link, std::uint64_t generation, bool resuming,
                             std::uint32_t accept)
        : link_(link), generation_(generation), resuming_(resuming), accept_(accept) {}

    void on_frame(transport::ChannelId channel, const transport::FrameView& frame) override;
    std::optional<transport::OutgoingFrame> next_frame(transport::ChannelId channel) override;
    void on_closed(transport::ChannelId channel, const transport::Failure& why) override;

  private:
    void on_pages(transport::ChannelId channel, const transport::FrameView& frame);
    // ROUND_END, DISCARD and SWITCHOVER: a live source (precopy_receive.hpp).
    void on_precopy(transport::ChannelId channel, wire::MessageType type,
                    const transport::FrameView& frame);
    // START, or RESUME behind the present bitmaps (which go first, one frame at a time).
    std::optional<transport::OutgoingFrame> start_frame();
    // The present bitmaps, region by region, at most kMaxBitmapPages pages a frame. A page
    // placed after its word was copied is sent again by the source: a duplicate, never a loss.
    std::optional<transport::OutgoingFrame> next_bitmap();

    DestinationLink& link_;
    std::uint64_t generation_;
    bool resuming_;
    std::uint32_t accept_;
    RunExpander expander_;
    State state_ = State::AwaitLayout;
    std::uint32_t start_flags_ = 0;  // what START or RESUME told the source
    bool held_sent_ = false;         // what the source was last told of the background stream
    std::uint32_t bitmap_region_ = 0;
    std::uint64_t bitmap_page_ = 0;
    std::uint64_t bits_sent_ = 0;
    std::uint64_t round_pages_ = 0;  // streamed here since the last ROUND_END (no bulk)
    std::deque<std::vector<std::byte>> bitmaps_;  // kept until the handler goes: frames borrow
};

// A bulk connection: places the background stream, checks its STREAM_END. Bulk loop only.
class DestinationBulkChannel final : public transport::ChannelHandler {
  public:
    DestinationBulkChannel(DestinationLink& link, std::uint64_t generation, std::uint32_t accept)
        : link_(link), generation_(generation), accept_(accept) {}

    void on_frame(transport::ChannelId channel, const transport::FrameView& frame) override;
    void on_closed(transport::ChannelId channel, const transport::Failure& why) override;

  private:
    DestinationLink& link_;
    std::uint64_t generation_;
    std::uint32_t accept_;  // the encodings START or RESUME accepted
    RunExpander expander_;
    std::uint64_t pages_received_ = 0;  // what STREAM_END must count
    std::uint64_t round_pages_ = 0;     // what ROUND_END must count
    bool stream_ended_ = false;         // STREAM_END arrived: nothing more may
};

}  // namespace uffdm::migration
