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
class Floors {
  public:
    static Floors& instance() {
        static Floors floors;
        return floors;
    }
    void set(const std::string& name, double value) {
        std::lock_guard lock(mutex_);
        values_[name] = value;
    }
    [[nodiscard]] double get(const std::string& name) const {
        std::lock_guard lock(mutex_);
        auto it = values_.find(name);
        return it == values_.end() ? 0 : it->second;
    }

  private:
    mutable std::mutex mutex_;
    std::map<std::string, double> values_;
};

// Adds "<name>_x" = value / floor when the floor was measured in this run.
inline void add_ratio(benchmark::State& state, const std::string& counter, double value,
                      const std::string& floor) {
    double base = Floors::instance().get(floor);
    if (base > 0) {
        state.counters[counter] = value / base;
    }
}

}  // namespace uffdm::bench
