// bench_support.hpp — Percentiles and same-run floors shared by the benchmark programs.
#pragma once

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace uffdm::bench {

// Nearest-rank percentile of samples (sorted in place).
inline double percentile(std::vector<double>& samples, double p) {
    if (samples.empty()) {
        return 0;
    }
    std::sort(samples.begin(), samples.end());
    auto index = static_cast<std::size_t>(p / 100.0 * static_cast<double>(samples.size() - 1));
    return samples[index];
}

// Floors measured earlier in the same process run, by name (e.g. "eventfd_p50_ns").
// Google Benchmark calls a benchmark several times with growing iteration counts before the
// run it reports, and once per repetition; get() is the median over the runs with at least
// half the largest iteration count, so the short calibration runs do not count.
class Floors {
  public:
    static Floors& instance() {
        static Floors floors;
        return floors;
    }
    void set(const std::string& name, double value, std::int64_t iterations) {
        std::lock_guard lock(mutex_);
        values_[name].emplace_back(iterations, value);
    }
    [[nodiscard]] double get(const std::string& name) const {
        std::lock_guard lock(mutex_);
        auto it = values_.find(name);
        if (it == values_.end()) {
            return 0;
        }
        std::int64_t most = 0;
        for (const auto& [iterations, value] : it->second) {
            most = std::max(most, iterations);
        }
        std::vector<double> kept;
        for (const auto& [iterations, value] : it->second) {
            if (2 * iterations >= most) {
                kept.push_back(value);
            }
        }
        return percentile(kept, 50);
    }

  private:
    mutable std::mutex mutex_;
    std::map<std::string, std::vector<std::pair<std::int64_t, double>>> values_;
};

// Adds "<name>_x" = value / floor when the floor was measured in this run.
inline void add_ratio(benchmark::State& state, const std::string& counter, double value,
                      const std::string& floor) {
    double base = Floors::instance().get(floor);
    if (base > 0) {
        state.counters[counter] = value / base;
    }
}

struct Latency {
    double p50_ns = 0;
    double p99_ns = 0;
};

// Sets the p50_ns and p99_ns counters from per-iteration samples and returns them.
inline Latency report_latency(benchmark::State& state, std::vector<double>& samples) {
    Latency latency{percentile(samples, 50), percentile(samples, 99)};
    state.counters["p50_ns"] = latency.p50_ns;
    state.counters["p99_ns"] = latency.p99_ns;
    return latency;
}

}  // namespace uffdm::bench
