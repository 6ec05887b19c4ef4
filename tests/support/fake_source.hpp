// fake_source.hpp — A source that lies: honest pages first, then one scripted misbehaviour.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "migration/wire.hpp"
#include "transport/listener.hpp"

namespace uffdm::test {

enum class Misbehaviour {
    PageOutsideRegion,    // a PAGES run past the end of its region
    ShortPage,            // a PAGES frame one byte shorter than its pages
    WrongHash,            // a page whose content does not match the hash sent with it
    DiesMidRun,           // the connection reset after the honest pages
    SecondLayout,         // LAYOUT again, on the urgent connection
    PagesBeforeStart,     // PAGES right behind LAYOUT, before the destination said START
    UnrequestedAnswer,    // an answer (PAGES flagged answer) for a page nobody requested
    StreamOnUrgent,       // a stream run on the urgent connection while bulk carries the stream
    AnswerOnBulk,         // an answer on a bulk connection
    FalseStreamEnd,       // STREAM_END counting one page more than the bulk connection carried
    PagesAfterStreamEnd,  // a true STREAM_END, then more PAGES on that bulk connection
    // A live source (LAYOUT's live flag): the honest pages are precopy round 0.
    LiveFalseRoundEnd,             // ROUND_END counting one page more than the round carried
    LiveSwitchoverBeforeRoundEnd,  // SWITCHOVER while round 0's pages were never ended
    LiveSwitchoverMiscounted,      // after ROUND_DONE: DISCARD one page, SWITCHOVER says two
    LiveDiscardOutOfRange,         // DISCARD naming a region the guest does not have
    LiveDiscardAfterSwitchover,    // a true switchover (one page discarded), RUNNING, DISCARD
    LiveRoundEndAfterSwitchover,   // a true switchover, RUNNING, then ROUND_END again
    RoundEndFromPausedSource,      // ROUND_END from a source whose LAYOUT said it is not live
    // Compressed runs (version 3), each of one page.
    Lz4Corrupt,       // an lz4 block that is not one
    Lz4ShortRun,      // a true lz4 block of half a page, for a one-page run
    ZstdBomb,         // a zstd frame stating (and holding) two pages, for a one-page run
    Lz4Unnegotiated,  // a true lz4 run to a destination that did not accept lz4
};

[[nodiscard]] constexpr bool is_live(Misbehaviour what) {
    return what >= Misbehaviour::LiveFalseRoundEnd &&
           what <= Misbehaviour::LiveRoundEndAfterSwitchover;
}

// Listens on loopback (no authentication) and serves one destination on its own thread: LAYOUT,
// then after START `honest_pages` pages of region 0 on the first bulk connection (the urgent
// one if the destination has none; each page filled with honest_byte(page)), then the
// misbehaviour. Requests are never answered: a guest thread waiting for a page past the honest
// ones stays blocked. The last page of region 0 is never requested by the tests.
class FakeSource {
  public:
    FakeSource(migration::wire::Layout layout, std::uint64_t honest_pages, Misbehaviour what);
    ~FakeSource();
    FakeSource(const FakeSource&) = delete;
    FakeSource& operator=(const FakeSource&) = delete;

    [[nodiscard]] std::string endpoint() const { return endpoint_; }
    // Before misbehaving, wait (at most 10 s) until `ready` holds: a misbehaviour on the urgent
    // connection could otherwise overtake the honest pages on a bulk one. Set before the
    // destination connects.
    void misbehave_once(std::function<bool()> ready) {
        std::lock_guard lock(ready_mutex_);
        ready_ = std::move(ready);
    }
    [[nodiscard]] bool misbehaved() const { return misbehaved_.load(); }
    static std::byte honest_byte(std::uint64_t page) {
        return static_cast<std::byte>(page % 251 + 1);
    }

  private:
    transport::asio::awaitable<void> serve(std::shared_ptr<transport::Connection> urgent);

    migration::wire::Layout layout_;
    std::uint64_t honest_pages_;
    Misbehaviour what_;
    transport::asio::io_context io_;
    std::shared_ptr<transport::Listener> listener_;
    std::string endpoint_;
    std::atomic<bool> misbehaved_{false};
    std::mutex ready_mutex_;
    std::function<bool()> ready_;  // under ready_mutex_
    std::vector<std::shared_ptr<transport::Connection>> held_;
    std::thread thread_;
};

}  // namespace uffdm::test
