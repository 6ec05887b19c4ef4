// placement_pipeline.hpp — Background runs placed on threads of their own, so that the bulk
// loop goes on receiving while earlier runs are copied into guest memory.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <expected>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "migration/placer.hpp"
#include "migration/wire.hpp"

namespace uffdm::migration {

// The bulk loop hands each validated run here as it lies in the receive ring (the frame is
// kept there: transport::FrameView::keep) and goes on receiving; placement threads expand
// compressed runs and place them, several at once, and give each frame's ring space back.
// Nothing is copied on the way: the ring is the queue, and a ring full of runs waiting for
// placement stops the loop reading, so TCP pushes back on the source. Answers to faults
// never come here: the urgent loop places them itself, ahead of anything queued, and a page
// placed by both is placed once (the present bitmap, EEXIST). With no threads the bulk loop
// places each run itself and submits nothing.
class PlacementPipeline {
  public:
    // After a run is placed (or failed), on the thread that placed it.
    using Done = std::function<void(const std::expected<void, transport::Failure>& placed,
                                    std::uint64_t pages)>;
    // The run's frame is no longer read: its ring space may be written again. Called once per
    // run that was queued and taken, after done; not for runs dropped by forget() or stop().
    using Release = std::function<void()>;

    PlacementPipeline(Placer& placer, const wire::Layout& layout, std::size_t threads);
    PlacementPipeline(const PlacementPipeline&) = delete;
    PlacementPipeline& operator=(const PlacementPipeline&) = delete;
    ~PlacementPipeline();  // stop()

    [[nodiscard]] bool threaded() const noexcept { return !threads_.empty(); }
    // Only when threaded(): run views a frame of `channel` kept in its receive ring.
    void submit(std::uint32_t channel, const wire::PagesView& run, Release release, Done done);
    // Until every run submitted before this call is placed (STREAM_END counts what was
    // placed). False once stopped.
    bool drain();
    // The channel is ending and its ring goes with it: its runs still queued are dropped (their
    // pages are still missing, and a new session asks for them), the ones being placed are
    // waited for. From the channel's on_closed.
    void forget(std::uint32_t channel);
    // Runs still queued are dropped, placement threads joined. Idempotent.
    void stop();

    [[nodiscard]] std::size_t threads() const noexcept { return threads_.size(); }

  private:
    struct Job {
        std::uint32_t channel = 0;
        wire::PagesView run;
        Release release;
        Done done;
    };
    struct Worker;
    void work(Worker& worker);
    void place(Worker& worker, const Job& job);

    Placer& placer_;
    const wire::Layout& layout_;
    mutable std::mutex mutex_;  // guards everything below
    std::condition_variable changed_;
    std::deque<Job> queue_;
    std::vector<std::uint32_t> in_flight_;  // the channel of each run taken and not yet done
    bool stopping_ = false;
    std::vector<std::unique_ptr<Worker>> workers_;
    std::vector<std::thread> threads_;
};

}  // namespace uffdm::migration
