// precopy_source.cpp — Rounds, the decision to stop, the VMM's pause, the discard set.
#include "migration/precopy_source.hpp"

#include <bit>
#include <cstdio>
#include <cstdlib>

#include "migration/data_paths.hpp"

namespace uffdm::migration {

namespace {

using SourcePhase = PrecopySource::Phase;

// The transitions of protocol.md's "Live source", and only those.
constexpr bool source_phase_allowed(SourcePhase from, SourcePhase to) {
    switch (from) {
        case SourcePhase::Rounds:
            return to == SourcePhase::Deciding ||
                   to == SourcePhase::Rounds;  // Rounds: a fresh destination
        case SourcePhase::Deciding:
            return to == SourcePhase::Rounds || to == SourcePhase::Pausing;
        case SourcePhase::Pausing:
            return to == SourcePhase::Switching;
        case SourcePhase::Switching:
            return to == SourcePhase::Postcopy ||
                   to == SourcePhase::Rounds;  // Rounds: see on_start
        case SourcePhase::Postcopy:
            return false;
    }
    return false;
}

std::uint64_t bits_set_in(const std::vector<PageBitmap>& bits) {
    std::uint64_t n = 0;
    for (const PageBitmap& b : bits) {
        n += b.count();
    }
    return n;
}

}  // namespace

const char* PrecopySource::name(Phase phase) noexcept {
    switch (phase) {
        case Phase::Rounds:
            return "Rounds";
        case Phase::Deciding:
            return "Deciding";
        case Phase::Pausing:
            return "Pausing";
        case Phase::Switching:
            return "Switching";
        case Phase::Postcopy:
            return "Postcopy";
    }
    return "?";
}

PrecopySource::PrecopySource(const LiveSourceOptions& options, SentPages& pages,
                             std::function<std::uint64_t()> bytes_sent)
    : options_(options), pages_(pages), bytes_sent_(std::move(bytes_sent)) {
    for (const auto& region : pages.memory().layout().regions) {
        round_set_.emplace_back(region.pages());
        discard_.emplace_back(region.pages());
    }
}

PrecopySource::~PrecopySource() {
    stop();
}

std::expected<std::unique_ptr<PrecopySource>, transport::Failure> PrecopySource::start(
    const LiveSourceOptions& options, SentPages& pages, std::function<std::uint64_t()> bytes_sent) {
    const wire::Layout& layout = pages.memory().layout();
    if (options.max_rounds == 0 || options.max_rounds > wire::kMaxRounds) {
        return std::unexpected(transport::failure(
            Errc::InvalidArgument, "max rounds " + std::to_string(options.max_rounds) +
                                       " outside 1.." + std::to_string(wire::kMaxRounds)));
    }
    if (!options.pause_guest) {
        return std::unexpected(transport::failure(
            Errc::InvalidArgument,
            "a live source needs the VMM's pause: the switchover pauses the guest"));
    }
    std::unique_ptr<PrecopySource> source(new PrecopySource(options, pages, std::move(bytes_sent)));
    if (options.dirty_log) {
        return source;
    }
    for (std::uint32_t r = 0; r < layout.regions.size(); ++r) {
        auto data = pages.memory().pages(r, 0, layout.regions[r].pages());
        auto kind = r < options.kinds.size() ? options.kinds[r] : uffd::MemoryKind::Anonymous;
        auto tracker = uffd::DirtyTracker::start(reinterpret_cast<std::uint64_t>(data.data()),
                                                 data.size(), kind);
        if (!tracker) {
            return std::unexpected(transport::Failure{
                tracker.error(), "cannot track writes to region " + std::to_string(r) + " (" +
                                     std::string(uffdm::to_string(kind)) +
                                     "): " + tracker.error().message() +
                                     "; this source can still migrate a paused guest (postcopy)"});
        }
        source->trackers_.push_back(std::move(*tracker));
    }
    return source;
}

void PrecopySource::launch(std::function<void()> wake_streams, std::function<void()> wake_urgent,
                           std::function<void(transport::Failure)> fail) {
    wake_streams_ = std::move(wake_streams);
    wake_urgent_ = std::move(wake_urgent);
    fail_ = std::move(fail);
    round_started_ = Clock::now();
    thread_ = std::thread([this] {
        name_this_thread("uffdm-precopy");
        thread_main();
    });
}

void PrecopySource::stop() {
    {
        std::lock_guard lock(mutex_);
        stop_ = true;
    }
    changed_.notify_all();
    if (thread_.joinable()) {
        thread_.join();
    }
}

void PrecopySource::enter(Phase next) {
    Phase from = phase_.load(std::memory_order_relaxed);
    if (!source_phase_allowed(from, next)) {
        std::fprintf(stderr, "uffdm: live source phase %s -> %s is not in protocol.md\n",
                     name(from), name(next));
        std::abort();
    }
    phase_.store(next, std::memory_order_release);
}

std::expected<std::vector<PageBitmap>, transport::Failure> PrecopySource::collect() {
    const wire::Layout& layout = pages_.memory().layout();
    std::vector<PageBitmap> written;
    for (std::uint32_t r = 0; r < layout.regions.size(); ++r) {
        const wire::RegionInfo& region = layout.regions[r];
        PageBitmap& bits = written.emplace_back(region.pages());
        if (options_.dirty_log) {
            std::vector<std::uint64_t> words(bits.words(), 0);
            if (!options_.dirty_log(r, words)) {
                return std::unexpected(transport::failure(
                    Errc::InvalidArgument,
                    "the VMM's dirty log failed for region " + std::to_string(r)));
            }
            if (region.pages() % 64 != 0) {
                words.back() &= (std::uint64_t{1} << (region.pages() % 64)) - 1;
            }
            for (std::size_t w = 0; w < words.size(); ++w) {
                bits.assign_word(w, words[w]);
            }
            continue;
        }
        auto ranges = trackers_[r].collect();
        if (!ranges) {
            return std::unexpected(transport::Failure{
                ranges.error(), "collecting the written pages of region " + std::to_string(r) +
                                    ": " + ranges.error().message()});
        }
        std::uint64_t base = trackers_[r].address();
        for (const uffd::WrittenRange& range : *ranges) {
            for (std::uint64_t at = range.start; at < range.end; at += region.page_size) {
                (void)bits.test_and_set((at - base) / region.page_size);
            }
        }
    }
    return written;
}

void PrecopySource::begin_round(std::uint32_t round) {
    round_.store(round, std::memory_order_release);
    round_started_ = Clock::now();
    const SourceCounts& counts = pages_.counts();
    round_pages_at_ = counts.streamed.load() + counts.answered.load();
    round_bytes_at_ = bytes_sent_ ? bytes_sent_() : 0;
    pages_.rewind();
}

std::string PrecopySource::on_start(std::uint64_t session) {
    std::lock_guard lock(mutex_);
    if (switchover_sent_) {
        return "START from a fresh destination after SWITCHOVER was sent: the destination it went "
               "to may be running the guest, so no other may start";
    }
    // Everything goes again (the caller forgets what was sent); round 0 from the start.
    session_ = session;
    for (PageBitmap& bits : round_set_) {
        bits.clear();
    }
    // A step of the precopy thread in progress finds the phase changed and drops what it
    // collected (everything goes again anyway). A pause in progress goes on: the switchover
    // then carries everything to this destination.
    done_.reset();
    if (phase() != Phase::Pausing) {
        enter(Phase::Rounds);
    }
    begin_round(0);
    return {};
}

std::string PrecopySource::on_resume(std::uint64_t session, std::uint32_t phase,
                                     const std::vector<PageBitmap>& received) {
    std::lock_guard lock(mutex_);
    session_ = session;
    if (phase == wire::Resume::kSwitchedOver) {
        if (!switchover_sent_) {
            return "RESUME says the guest runs there, but this source never sent SWITCHOVER";
        }
        pages_.resume_from(received);
        if (this->phase() == Phase::Switching) {
            enter(Phase::Postcopy);  // its RUNNING was lost with the session
            running_at_ = Clock::now();
        }
        return {};
    }
    if (running_heard_) {
        return "RESUME says the guest has not run there, but that destination said RUNNING";
    }
    // Pages this round re-sends may still hold an older copy there, whatever its bitmap says;
    // so may the discard set, not yet applied.
    std::vector<PageBitmap> stale;
    for (std::size_t r = 0; r < round_set_.size(); ++r) {
        PageBitmap& bits = stale.emplace_back(round_set_[r].size());
        for (std::size_t w = 0; w < bits.words(); ++w) {
            bits.assign_word(w, round_set_[r].word(w) | discard_[r].word(w));
        }
    }
    pages_.resume_from(received, &stale);
    // DISCARD* and SWITCHOVER again, for this session.
    discard_region_ = 0;
    discard_page_ = 0;
    return {};
}

std::string PrecopySource::on_round_done(std::uint64_t session, const wire::RoundDone& done) {
    {
        std::lock_guard lock(mutex_);
        if (session != session_) {
            return {};  // a late frame of a session given up
        }
        if (phase() != Phase::Rounds || done.round != round()) {
            return "ROUND_DONE for round " + std::to_string(done.round) + " while the source is " +
                   name(phase()) + " in round " + std::to_string(round());
        }
        enter(Phase::Deciding);
        done_ = done.round;
    }
    changed_.notify_all();
    return {};
}

std::string PrecopySource::on_running(std::uint64_t session, const wire::Running&) {
    std::lock_guard lock(mutex_);
    if (session != session_ || phase() != Phase::Switching || !switchover_sent_) {
        return "RUNNING before this source sent SWITCHOVER";
    }
    running_heard_ = true;
    running_at_ = Clock::now();
    enter(Phase::Postcopy);
    if (wake_streams_) {
        wake_streams_();
    }
    return {};
}

void PrecopySource::switchover_now() {
    {
        std::lock_guard lock(mutex_);
        asked_ = true;
    }
    changed_.notify_all();
}

std::optional<transport::OutgoingFrame> PrecopySource::next_switchover_frame(
    std::uint64_t session) {
    std::lock_guard lock(mutex_);
    if (phase() != Phase::Switching || session != session_ || discard_region_ > discard_.size()) {
        return std::nullopt;
    }
    const wire::Layout& layout = pages_.memory().layout();
    while (discard_region_ < discard_.size()) {
        const PageBitmap& bits = discard_[discard_region_];
        std::uint64_t pages = layout.regions[discard_region_].pages();
        // Only the stretches with a bit set: a small final dirty set is a few small frames.
        std::uint64_t word = discard_page_ / 64;
        while (word < bits.words() && bits.word(word) == 0) {
            ++word;
        }
        if (word >= bits.words()) {
            ++discard_region_;
            discard_page_ = 0;
            continue;
        }
        wire::BitmapChunk chunk{.region = discard_region_,
                                .first_page = word * 64,
                                .count = std::min(wire::kMaxBitmapPages, pages - word * 64),
                                .words = {}};
        for (std::uint64_t w = 0; w < (chunk.count + 63) / 64; ++w) {
            chunk.words.push_back(bits.word(word + w));
        }
        discard_page_ = chunk.first_page + chunk.count;
        if (discard_page_ >= pages) {
            ++discard_region_;
            discard_page_ = 0;
        }
        transport::OutgoingFrame frame{.type = wire::frame_type(wire::MessageType::Discard)};
        frame.borrowed[0] = frames_.emplace_back(wire::encode(chunk));  // up to 1 MiB
        return frame;
    }
    ++discard_region_;  // past the end: SWITCHOVER once
    switchover_sent_ = true;
    return message_frame(
        wire::MessageType::Switchover,
        wire::encode(wire::Switchover{static_cast<std::uint32_t>(rounds_.size()), discard_count_}));
}

void PrecopySource::thread_main() {
    std::unique_lock lock(mutex_);
    for (;;) {
        changed_.wait(lock, [&] { return stop_ || done_.has_value(); });
        if (stop_) {
            return;
        }
        decide(lock);
    }
}

// Holds `lock`; lets go of it while collecting and while the VMM pauses its guest.
void PrecopySource::decide(std::unique_lock<std::mutex>& lock) {
    std::uint32_t finished = *done_;
    done_.reset();
    auto now = Clock::now();
    const SourceCounts& counts = pages_.counts();
    RoundReport report{.round = finished,
                       .pages = counts.streamed.load() + counts.answered.load() - round_pages_at_,
                       .bytes = (bytes_sent_ ? bytes_sent_() : 0) - round_bytes_at_,
                       .seconds = std::chrono::duration<double>(now - round_started_).count(),
                       .dirty_pages = 0,
                       .dirty_pages_per_second = 0};
    lock.unlock();
    auto written = collect();
    lock.lock();
    if (!written) {
        lock.unlock();
        fail_(written.error());
        lock.lock();
        return;
    }
    if (phase() != Phase::Deciding) {
        return;  // a fresh destination started round 0 meanwhile (what was written goes too)
    }
    report.dirty_pages = bits_set_in(*written);
    report.dirty_pages_per_second =
        report.seconds > 0 ? static_cast<double>(report.dirty_pages) / report.seconds : 0.0;
    rounds_.push_back(report);
    if (options_.on_round) {
        lock.unlock();
        options_.on_round(report);
        lock.lock();
    }
    // Bytes per second on the link this round, and what the written pages would take.
    const wire::Layout& layout = pages_.memory().layout();
    std::uint64_t dirty_bytes = 0;
    for (std::size_t r = 0; r < written->size(); ++r) {
        dirty_bytes += (*written)[r].count() * layout.regions[r].page_size;
    }
    double rate = report.seconds > 0 ? static_cast<double>(report.bytes) / report.seconds : 0.0;
    double budget = std::chrono::duration<double>(options_.downtime_budget).count();
    std::string reason;
    if (asked_) {
        reason = "asked";
    } else if (rate > 0 && static_cast<double>(dirty_bytes) / rate <= budget) {
        reason = "converged";
    } else if (finished + 1 >= options_.max_rounds) {
        reason = "max-rounds";
    } else if (finished >= 1 && report.dirty_pages >= previous_dirty_) {
        reason = "not-shrinking";
    }
    previous_dirty_ = report.dirty_pages;
    if (!reason.empty()) {
        return switch_over(lock, std::move(*written), reason);
    }
    for (std::size_t r = 0; r < round_set_.size(); ++r) {
        for (std::size_t w = 0; w < round_set_[r].words(); ++w) {
            round_set_[r].assign_word(w, (*written)[r].word(w));
        }
    }
    pages_.mark_unsent(*written);
    begin_round(finished + 1);
    enter(Phase::Rounds);
    lock.unlock();
    wake_streams_();
    lock.lock();
}

void PrecopySource::switch_over(std::unique_lock<std::mutex>& lock, std::vector<PageBitmap> dirty,
                                std::string reason) {
    reason_ = std::move(reason);
    enter(Phase::Pausing);
    lock.unlock();
    if (!paused_.load()) {
        options_.pause_guest();
        paused_.store(true);
    }
    auto paused_at = Clock::now();
    auto last = collect();
    lock.lock();
    paused_at_ = paused_at;
    if (!last) {
        lock.unlock();
        fail_(last.error());
        lock.lock();
        return;
    }
    // Everything written since it was sent: what this round had yet to re-send, and what the
    // last collection found. The destination discards it; postcopy brings it.
    for (std::size_t r = 0; r < discard_.size(); ++r) {
        for (std::size_t w = 0; w < discard_[r].words(); ++w) {
            discard_[r].assign_word(w, dirty[r].word(w) | (*last)[r].word(w));
        }
    }
    discard_count_ = bits_set_in(discard_);
    pages_.mark_unsent(discard_);
    discard_region_ = 0;
    discard_page_ = 0;
    enter(Phase::Switching);
    lock.unlock();
    wake_urgent_();
    lock.lock();
}

void PrecopySource::finish(bool failed, SourceStats& report) {
    stop();
    std::lock_guard lock(mutex_);
    report.live = true;
    report.rounds = rounds_;
    report.switchover_reason = reason_;
    report.pages_discarded = discard_count_;
    if (paused_at_ && running_at_) {
        report.downtime_seconds = std::chrono::duration<double>(*running_at_ - *paused_at_).count();
    }
    // The rule (protocol.md): once SWITCHOVER may have reached a destination, that destination
    // may run the guest, so this one never resumes it; before that it always may.
    report.guest_runnable_here = failed && !switchover_sent_;
    if (report.guest_runnable_here && paused_.load() && options_.resume_guest) {
        options_.resume_guest();
    }
}

}  // namespace uffdm::migration
