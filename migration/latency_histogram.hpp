// latency_histogram.hpp — A lock-free log-linear histogram of nanosecond latencies.
#pragma once

#include <uffdm/report.hpp>

#include <array>
#include <atomic>
#include <cstdint>

namespace uffdm::migration {

// 32 buckets per power of two (values within ~3 %), 1 ns .. ~18 minutes; record() is a few
// relaxed atomic adds, so placement threads record on the hot path without a lock.
class LatencyHistogram {
  public:
    void record(std::uint64_t ns) noexcept;
    [[nodiscard]] LatencyStats summary() const noexcept;
    // The value below which fraction p of the samples lie (the bucket's midpoint).
    [[nodiscard]] double percentile_ns(double p) const noexcept;
    // Every non-empty bucket as (upper bound ns, count), for a CDF plot.
    template <typename Fn>
    void for_each_bucket(Fn&& fn) const {
        for (std::size_t i = 0; i < kBuckets; ++i) {
            if (auto n = buckets_[i].load(std::memory_order_relaxed); n != 0) {
                fn(upper_bound(i), n);
            }
        }
    }

  private:
    static constexpr unsigned kSubBits = 5;
    static constexpr std::size_t kBuckets = 38 * 32;
    static std::size_t index_of(std::uint64_t ns) noexcept;
    static double lower_bound(std::size_t index) noexcept;
    static double upper_bound(std::size_t index) noexcept;

    std::array<std::atomic<std::uint64_t>, kBuckets> buckets_{};
    std::atomic<std::uint64_t> count_{0};
    std::atomic<std::uint64_t> sum_{0};
    std::atomic<std::uint64_t> max_{0};
};

}  // namespace uffdm::migration
