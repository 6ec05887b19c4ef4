// fault_waits.cpp — Recording waits and turning them into latency samples.
#include "migration/fault_waits.hpp"

#include <algorithm>

namespace uffdm::migration {

void FaultWaits::add(std::uint32_t region, std::uint64_t page, Clock::time_point when,
                     std::uint32_t thread_id) {
    std::lock_guard lock(mutex_);
    waiting_[key(region, page)].push_back({when, thread_id});
}

bool FaultWaits::complete(std::uint32_t region, std::uint64_t page, Clock::time_point placed) {
    std::vector<Wait> waits;
    {
        std::lock_guard lock(mutex_);
        auto it = waiting_.find(key(region, page));
        if (it == waiting_.end()) {
            return false;
        }
        waits = std::move(it->second);
        waiting_.erase(it);
        for (const Wait& w : waits) {
            auto ns = static_cast<std::uint64_t>(std::max<std::int64_t>(
                0, std::chrono::duration_cast<std::chrono::nanoseconds>(placed - w.since).count()));
            blocked_ns_[w.thread_id] += ns;
        }
    }
    for (const Wait& w : waits) {
        auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(placed - w.since).count();
        latency_.record(static_cast<std::uint64_t>(std::max<std::int64_t>(0, ns)));
    }
    return true;
}

std::uint64_t FaultWaits::threads() const {
    std::lock_guard lock(mutex_);
    return blocked_ns_.size();
}

double FaultWaits::max_thread_blocked_ms() const {
    std::lock_guard lock(mutex_);
    std::uint64_t most = 0;
    for (const auto& [tid, ns] : blocked_ns_) {
        most = std::max(most, ns);
    }
    return static_cast<double>(most) / 1e6;
}

}  // namespace uffdm::migration
