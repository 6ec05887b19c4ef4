// fault_waits.hpp — Which threads wait on which missing page since when: fault latency per fault.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "migration/latency_histogram.hpp"

namespace uffdm::migration {

using Clock = std::chrono::steady_clock;

// The fault thread adds each fault as it reads it; whoever places the page completes it, and
// every fault waiting on it yields one latency sample (fault read -> page placed) and adds to
// its thread's blocked time. Only pages somebody faulted on are here, so the map stays small.
class FaultWaits {
  public:
    void add(std::uint32_t region, std::uint64_t page, Clock::time_point when,
             std::uint32_t thread_id);
    // The page is present now; false when nobody was waiting.
    bool complete(std::uint32_t region, std::uint64_t page, Clock::time_point placed);

    [[nodiscard]] const LatencyHistogram& latency() const noexcept { return latency_; }
    [[nodiscard]] std::uint64_t threads() const;
    [[nodiscard]] double max_thread_blocked_ms() const;

  private:
    struct Wait {
        Clock::time_point since;
        std::uint32_t thread_id;
    };
    static std::uint64_t key(std::uint32_t region, std::uint64_t page) noexcept {
        return (std::uint64_t{region} << 48) | page;
    }

    mutable std::mutex mutex_;  // guards waiting_, blocked_ns_ and latency_
    std::unordered_map<std::uint64_t, std::vector<Wait>> waiting_;
    std::unordered_map<std::uint32_t, std::uint64_t> blocked_ns_;
    LatencyHistogram latency_;
};

}  // namespace uffdm::migration
