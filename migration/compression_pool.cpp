// compression_pool.cpp — A batch of stream runs compressed by the loop and its helpers.
#include "migration/compression_pool.hpp"

#include "migration/data_paths.hpp"

namespace uffdm::migration {

CompressionPool::CompressionPool(std::size_t helpers) {
    for (std::size_t i = 0; i < helpers; ++i) {
        threads_.emplace_back([this] {
            name_this_thread("uffdm-s-zip");
            helper();
        });
    }
}

CompressionPool::~CompressionPool() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    wake_.notify_all();
    for (auto& t : threads_) {
        t.join();
    }
}

void CompressionPool::compress(FrameBuilder& builder, std::span<FrameBuilder::Pending> batch,
                               RunCompressor& own) {
    std::lock_guard one_batch(batches_);
    {
        std::lock_guard lock(mutex_);
        builder_ = &builder;
        batch_ = batch;
        next_.store(0, std::memory_order_relaxed);
        finished_ = 0;
        ++generation_;
    }
    wake_.notify_all();
    work(builder, batch, own);
    std::unique_lock lock(mutex_);
    // Every helper that joined this batch has left it: none touches it (or next_) later.
    done_.wait(lock, [&] { return finished_ == batch.size() && active_ == 0; });
    builder_ = nullptr;
    batch_ = {};  // a helper that wakes late finds nothing to do
}

void CompressionPool::work(FrameBuilder& builder, std::span<FrameBuilder::Pending> batch,
                           RunCompressor& compressor) {
    std::size_t did = 0;
    for (std::size_t i = next_.fetch_add(1, std::memory_order_relaxed); i < batch.size();
         i = next_.fetch_add(1, std::memory_order_relaxed)) {
        builder.compress(batch[i], compressor);
        ++did;
    }
    std::lock_guard lock(mutex_);
    finished_ += did;
    if (finished_ == batch.size()) {
        done_.notify_one();
    }
}

void CompressionPool::helper() {
    RunCompressor compressor;
    std::uint64_t seen = 0;
    for (;;) {
        FrameBuilder* builder = nullptr;
        std::span<FrameBuilder::Pending> batch;
        {
            std::unique_lock lock(mutex_);
            wake_.wait(lock, [&] { return stopping_ || generation_ != seen; });
            if (stopping_) {
                return;
            }
            seen = generation_;
            if (builder_ == nullptr) {
                continue;  // that batch is over already
            }
            builder = builder_;
            batch = batch_;
            ++active_;
        }
        work(*builder, batch, compressor);
        std::lock_guard lock(mutex_);
        --active_;
        done_.notify_one();
    }
}

}  // namespace uffdm::migration
