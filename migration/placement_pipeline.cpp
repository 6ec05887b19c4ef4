// placement_pipeline.cpp — Runs kept in the receive rings, and the threads that place them.
#include "migration/placement_pipeline.hpp"

#include <algorithm>

#include "migration/compression.hpp"
#include "migration/data_paths.hpp"

namespace uffdm::migration {

// What a placing thread owns: the buffer compressed runs are expanded into.
struct PlacementPipeline::Worker {
    RunExpander expander;
};

PlacementPipeline::PlacementPipeline(Placer& placer, const wire::Layout& layout,
                                     std::size_t threads)
    : placer_(placer), layout_(layout) {
    for (std::size_t i = 0; i < threads; ++i) {
        workers_.push_back(std::make_unique<Worker>());
        threads_.emplace_back([this, worker = workers_.back().get()] {
            name_this_thread("uffdm-d-place");
            work(*worker);
        });
    }
}

PlacementPipeline::~PlacementPipeline() {
    stop();
}

void PlacementPipeline::place(Worker& worker, const Job& job) {
    auto expanded = worker.expander.expand(job.run, layout_);
    if (!expanded) {
        job.done(std::unexpected(expanded.error()), job.run.header.count);
        return;
    }
    job.done(placer_.place(*expanded, Path::Background), job.run.header.count);
}

void PlacementPipeline::submit(std::uint32_t channel, const wire::PagesView& run, Release release,
                               Done done) {
    Job job{channel, run, std::move(release), std::move(done)};
    std::lock_guard lock(mutex_);
    if (stopping_) {
        return;  // dropped: the migration is over or failed
    }
    queue_.push_back(std::move(job));
    changed_.notify_all();
}

void PlacementPipeline::work(Worker& worker) {
    for (;;) {
        Job job;
        {
            std::unique_lock lock(mutex_);
            changed_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
            if (stopping_) {
                return;
            }
            job = std::move(queue_.front());
            queue_.pop_front();
            in_flight_.push_back(job.channel);
        }
        place(worker, job);
        job.release();
        std::lock_guard lock(mutex_);
        in_flight_.erase(std::find(in_flight_.begin(), in_flight_.end(), job.channel));
        changed_.notify_all();
    }
}

bool PlacementPipeline::drain() {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return stopping_ || (queue_.empty() && in_flight_.empty()); });
    return !stopping_;
}

void PlacementPipeline::forget(std::uint32_t channel) {
    std::unique_lock lock(mutex_);
    std::erase_if(queue_, [&](const Job& job) { return job.channel == channel; });
    changed_.wait(lock, [&] {
        return std::find(in_flight_.begin(), in_flight_.end(), channel) == in_flight_.end();
    });
}

void PlacementPipeline::stop() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
        queue_.clear();
        changed_.notify_all();
    }
    for (auto& t : threads_) {
        if (t.joinable()) {
            t.join();
        }
    }
}

}  // namespace uffdm::migration
