// compression_pool.hpp — Threads that compress the source's stream runs beside the loop that
// sends them, so that a costlier encoding is not bound by one core.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

#include "migration/source_pages.hpp"

namespace uffdm::migration {

// One per source, shared by its bulk loops (one batch at a time). A batch is a run of frames
// begun on a loop (FrameBuilder::begin): the loop and every helper take the next frame from
// one counter until none is left, so a batch of small runs costs one wake-up per helper, not
// one per run; the loop then finishes the frames in order. The helpers sleep between batches.
class CompressionPool {
  public:
    explicit CompressionPool(std::size_t helpers);
    ~CompressionPool();
    CompressionPool(const CompressionPool&) = delete;
    CompressionPool& operator=(const CompressionPool&) = delete;

    [[nodiscard]] std::size_t helpers() const noexcept { return threads_.size(); }
    // Compresses every frame of the batch that compresses; `own` is the calling loop's
    // compressor. Returns when all are done.
    void compress(FrameBuilder& builder, std::span<FrameBuilder::Pending> batch,
                  RunCompressor& own);

  private:
    void helper();
    void work(FrameBuilder& builder, std::span<FrameBuilder::Pending> batch,
              RunCompressor& compressor);

    std::mutex batches_;  // one batch at a time
    std::mutex mutex_;
    std::condition_variable wake_;
    std::condition_variable done_;
    FrameBuilder* builder_ = nullptr;
    std::span<FrameBuilder::Pending> batch_;
    std::atomic<std::size_t> next_{0};  // the batch's next frame, for whoever is free
    std::size_t finished_ = 0;          // frames compressed in this batch (mutex_)
    std::size_t active_ = 0;            // helpers inside this batch (mutex_)
    std::uint64_t generation_ = 0;      // batches handed out (mutex_)
    bool stopping_ = false;
    std::vector<std::thread> threads_;
};

}  // namespace uffdm::migration
