// source_channels.cpp — The source's urgent and bulk connections, frame by frame.
#include "migration/source_channels.hpp"

#include <algorithm>

#include "migration/data_paths.hpp"
#include "migration/source_link.hpp"

namespace uffdm::migration {

using transport::ChannelId;
using transport::FrameView;
using transport::OutgoingFrame;

namespace {

// A live source between rounds, pausing, or switching over: nothing streams.
bool stream_waits(const SourceLink& link) {
    return link.precopy() != nullptr && link.precopy()->stream_waits();
}

// The guest may write a page while its frame waits in the send window.
bool guest_running(const SourceLink& link) {
    return link.precopy() != nullptr && link.precopy()->guest_running();
}

}  // namespace

SourceUrgentChannel::SourceUrgentChannel(SourceLink& link, std::size_t window,
                                         std::uint64_t session)
    : link_(link), builder_(link.pages().memory(), window, link.compression()), session_(session) {}

void SourceUrgentChannel::on_frame(ChannelId channel, const FrameView& frame) {
    auto type = static_cast<wire::MessageType>(frame.type);
    const wire::Layout& layout = link_.pages().memory().layout();
    switch (type) {
        case wire::MessageType::Start: {
            auto start = wire::decode_start(frame.payload);
            if (state_ != State::AwaitStart || !start) {
                return violation(channel, start ? "START twice" : start.error().detail);
            }
            if (!received_.empty()) {
                return violation(channel,
                                 "START after BITMAP (a resuming destination sends RESUME)");
            }
            if (PrecopySource* precopy = link_.precopy()) {
                if (auto refusal = precopy->on_start(session_); !refusal.empty()) {
                    return violation(channel, refusal);
                }
            }
            state_ = State::Serving;
            link_.pages().start_fresh();
            link_.started(start->flags, session_);
            return;
        }
        case wire::MessageType::RoundDone:
        case wire::MessageType::Running:
            return on_precopy(channel, type, frame);
        case wire::MessageType::Bitmap:
            return on_bitmap(channel, frame);
        case wire::MessageType::Resume:
            return on_resume(channel, frame);
        case wire::MessageType::Stream: {
            auto stream = wire::decode_stream(frame.payload);
            if (state_ != State::Serving || !stream) {
                return violation(channel, stream ? "STREAM before START" : stream.error().detail);
            }
            link_.hold_stream((stream->flags & wire::Stream::kHold) != 0);
            return;
        }
        case wire::MessageType::Request: {
            auto request = wire::decode_request(frame.payload, layout);
            if (state_ != State::Serving || !request) {
                return violation(channel,
                                 request ? "REQUEST before START" : request.error().detail);
            }
            link_.pages().note_request(request->region, request->first_page + request->count);
            answers_.push_back(*request);
            return;
        }
        case wire::MessageType::Done: {
            auto done = wire::decode_done(frame.payload);
            if (state_ != State::Serving || !done) {
                return violation(channel, done ? "DONE before START" : done.error().detail);
            }
            if (PrecopySource* precopy = link_.precopy();
                precopy != nullptr && precopy->phase() != PrecopySource::Phase::Postcopy) {
                return violation(channel, "DONE before the destination's guest ran (no RUNNING)");
            }
            if (done->pages_present != layout.total_pages()) {
                // A destination says DONE only with every page: this one lies or is broken.
                return violation(channel, "DONE says " + std::to_string(done->pages_present) +
                                              " pages are present; the guest has " +
                                              std::to_string(layout.total_pages()));
            }
            state_ = State::Finished;
            link_.finished();
            return;
        }
        default:
            return violation(channel, "the destination sent " + wire::to_string(type));
    }
}

void SourceUrgentChannel::on_bitmap(ChannelId channel, const FrameView& frame) {
    const wire::Layout& layout = link_.pages().memory().layout();
    auto chunk = wire::decode_bitmap(frame.payload, layout);
    if (state_ != State::AwaitStart || !chunk) {
        return violation(channel, chunk ? "BITMAP after START or RESUME" : chunk.error().detail);
    }
    if (received_.empty()) {
        for (const auto& region : layout.regions) {
            received_.emplace_back(region.pages());
        }
    }
    PageBitmap& bits = received_[chunk->region];
    for (std::size_t i = 0; i < chunk->words.size(); ++i) {
        std::size_t word = chunk->first_page / 64 + i;
        bits.assign_word(word, bits.word(word) | chunk->words[i]);
    }
}

void SourceUrgentChannel::on_resume(ChannelId channel, const FrameView& frame) {
    auto resume = wire::decode_resume(frame.payload);
    if (state_ != State::AwaitStart || !resume) {
        return violation(channel, resume ? "RESUME after START or RESUME" : resume.error().detail);
    }
    std::uint64_t present = 0;
    for (const PageBitmap& bits : received_) {
        present += bits.count();
    }
    if (present != resume->pages_present) {
        return violation(channel, "RESUME says " + std::to_string(resume->pages_present) +
                                      " pages are present but its BITMAPs hold " +
                                      std::to_string(present));
    }
    if (auto claim = link_.pages().unsent_claim(received_); !claim.empty()) {
        return violation(channel, claim);
    }
    if (PrecopySource* precopy = link_.precopy()) {
        if (auto refusal = precopy->on_resume(session_, resume->phase, received_);
            !refusal.empty()) {
            return violation(channel, refusal);
        }
    } else if (resume->phase != 0) {
        return violation(channel, "RESUME phase " + std::to_string(resume->phase) +
                                      " from a destination of a source that is not live");
    } else {
        link_.pages().resume_from(received_);
    }
    state_ = State::Serving;
    link_.started(resume->flags, session_);
    if (link_.precopy() != nullptr) {
        link_.wake_urgent();  // DISCARD* and SWITCHOVER again, if the switchover was under way
    }
}

void SourceUrgentChannel::on_precopy(ChannelId channel, wire::MessageType type,
                                     const FrameView& frame) {
    PrecopySource* precopy = link_.precopy();
    if (precopy == nullptr || state_ != State::Serving) {
        return violation(
            channel, wire::to_string(type) + (precopy == nullptr ? " to a source that is not live"
                                                                 : " before START or RESUME"));
    }
    std::string refusal;
    if (type == wire::MessageType::RoundDone) {
        auto done = wire::decode_round_done(frame.payload);
        if (!done) {
            return violation(channel, done.error().detail);
        }
        refusal = precopy->on_round_done(session_, *done);
    } else {
        auto running = wire::decode_running(frame.payload);
        if (!running) {
            return violation(channel, running.error().detail);
        }
        refusal = precopy->on_running(session_, *running);
    }
    if (!refusal.empty()) {
        violation(channel, refusal);
    }
}

std::optional<OutgoingFrame> RoundCounter::end_of_round(const SourceLink& link) {
    PrecopySource* precopy = link.precopy();
    if (precopy == nullptr || !precopy->in_rounds()) {
        return std::nullopt;
    }
    std::uint32_t round = precopy->round();
    if (ended == round) {
        return std::nullopt;
    }
    ended = round;
    std::uint64_t carried = std::exchange(pages, 0);
    return message_frame(wire::MessageType::RoundEnd, wire::encode(wire::RoundEnd{round, carried}));
}

std::optional<OutgoingFrame> SourceUrgentChannel::next_frame(ChannelId) {
    if (!layout_sent_) {
        layout_sent_ = true;
        OutgoingFrame frame{.type = wire::frame_type(wire::MessageType::Layout)};
        frame.borrowed[0] = link_.layout_bytes();  // lives as long as the link
        return frame;
    }
    if (state_ != State::Serving) {
        return std::nullopt;
    }
    if (PrecopySource* precopy = link_.precopy()) {
        if (auto frame = precopy->next_switchover_frame(session_)) {
            return frame;
        }
    }
    if (answers_.empty()) {
        return stream_frame();
    }
    wire::Request& request = answers_.front();
    PageRun run = link_.pages().answer(request.region, request.first_page, request.count);
    request.first_page += run.count;
    request.count -= static_cast<std::uint32_t>(run.count);
    if (request.count == 0) {
        answers_.pop_front();
    }
    return builder_.pages(run, link_.want_hashes(), true, guest_running(link_));
}

std::optional<OutgoingFrame> SourceUrgentChannel::stream_frame() {
    if (!link_.stream_on_urgent() || link_.stream_held() || stream_waits(link_)) {
        return std::nullopt;
    }
    if (!link_.stream_may_send()) {
        return std::nullopt;  // the cap: woken when a frame may go
    }
    auto run = link_.pages().next_stream_run();
    if (!run) {
        return rounds_.end_of_round(link_);
    }
    rounds_.pages += run->count;
    auto frame = builder_.pages(*run, link_.want_hashes(), false, guest_running(link_));
    link_.stream_sent(frame);
    return frame;
}

void SourceUrgentChannel::on_closed(ChannelId, const transport::Failure& why) {
    link_.channel_closed();
    if (state_ == State::AwaitStart) {
        // Nothing was sent: a destination that only read the layout, or refused it. The
        // source waits for the next one.
        link_.ended_before_start(session_);
        return;
    }
    if (state_ != State::Finished) {
        link_.lost(session_, "the destination went away before it had every page", why);
    }
}

void SourceUrgentChannel::violation(ChannelId channel, const std::string& detail) {
    link_.refuse_urgent(channel, transport::violation(detail));
}

bool StreamBacklog::taken(Clock::time_point now) {
    if (sizes_.empty()) {
        return false;
    }
    bool was_full = full();
    bytes_ -= sizes_.front();
    span_bytes_ += sizes_.front();
    sizes_.pop_front();
    if (span_start_ == Clock::time_point{}) {
        span_start_ = now;
    } else if (now - span_start_ >= std::chrono::milliseconds(50)) {
        double rate = static_cast<double>(span_bytes_) /
                      std::chrono::duration<double>(now - span_start_).count();
        rate_ = rate_ == 0 ? rate : rate_ + (rate - rate_) / 4;
        span_start_ = now;
        span_bytes_ = 0;
    }
    return was_full && !full();
}

std::uint64_t StreamBacklog::budget() const noexcept {
    constexpr double kAhead = 0.004;  // seconds of the socket's rate
    constexpr std::uint64_t kLeast = 512U << 10;
    if (rate_ == 0) {
        return most_;  // nothing measured yet: the whole window
    }
    return std::clamp(static_cast<std::uint64_t>(rate_ * kAhead), kLeast, most_);
}

SourceBulkChannel::SourceBulkChannel(SourceLink& link, std::size_t window, std::uint64_t session)
    : backlog_(window * (256U << 10)),
      link_(link),
      builder_(link.pages().memory(), window, link.compression(),
               link.compression_pool() != nullptr ? kBatchFrames : 0),
      session_(session) {}

void SourceBulkChannel::on_frame(ChannelId channel, const FrameView& frame) {
    link_.refuse_bulk(
        channel, transport::violation("the destination sent " +
                                      wire::to_string(static_cast<wire::MessageType>(frame.type)) +
                                      " on a bulk connection"));
}

std::optional<OutgoingFrame> SourceBulkChannel::next_frame(ChannelId) {
    auto frame = choose_frame();
    if (frame) {
        // Every frame handed over comes back through on_sent, in order.
        backlog_.queued(transport::kHeaderSize + frame->payload_size());
    }
    return frame;
}

std::optional<OutgoingFrame> SourceBulkChannel::choose_frame() {
    // A held stream resumes through want_send; a stream on the urgent connection never comes
    // here (the stream has one caller at a time).
    if (!link_.serving(session_) || ended_ || link_.stream_on_urgent() || link_.stream_held() ||
        stream_waits(link_) || backlog_.full() || !link_.stream_may_send()) {
        return std::nullopt;  // (the backlog and the cap wake the streams when a frame may go)
    }
    if (!made_.empty()) {
        auto frame = std::move(made_.front());
        made_.pop_front();
        link_.stream_sent(frame);
        return frame;
    }
    // A run to be compressed takes the zero pages between its data pages in (PageRun).
    auto run = link_.pages().next_stream_run(builder_.stream_takes_zero_gaps());
    if (!run && link_.precopy() != nullptr &&
        link_.precopy()->phase() != PrecopySource::Phase::Postcopy) {
        return rounds_.end_of_round(link_);  // (and then nothing until the next round)
    }
    if (!run) {
        ended_ = true;
        return message_frame(wire::MessageType::StreamEnd, wire::encode(wire::StreamEnd{sent_}));
    }
    return stream_frame(*run);
}

std::optional<OutgoingFrame> SourceBulkChannel::stream_frame(const PageRun& first) {
    bool hashes = link_.want_hashes();
    bool live = guest_running(link_);
    sent_ += first.count;
    rounds_.pages += first.count;
    CompressionPool* pool = link_.compression_pool();
    batch_.clear();
    batch_.push_back(builder_.begin(first, hashes, false, live));
    // A batch while the stream is compressed (not for one of Auto's samples: on loopback,
    // where the stream stays raw, waking the helpers for them measured 6-13 % slower).
    if (pool != nullptr && batch_.front().compresses() && !batch_.front().codec.sample) {
        // Taken now, sent in order behind this one: the stream's order moves on from there.
        std::uint64_t bytes = batch_.front().data_bytes;
        while (batch_.size() < kBatchFrames && bytes < kBatchBytes) {
            auto run = link_.pages().next_stream_run(builder_.stream_takes_zero_gaps());
            if (!run) {
                break;  // the end (or the round's) comes once these are out
            }
            sent_ += run->count;
            rounds_.pages += run->count;
            batch_.push_back(builder_.begin(*run, hashes, false, live));
            bytes += batch_.back().data_bytes;
        }
        pool->compress(builder_, batch_, builder_.compressor());
    } else {
        builder_.compress(batch_.front(), builder_.compressor());
    }
    auto frame = builder_.finish(batch_.front());
    for (std::size_t i = 1; i < batch_.size(); ++i) {
        made_.push_back(builder_.finish(batch_[i]));
    }
    link_.stream_sent(frame);
    return frame;
}

void SourceBulkChannel::on_sent(ChannelId, std::uint64_t) {
    if (backlog_.taken(StreamBacklog::Clock::now())) {
        link_.wake_streams();
    }
}

void SourceBulkChannel::on_closed(ChannelId, const transport::Failure& why) {
    if (!link_.done()) {
        link_.lost(session_, "a bulk connection ended before the destination had every page", why);
    }
    link_.channel_closed();
}

}  // namespace uffdm::migration
