// latency_histogram.cpp — Bucket arithmetic and percentiles.
#include "migration/latency_histogram.hpp"

#include <bit>
#include <cmath>

namespace uffdm::migration {

std::size_t LatencyHistogram::index_of(std::uint64_t ns) noexcept {
    if (ns < 32) {
        return static_cast<std::size_t>(ns);
    }
    // shift so that ns >> shift is in [32, 64).
    unsigned shift = static_cast<unsigned>(std::bit_width(ns)) - kSubBits - 1;
    std::size_t index = (shift + 1) * 32 + static_cast<std::size_t>((ns >> shift) - 32);
    return index < kBuckets ? index : kBuckets - 1;
}

double LatencyHistogram::lower_bound(std::size_t index) noexcept {
    if (index < 32) {
        return static_cast<double>(index);
    }
    std::size_t shift = index / 32 - 1;
    return std::ldexp(static_cast<double>(32 + index % 32), static_cast<int>(shift));
}

double LatencyHistogram::upper_bound(std::size_t index) noexcept {
    return index + 1 < kBuckets ? lower_bound(index + 1) : lower_bound(index) * 2;
}

void LatencyHistogram::record(std::uint64_t ns) noexcept {
    buckets_[index_of(ns)].fetch_add(1, std::memory_order_relaxed);
    count_.fetch_add(1, std::memory_order_relaxed);
    sum_.fetch_add(ns, std::memory_order_relaxed);
    std::uint64_t seen = max_.load(std::memory_order_relaxed);
    while (ns > seen && !max_.compare_exchange_weak(seen, ns, std::memory_order_relaxed)) {
    }
}

double LatencyHistogram::percentile_ns(double p) const noexcept {
    std::uint64_t total = count_.load(std::memory_order_relaxed);
    if (total == 0) {
        return 0;
    }
    auto rank = static_cast<std::uint64_t>(std::ceil(p * static_cast<double>(total)));
    rank = rank == 0 ? 1 : rank;
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < kBuckets; ++i) {
        seen += buckets_[i].load(std::memory_order_relaxed);
        if (seen >= rank) {
            double mid = (lower_bound(i) + upper_bound(i)) / 2;
            return std::min(mid, static_cast<double>(max_.load(std::memory_order_relaxed)));
        }
    }
    return static_cast<double>(max_.load(std::memory_order_relaxed));
}

LatencyStats LatencyHistogram::summary() const noexcept {
    LatencyStats s;
    s.count = count_.load(std::memory_order_relaxed);
    if (s.count == 0) {
        return s;
    }
    s.mean_us = static_cast<double>(sum_.load(std::memory_order_relaxed)) /
                static_cast<double>(s.count) / 1000.0;
    s.p50_us = percentile_ns(0.50) / 1000.0;
    s.p90_us = percentile_ns(0.90) / 1000.0;
    s.p99_us = percentile_ns(0.99) / 1000.0;
    s.p999_us = percentile_ns(0.999) / 1000.0;
    s.max_us = static_cast<double>(max_.load(std::memory_order_relaxed)) / 1000.0;
    return s;
}

}  // namespace uffdm::migration
