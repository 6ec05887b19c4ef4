// destination_channels.cpp — The destination's urgent and bulk connections, frame by frame.
#include "migration/destination_channels.hpp"

#include <bit>

#include "migration/data_paths.hpp"
#include "migration/destination_link.hpp"

namespace uffdm::migration {

using transport::ChannelId;
using transport::FrameView;
using transport::OutgoingFrame;
using transport::violation;

namespace {

constexpr std::uint64_t kDoneToken = 1;

}  // namespace

void DestinationUrgentChannel::on_frame(ChannelId channel, const FrameView& frame) {
    if (link_.failed()) {
        return;  // refused already: nothing more from this source is used, until the abort
    }
    auto type = static_cast<wire::MessageType>(frame.type);
    if (type == wire::MessageType::Layout) {
        auto layout = wire::decode_layout(frame.payload);
        if (state_ != State::AwaitLayout || !layout) {
            return link_.refuse_urgent(channel,
                                       violation(layout ? "LAYOUT twice" : layout.error().detail));
        }
        if (*layout != link_.layout()) {
            return link_.refuse_urgent(
                channel,
                transport::failure(Errc::InvalidArgument,
                                   "guest layouts differ: the source has " + layout->describe() +
                                       "; this destination has " + link_.layout().describe()));
        }
        if (auto refusal = link_.precopy().on_layout(*layout); !refusal.empty()) {
            return link_.refuse_urgent(channel, violation(refusal));
        }
        state_ = State::Starting;
        return;
    }
    if (type == wire::MessageType::Pages && state_ != State::AwaitLayout) {
        return on_pages(channel, frame);
    }
    if ((type == wire::MessageType::RoundEnd || type == wire::MessageType::Discard ||
         type == wire::MessageType::Switchover) &&
        state_ != State::AwaitLayout) {
        return on_precopy(channel, type, frame);
    }
    link_.refuse_urgent(channel, violation("the source sent " + wire::to_string(type) +
                                           (state_ == State::AwaitLayout ? " before LAYOUT" : "") +
                                           " on the urgent connection"));
}

void DestinationUrgentChannel::on_pages(ChannelId channel, const FrameView& frame) {
    if (state_ == State::Starting) {
        return link_.refuse_urgent(channel, violation(std::string("the source sent PAGES before ") +
                                                      (resuming_ ? "RESUME" : "START")));
    }
    auto run = expander_.read(frame.payload, link_.layout(), accept_);
    if (!run) {
        return link_.refuse_urgent(channel, run.error());
    }
    bool answer = (run->header.flags & wire::PagesHeader::kAnswer) != 0;
    if (!answer && (start_flags_ & wire::Start::kStreamOnUrgent) == 0) {
        return link_.refuse_urgent(channel, violation("the source streamed pages on the urgent "
                                                      "connection while bulk connections carry the "
                                                      "stream"));
    }
    if (answer) {
        if (auto unasked = link_.requests().first_unrequested(*run)) {
            return link_.refuse_urgent(
                channel, violation("the source answered a REQUEST never made: region " +
                                   std::to_string(run->header.region) + " page " +
                                   std::to_string(*unasked)));
        }
    }
    if (!answer) {
        if (auto refusal = link_.precopy().may_stream(); !refusal.empty()) {
            return link_.refuse_urgent(channel, violation(refusal));
        }
        round_pages_ += run->header.count;
        link_.precopy().on_stream_pages(generation_, run->header.count);
    }
    // Without bulk connections the stream shares this connection: only answers count as urgent.
    if (auto placed = link_.placer().place(*run, answer ? Path::Urgent : Path::Background);
        !placed) {
        return link_.refuse_urgent(channel, placed.error());
    }
    link_.progressed(generation_);
}

void DestinationUrgentChannel::on_precopy(ChannelId channel, wire::MessageType type,
                                          const FrameView& frame) {
    if (state_ == State::Starting) {
        return link_.refuse_urgent(
            channel, violation("the source sent " + wire::to_string(type) + " before " +
                               (resuming_ ? "RESUME" : "START")));
    }
    PrecopyReceiver& precopy = link_.precopy();
    std::string refusal;
    if (type == wire::MessageType::RoundEnd) {
        if ((start_flags_ & wire::Start::kStreamOnUrgent) == 0) {
            return link_.refuse_urgent(
                channel, violation("ROUND_END on the urgent connection while bulk connections "
                                   "carry the stream"));
        }
        auto end = wire::decode_round_end(frame.payload);
        if (!end) {
            return link_.refuse_urgent(channel, end.error());
        }
        refusal = precopy.on_round_end(generation_, *end, round_pages_);
        round_pages_ = 0;
    } else if (type == wire::MessageType::Discard) {
        auto chunk = wire::decode_discard(frame.payload, link_.layout());
        if (!chunk) {
            return link_.refuse_urgent(channel, chunk.error());
        }
        refusal = precopy.on_discard(*chunk);
    } else {
        auto switchover = wire::decode_switchover(frame.payload);
        if (!switchover) {
            return link_.refuse_urgent(channel, switchover.error());
        }
        refusal = precopy.on_switchover(generation_, *switchover);
    }
    if (!refusal.empty()) {
        return link_.refuse_urgent(channel, violation(refusal));
    }
    // The source is back and serving, even when no page is left to send (a pause ends).
    link_.progressed(generation_);
    link_.request_queued();  // a ROUND_DONE or RUNNING to send
}

std::optional<OutgoingFrame> DestinationUrgentChannel::next_frame(ChannelId) {
    if (state_ == State::AwaitLayout || state_ == State::DoneSent || link_.failed()) {
        return std::nullopt;  // (failed: not even START, while the abort is on its way)
    }
    if (state_ == State::Starting) {
        return start_frame();
    }
    if (auto done = link_.precopy().next_round_done(link_.placer().present_pages())) {
        return message_frame(wire::MessageType::RoundDone, wire::encode(*done));
    }
    if (auto running = link_.precopy().next_running(generation_)) {
        return message_frame(wire::MessageType::Running, wire::encode(*running));
    }
    if (link_.complete()) {
        state_ = State::DoneSent;
        return message_frame(wire::MessageType::Done,
                             wire::encode(wire::Done{link_.placer().present_pages()}), kDoneToken);
    }
    if (bool held = link_.stream_held(); held != held_sent_) {
        held_sent_ = held;
        return message_frame(wire::MessageType::Stream,
                             wire::encode(wire::Stream{held ? wire::Stream::kHold : 0U}));
    }
    auto request = link_.requests().next();
    if (!request) {
        return std::nullopt;
    }
    return message_frame(wire::MessageType::Request, wire::encode(*request));
}

std::optional<OutgoingFrame> DestinationUrgentChannel::start_frame() {
    if (resuming_) {
        if (auto chunk = next_bitmap()) {
            return chunk;
        }
    }
    state_ = State::Serving;
    held_sent_ = link_.stream_held();
    start_flags_ = link_.start_flags() | accept_;
    link_.session_started(generation_);
    if (!resuming_) {
        return message_frame(wire::MessageType::Start, wire::encode(wire::Start{start_flags_}));
    }
    // Every page still wanted is asked for again, behind the RESUME.
    link_.resumed(generation_);
    return message_frame(wire::MessageType::Resume,
                         wire::encode(wire::Resume{.flags = start_flags_,
                                                   .phase = link_.precopy().resume_phase(),
                                                   .pages_present = bits_sent_}));
}

std::optional<OutgoingFrame> DestinationUrgentChannel::next_bitmap() {
    const auto& regions = link_.layout().regions;
    while (bitmap_region_ < regions.size()) {
        const PageBitmap& present = link_.placer().present(bitmap_region_);
        std::uint64_t pages = regions[bitmap_region_].pages();
        if (bitmap_page_ >= pages) {
            ++bitmap_region_;
            bitmap_page_ = 0;
            continue;
        }
        wire::BitmapChunk chunk{.region = bitmap_region_,
                                .first_page = bitmap_page_,
                                .count = std::min(wire::kMaxBitmapPages, pages - bitmap_page_),
                                .words = {}};
        for (std::uint64_t w = 0; w < (chunk.count + 63) / 64; ++w) {
            std::uint64_t bits = present.word(bitmap_page_ / 64 + w);
            chunk.words.push_back(bits);
            bits_sent_ += static_cast<std::uint64_t>(std::popcount(bits));
        }
        bitmap_page_ += chunk.count;
        const std::vector<std::byte>& bytes = bitmaps_.emplace_back(wire::encode(chunk));
        OutgoingFrame frame{.type = wire::frame_type(wire::MessageType::Bitmap)};
        frame.borrowed[0] = bytes;
        return frame;
    }
    return std::nullopt;
}

void DestinationUrgentChannel::on_closed(ChannelId, const transport::Failure& why) {
    // After completion too: this connection carries DONE, and how it ends says whether the
    // source has it (an orderly close) or a new session must deliver it (a break).
    link_.lost(generation_,
               transport::Failure{why.code, "the urgent connection: " + describe_end(why)});
    link_.channel_closed();
}

void DestinationBulkChannel::on_frame(ChannelId channel, const FrameView& frame) {
    if (link_.failed()) {
        return;  // refused already: nothing more from this source is used, until the abort
    }
    auto type = static_cast<wire::MessageType>(frame.type);
    // The source streams only once it has this session's START or RESUME (a later session
    // having started means this one did too: its late frames are still honest).
    bool running = link_.session_running(generation_);
    bool known = type == wire::MessageType::Pages || type == wire::MessageType::StreamEnd ||
                 type == wire::MessageType::RoundEnd;
    // A live source's late copy from a session that broke may be older than one sent since:
    // dropped (the source sends again what the new session's bitmap lacks).
    if (type == wire::MessageType::Pages && link_.precopy().live() &&
        generation_ != link_.generation()) {
        return;
    }
    if (known && running && stream_ended_) {
        return link_.refuse_bulk(channel, violation("the source sent " + wire::to_string(type) +
                                                    " after the STREAM_END of that bulk "
                                                    "connection"));
    }
    if (type == wire::MessageType::Pages && running) {
        auto run = wire::decode_pages(frame.payload, link_.layout(), accept_);
        if (!run) {
            return link_.refuse_bulk(channel, run.error());
        }
        if ((run->header.flags & wire::PagesHeader::kAnswer) != 0) {
            return link_.refuse_bulk(channel,
                                     violation("the source sent an answer to a REQUEST on a "
                                               "bulk connection (answers go on the urgent one)"));
        }
        if (auto refusal = link_.precopy().may_stream(); !refusal.empty()) {
            return link_.refuse_bulk(channel, violation(refusal));
        }
        pages_received_ += run->header.count;
        round_pages_ += run->header.count;
        PlacementPipeline& pipeline = link_.placement();
        if (link_.precopy().live() || !pipeline.threaded()) {
            // Placed here, before the next frame. Always for a live source's rounds: in order,
            // so that a newer copy is never overtaken by an older one still waiting to be placed.
            auto expanded = expander_.expand(*run, link_.layout());
            if (!expanded) {
                return link_.refuse_bulk(channel, expanded.error());
            }
            if (auto placed = link_.placer().place(*expanded, Path::Background); !placed) {
                return link_.refuse_bulk(channel, placed.error());
            }
            link_.precopy().on_stream_pages(generation_, run->header.count);
            link_.progressed(generation_);
            return;
        }
        // Expanded and placed by a placement thread, straight from the ring, while this loop
        // receives the next runs.
        pipeline.submit(
            channel, *run,
            [link = &link_, channel, ticket = frame.keep()] {
                link->release_bulk(channel, ticket);
            },
            [link = &link_, channel, generation = generation_](
                const std::expected<void, transport::Failure>& placed, std::uint64_t pages) {
                if (!placed) {
                    return link->refuse_bulk(channel, placed.error());
                }
                link->precopy().on_stream_pages(generation, pages);
                link->progressed(generation);
            });
        return;
    }
    if (type == wire::MessageType::RoundEnd && running) {
        // Only a live source sends rounds, and their runs were placed by this loop: all in.
        auto end = wire::decode_round_end(frame.payload);
        if (!end) {
            return link_.refuse_bulk(channel, end.error());
        }
        if (auto refusal = link_.precopy().on_round_end(generation_, *end, round_pages_);
            !refusal.empty()) {
            return link_.refuse_bulk(channel, violation(refusal));
        }
        round_pages_ = 0;
        link_.progressed(generation_);
        link_.request_queued();  // ROUND_DONE, if this was the last connection to end it
        return;
    }
    if (type == wire::MessageType::StreamEnd && running) {
        // The runs before it are counted placed only once they are.
        if (!link_.placement().drain()) {
            return;  // stopped: the migration is over
        }
        auto end = wire::decode_stream_end(frame.payload);
        if (!end) {
            return link_.refuse_bulk(channel, end.error());
        }
        if (end->pages_sent != pages_received_) {
            return link_.refuse_bulk(
                channel, violation("STREAM_END says " + std::to_string(end->pages_sent) +
                                   " pages were streamed on this bulk connection; " +
                                   std::to_string(pages_received_) + " arrived"));
        }
        stream_ended_ = true;
        link_.stream_ended(generation_);
        return;
    }
    link_.refuse_bulk(
        channel, violation("the source sent " + wire::to_string(type) +
                           (running || !known ? "" : " before this session's START or RESUME") +
                           " on a bulk connection"));
}

void DestinationBulkChannel::on_closed(ChannelId channel, const transport::Failure& why) {
    // The ring goes with the channel: no placement thread may still read a run kept in it.
    link_.forget_placements(channel);
    if (!link_.complete()) {
        link_.lost(generation_,
                   transport::Failure{why.code, "a bulk connection: " + describe_end(why)});
    }
    link_.channel_closed();
}

}  // namespace uffdm::migration
