// precopy_source.hpp — A live source's precopy rounds and switchover: what the guest wrote, when
// to stop, and the pages the destination must discard.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <expected>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "migration/guest_memory.hpp"
#include "migration/page_bitmap.hpp"
#include "migration/report.hpp"
#include "migration/session_link.hpp"
#include "migration/source_pages.hpp"
#include "uffd/dirty_tracker.hpp"

namespace uffdm::migration {

struct LiveSourceOptions {
    bool enabled = false;
    // Precopy rounds (round 0 included) before the switchover is forced, 1..wire::kMaxRounds.
    std::uint32_t max_rounds = 10;
    // Converged: what the guest wrote during a round would take less than this to send at the
    // rate that round measured. Then the guest pauses and the rest is left to postcopy.
    std::chrono::milliseconds downtime_budget{50};
    // Per region, for the dirty tracker (asynchronous write-protection + PAGEMAP_SCAN).
    std::vector<uffd::MemoryKind> kinds;
    // Instead of the tracker (a VMM with KVM's dirty log or dirty ring): sets in `bits` (bit i
    // of word w is page 64 w + i of the region) the pages written since its last call, or since
    // the source was created for the first call. False: it could not say (the migration fails).
    std::function<bool(std::uint32_t region, std::span<std::uint64_t> bits)> dirty_log;
    // The VMM pauses its vCPUs and returns once they are paused (from the source's precopy
    // thread). Required.
    std::function<void()> pause_guest;
    // The migration failed while the destination cannot be running the guest: the VMM may run
    // it here again (from run()'s thread, as run() ends).
    std::function<void()> resume_guest;
    // After each round's ROUND_DONE, from the precopy thread.
    std::function<void(const RoundReport&)> on_round;
};

// protocol.md, "Live source": Rounds (channels stream what is unsent, then ROUND_END) ->
// Deciding (ROUND_DONE came: collect what was written, go on or stop) -> Rounds again, or
// Pausing (the VMM pauses the guest; the last writes are collected) -> Switching (DISCARD* and
// SWITCHOVER go out) -> Postcopy (RUNNING came: today's postcopy streams the rest).
class PrecopySource {
  public:
    enum class Phase : std::uint8_t { Rounds, Deciding, Pausing, Switching, Postcopy };
    [[nodiscard]] static const char* name(Phase phase) noexcept;

    // Starts tracking writes to the guest (unless options.dirty_log does): from here on every
    // write is either in the pages sent next or in a later collection.
    [[nodiscard]] static std::expected<std::unique_ptr<PrecopySource>, transport::Failure> start(
        const LiveSourceOptions& options, SentPages& pages,
        std::function<std::uint64_t()> bytes_sent);
    PrecopySource(const PrecopySource&) = delete;
    PrecopySource& operator=(const PrecopySource&) = delete;
    ~PrecopySource();

    // Starts the precopy thread (decisions, the VMM's pause); `wake_streams` and `wake_urgent`
    // ask the channels to send, `fail` ends the migration. stop() joins it.
    void launch(std::function<void()> wake_streams, std::function<void()> wake_urgent,
                std::function<void(transport::Failure)> fail);
    void stop();

    [[nodiscard]] Phase phase() const noexcept { return phase_.load(std::memory_order_acquire); }
    [[nodiscard]] std::uint32_t round() const noexcept {
        return round_.load(std::memory_order_acquire);
    }
    // A streaming channel that has sent its last page ends the round with ROUND_END.
    [[nodiscard]] bool in_rounds() const noexcept { return phase() == Phase::Rounds; }
    // Nothing streams while a round is decided, the guest pauses, or the switchover is out.
    [[nodiscard]] bool stream_waits() const noexcept {
        Phase p = phase();
        return p == Phase::Deciding || p == Phase::Pausing || p == Phase::Switching;
    }
    // Frames hold guest memory the guest may still write while they are in the send window:
    // they are copied when a hash must match them.
    [[nodiscard]] bool guest_running() const noexcept { return !paused_.load(); }

    // ---- From the urgent loop of session `session`.
    // A fresh destination (START): "" or why it is refused (a destination may already run
    // the guest).
    [[nodiscard]] std::string on_start(std::uint64_t session);
    // A destination that continues (RESUME with its present bitmaps, and its phase): "" or the
    // refusal. Rewrites what counts as sent: never a page whose copy there may be stale.
    [[nodiscard]] std::string on_resume(std::uint64_t session, std::uint32_t phase,
                                        const std::vector<PageBitmap>& received);
    [[nodiscard]] std::string on_round_done(std::uint64_t session, const wire::RoundDone& done);
    [[nodiscard]] std::string on_running(std::uint64_t session, const wire::Running& running);
    // The next DISCARD or SWITCHOVER frame for this session, once the switchover is ready.
    [[nodiscard]] std::optional<transport::OutgoingFrame> next_switchover_frame(
        std::uint64_t session);
    // The VMM asks for the switchover at the end of the current round.
    void switchover_now();

    // After run() ended: the report's fields, and the VMM told to resume its guest when it may.
    void finish(bool failed, SourceStats& report);

  private:
    PrecopySource(const LiveSourceOptions& options, SentPages& pages,
                  std::function<std::uint64_t()> bytes_sent);
    // What the guest wrote since the last collection, per region. Precopy thread.
    [[nodiscard]] std::expected<std::vector<PageBitmap>, transport::Failure> collect();
    void decide(std::unique_lock<std::mutex>& lock);
    void switch_over(std::unique_lock<std::mutex>& lock, std::vector<PageBitmap> dirty,
                     std::string reason);
    void begin_round(std::uint32_t round);
    // Holds mutex_; aborts on a transition protocol.md does not have.
    void enter(Phase next);
    void thread_main();

    const LiveSourceOptions& options_;
    SentPages& pages_;
    std::function<std::uint64_t()> bytes_sent_;
    std::vector<uffd::DirtyTracker> trackers_;

    // Guards everything below but the atomics. The precopy thread waits on `changed_`.
    std::mutex mutex_;
    std::condition_variable changed_;
    std::atomic<Phase> phase_{Phase::Rounds};
    std::atomic<std::uint32_t> round_{0};
    std::atomic<bool> paused_{false};
    bool stop_ = false;
    bool asked_ = false;                 // switchover_now()
    std::optional<std::uint32_t> done_;  // a ROUND_DONE for the precopy thread
    std::vector<PageBitmap> round_set_;  // what this round re-sends (copies there may be stale)
    std::vector<PageBitmap> discard_;    // the final dirty set (Switching on)
    std::uint64_t discard_count_ = 0;
    std::uint64_t session_ = 0;         // the session the switchover frames go to
    std::uint32_t discard_region_ = 0;  // the next DISCARD frame's place
    std::uint64_t discard_page_ = 0;
    std::deque<std::vector<std::byte>> frames_;  // kept: frames borrow them
    bool switchover_sent_ = false;               // a destination may run the guest from here on
    bool running_heard_ = false;
    std::string reason_;
    std::uint64_t previous_dirty_ = 0;
    std::vector<RoundReport> rounds_;
    Clock::time_point round_started_;
    std::uint64_t round_pages_at_ = 0;
    std::uint64_t round_bytes_at_ = 0;
    std::optional<Clock::time_point> paused_at_;
    std::optional<Clock::time_point> running_at_;
    std::function<void()> wake_streams_;
    std::function<void()> wake_urgent_;
    std::function<void(transport::Failure)> fail_;
    std::thread thread_;
};

}  // namespace uffdm::migration
