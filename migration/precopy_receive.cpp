// precopy_receive.cpp — Rounds acknowledged, DISCARD collected, SWITCHOVER applied.
#include "migration/precopy_receive.hpp"

#include <bit>
#include <cstdio>
#include <cstdlib>

namespace uffdm::migration {

namespace {

using ReceiverPhase = PrecopyReceiver::Phase;

constexpr bool receiver_phase_allowed(ReceiverPhase from, ReceiverPhase to) {
    switch (from) {
        case ReceiverPhase::Waiting:
            return to == ReceiverPhase::Precopy || to == ReceiverPhase::Running;
        case ReceiverPhase::Precopy:
            return to == ReceiverPhase::Switching;
        case ReceiverPhase::Switching:
            return to == ReceiverPhase::Running;
        case ReceiverPhase::Running:
            return false;
    }
    return false;
}

}  // namespace

const char* PrecopyReceiver::name(Phase phase) noexcept {
    switch (phase) {
        case Phase::Waiting:
            return "Waiting";
        case Phase::Precopy:
            return "Precopy";
        case Phase::Switching:
            return "Switching";
        case Phase::Running:
            return "Running";
    }
    return "?";
}

PrecopyReceiver::PrecopyReceiver(const wire::Layout& layout, Discard discard,
                                 std::function<void()> runnable)
    : layout_(layout), discard_(std::move(discard)), runnable_(std::move(runnable)) {
    for (const auto& region : layout.regions) {
        discards_.emplace_back(region.pages());
    }
}

void PrecopyReceiver::enter(Phase next) {
    Phase from = phase_.load(std::memory_order_relaxed);
    if (!receiver_phase_allowed(from, next)) {
        std::fprintf(stderr, "uffdm: destination precopy phase %s -> %s is not in protocol.md\n",
                     name(from), name(next));
        std::abort();
    }
    phase_.store(next, std::memory_order_release);
    changed_.notify_all();
}

std::string PrecopyReceiver::on_layout(const wire::Layout& source) {
    {
        std::lock_guard lock(mutex_);
        if (source.live() && !refuse_live_.empty()) {
            return refuse_live_;
        }
        if (phase() != Phase::Waiting) {
            if (source.live() != live()) {
                return std::string("LAYOUT says the guest ") +
                       (source.live() ? "runs" : "is paused") +
                       " on the source, but an earlier session's said otherwise";
            }
            return {};
        }
        live_.store(source.live(), std::memory_order_release);
        enter(source.live() ? Phase::Precopy : Phase::Running);
        if (source.live()) {
            return {};
        }
    }
    // Running from the first LAYOUT on: every page may be present already (placed from a copy
    // of the memory on this host), and completion waits for this phase.
    if (runnable_) {
        runnable_();
    }
    return {};
}

void PrecopyReceiver::begin_session(std::uint64_t generation, std::size_t streams) {
    std::lock_guard lock(mutex_);
    generation_ = generation;
    streams_ = streams;
    ended_ = 0;
    open_pages_ = 0;
    round_.reset();
    done_pending_ = false;
    // DISCARD* and SWITCHOVER come again in full if the switchover had not been applied.
    if (phase() == Phase::Precopy) {
        for (PageBitmap& bits : discards_) {
            bits.clear();
        }
        discard_bits_ = 0;
    }
}

std::string PrecopyReceiver::on_round_end(std::uint64_t generation, const wire::RoundEnd& end,
                                          std::uint64_t pages) {
    std::lock_guard lock(mutex_);
    if (generation != generation_) {
        return {};  // a late frame of a session that broke: its round ends in the new one
    }
    if (phase() != Phase::Precopy) {
        return "ROUND_END from a source " +
               std::string(live() ? "after SWITCHOVER" : "whose LAYOUT said its guest is paused");
    }
    if (end.pages_sent != pages) {
        return "ROUND_END says " + std::to_string(end.pages_sent) +
               " pages were sent on this connection in round " + std::to_string(end.round) + "; " +
               std::to_string(pages) + " arrived";
    }
    // The round after the last acknowledged one, or that one again (its ROUND_DONE may have
    // been lost with a broken session).
    std::uint32_t next = last_done_ ? *last_done_ + 1 : 0;
    bool again = last_done_ && end.round == *last_done_;
    if (end.round != next && !again) {
        return "ROUND_END for round " + std::to_string(end.round) + "; the next round is " +
               std::to_string(next);
    }
    if (round_ && *round_ != end.round) {
        return "ROUND_END for round " + std::to_string(end.round) +
               " on one connection and round " + std::to_string(*round_) + " on another";
    }
    round_ = end.round;
    open_pages_ -= std::min(open_pages_, pages);
    if (++ended_ > streams_) {
        return "ROUND_END twice on one connection in round " + std::to_string(end.round);
    }
    if (ended_ == streams_) {
        last_done_ = end.round;
        stats_.rounds = end.round + 1;
        done_pending_ = true;
        ended_ = 0;
        round_.reset();
    }
    return {};
}

void PrecopyReceiver::on_stream_pages(std::uint64_t generation, std::uint64_t pages) {
    if (!live()) {
        return;
    }
    std::lock_guard lock(mutex_);
    if (generation == generation_ && phase() == Phase::Precopy) {
        open_pages_ += pages;
    }
}

std::optional<wire::RoundDone> PrecopyReceiver::next_round_done(std::uint64_t present) {
    std::lock_guard lock(mutex_);
    if (!done_pending_) {
        return std::nullopt;
    }
    done_pending_ = false;
    return wire::RoundDone{*last_done_, present};
}

std::string PrecopyReceiver::may_stream() const {
    Phase p = phase();
    if (p == Phase::Switching) {
        return "the source streamed pages between SWITCHOVER and RUNNING";
    }
    return {};
}

std::string PrecopyReceiver::on_discard(const wire::BitmapChunk& chunk) {
    std::lock_guard lock(mutex_);
    if (phase() != Phase::Precopy) {
        return live() ? "DISCARD after SWITCHOVER: the guest may be running on those pages"
                      : "DISCARD from a source whose guest is paused (its LAYOUT said so)";
    }
    PageBitmap& bits = discards_[chunk.region];
    for (std::size_t i = 0; i < chunk.words.size(); ++i) {
        std::size_t word = chunk.first_page / 64 + i;
        std::uint64_t fresh = chunk.words[i] & ~bits.word(word);
        discard_bits_ += static_cast<std::uint64_t>(std::popcount(fresh));
        bits.assign_word(word, bits.word(word) | chunk.words[i]);
    }
    return {};
}

std::string PrecopyReceiver::on_switchover(std::uint64_t generation,
                                           const wire::Switchover& switchover) {
    auto received = Clock::now();
    std::vector<PageBitmap>* pages = nullptr;
    {
        std::lock_guard lock(mutex_);
        if (phase() != Phase::Precopy) {
            return live() ? "SWITCHOVER twice"
                          : "SWITCHOVER from a source whose guest is paused (its LAYOUT said so)";
        }
        if (switchover.pages_discarded != discard_bits_) {
            return "SWITCHOVER says " + std::to_string(switchover.pages_discarded) +
                   " pages are discarded but its DISCARDs name " + std::to_string(discard_bits_);
        }
        // Every page streamed so far belongs to a round this destination acknowledged: none
        // of them can still be on its way.
        std::uint32_t acknowledged = last_done_ ? *last_done_ + 1 : 0;
        if (acknowledged == 0 || switchover.rounds != acknowledged || ended_ != 0 ||
            open_pages_ != 0) {
            return "SWITCHOVER after " + std::to_string(switchover.rounds) +
                   " rounds while this destination acknowledged " + std::to_string(acknowledged) +
                   (ended_ != 0 || open_pages_ != 0
                        ? " and a round had not ended on every connection"
                        : "");
        }
        // From here on nothing streams until RUNNING: what is placed now is final.
        enter(Phase::Switching);
        pages = &discards_;
    }
    auto missing = discard_(*pages);
    if (!missing) {
        return missing.error().detail;
    }
    {
        std::lock_guard lock(mutex_);
        stats_.discarded = discard_bits_;
        missing_after_ = *missing;
        stats_.running_at = Clock::now();
        stats_.switchover_seconds =
            std::chrono::duration<double>(*stats_.running_at - received).count();
        running_for_ = generation;
        enter(Phase::Running);
    }
    if (runnable_) {
        runnable_();
    }
    return {};
}

std::optional<wire::Running> PrecopyReceiver::next_running(std::uint64_t generation) {
    std::lock_guard lock(mutex_);
    if (running_for_ != generation) {
        return std::nullopt;
    }
    running_for_.reset();
    return wire::Running{missing_after_};
}

bool PrecopyReceiver::wait_runnable(Clock::time_point deadline,
                                    const std::function<bool()>& gave_up) {
    std::unique_lock lock(mutex_);
    for (;;) {
        if (phase() == Phase::Running) {
            return true;
        }
        if (gave_up() || Clock::now() >= deadline) {
            return false;
        }
        changed_.wait_until(lock,
                            std::min(deadline, Clock::now() + std::chrono::milliseconds(100)));
    }
}

void PrecopyReceiver::wake() {
    std::lock_guard lock(mutex_);
    changed_.notify_all();
}

PrecopyReceiver::Stats PrecopyReceiver::stats() const {
    std::lock_guard lock(mutex_);
    return stats_;
}

}  // namespace uffdm::migration
