// precopy_receive.hpp — The destination's side of a live source: precopy rounds placed while
// the guest waits, the rounds acknowledged, then the switchover (switchover.hpp) lets it run.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <expected>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "migration/page_bitmap.hpp"
#include "migration/session_link.hpp"
#include "migration/wire.hpp"

namespace uffdm::migration {

// protocol.md, "Live source", the destination's phases:
//   Waiting (no LAYOUT yet) --LAYOUT, not live--> Running
//   Waiting --LAYOUT, live--> Precopy --SWITCHOVER, the discards applied--> Running
// In Precopy the guest must not run: pages are placed and a later copy replaces an earlier one.
// Every connection that streams ends each round with ROUND_END; once all have, ROUND_DONE goes
// back, and the source starts the next round only then (so no copy of an older round can
// arrive after a newer one on another connection).
class PrecopyReceiver {
  public:
    enum class Phase : std::uint8_t { Waiting, Precopy, Switching, Running };
    [[nodiscard]] static const char* name(Phase phase) noexcept;

    // The switchover's discard (FaultServer: pages made missing again), returning the pages
    // missing afterwards; and what to do once the guest may run.
    using Discard = std::function<std::expected<std::uint64_t, transport::Failure>(
        const std::vector<PageBitmap>& pages)>;
    PrecopyReceiver(const wire::Layout& layout, Discard discard, std::function<void()> runnable);

    // A live source is refused with this reason (set before the link starts): a destination
    // whose guest memory another process maps cannot write newer copies over present pages.
    void refuse_live(std::string why) { refuse_live_ = std::move(why); }

    // ---- The urgent loop.
    // The session's LAYOUT: "" or why it is refused (live, then not).
    [[nodiscard]] std::string on_layout(const wire::Layout& source);
    // A new session: `streams` connections will stream (its bulk ones, or the urgent one).
    void begin_session(std::uint64_t generation, std::size_t streams);
    [[nodiscard]] std::string on_discard(const wire::BitmapChunk& chunk);
    // From session `generation`: RUNNING goes back on that session only (a session made
    // meanwhile learns from its own RESUME's phase that the guest runs).
    [[nodiscard]] std::string on_switchover(std::uint64_t generation,
                                            const wire::Switchover& switchover);
    // ROUND_DONE to send, if a round ended everywhere (once).
    [[nodiscard]] std::optional<wire::RoundDone> next_round_done(std::uint64_t present);
    // RUNNING to send, once, after the switchover.
    [[nodiscard]] std::optional<wire::Running> next_running(std::uint64_t generation);

    // ---- Any loop.
    // ROUND_END on a connection of session `generation` that carried `pages` since its last
    // ROUND_END: "" or the refusal.
    [[nodiscard]] std::string on_round_end(std::uint64_t generation, const wire::RoundEnd& end,
                                           std::uint64_t pages);
    // Stream pages of session `generation` placed, not yet counted by a ROUND_END.
    void on_stream_pages(std::uint64_t generation, std::uint64_t pages);
    // Pages may be placed over an earlier copy (precopy) — the placer asks per run.
    [[nodiscard]] bool replacing() const noexcept { return phase() == Phase::Precopy; }
    // PAGES on a streaming connection now: "" or the refusal (between SWITCHOVER and RUNNING
    // nothing may stream).
    [[nodiscard]] std::string may_stream() const;
    [[nodiscard]] Phase phase() const noexcept { return phase_.load(std::memory_order_acquire); }
    [[nodiscard]] bool live() const noexcept { return live_.load(std::memory_order_acquire); }
    // RESUME's phase field.
    [[nodiscard]] std::uint32_t resume_phase() const noexcept {
        return live() && phase() == Phase::Running ? wire::Resume::kSwitchedOver : 0U;
    }
    // Until the guest may run (true) or `deadline`, or `gave_up` says so (false).
    bool wait_runnable(Clock::time_point deadline, const std::function<bool()>& gave_up);
    void wake();  // a failure: waiters look at gave_up again

    struct Stats {
        std::uint32_t rounds = 0;
        std::uint64_t discarded = 0;
        double switchover_seconds = 0;
        std::optional<Clock::time_point> running_at;
    };
    [[nodiscard]] Stats stats() const;

  private:
    void enter(Phase next);  // holds mutex_

    const wire::Layout& layout_;
    Discard discard_;
    std::function<void()> runnable_;

    mutable std::mutex mutex_;  // guards everything below but the atomics
    std::condition_variable changed_;
    std::atomic<Phase> phase_{Phase::Waiting};
    std::atomic<bool> live_{false};
    std::uint64_t generation_ = 0;
    std::size_t streams_ = 0;
    std::size_t ended_ = 0;                   // connections that sent ROUND_END for `round_`
    std::uint64_t open_pages_ = 0;            // stream pages no ROUND_END has counted yet
    std::optional<std::uint32_t> round_;      // the round being ended in this session
    std::optional<std::uint32_t> last_done_;  // the last round acknowledged
    bool done_pending_ = false;
    std::optional<std::uint64_t> running_for_;  // the session that is owed RUNNING
    std::uint64_t missing_after_ = 0;           // RUNNING's count
    std::vector<PageBitmap> discards_;
    std::uint64_t discard_bits_ = 0;
    Stats stats_;
    std::string refuse_live_;
};

}  // namespace uffdm::migration
