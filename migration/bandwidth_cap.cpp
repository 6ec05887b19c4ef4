// bandwidth_cap.cpp — Tokens refill at the rate, up to the burst; a frame may go at zero or more.
#include "migration/bandwidth_cap.hpp"

#include <algorithm>

namespace uffdm::migration {

BandwidthCap::BandwidthCap(std::uint64_t bytes_per_second)
    : rate_(static_cast<double>(bytes_per_second)),
      burst_(std::max(rate_ / 100, 512.0 * 1024)),
      tokens_(burst_) {}

void BandwidthCap::refill(Clock::time_point now) {
    if (last_ != Clock::time_point{}) {
        tokens_ =
            std::min(burst_, tokens_ + rate_ * std::chrono::duration<double>(now - last_).count());
    }
    last_ = now;
}

std::optional<BandwidthCap::Clock::time_point> BandwidthCap::wait_until(Clock::time_point now) {
    if (!capped()) {
        return std::nullopt;
    }
    std::lock_guard lock(mutex_);
    refill(now);
    if (tokens_ >= 0) {
        if (waiting_since_) {
            waited_ += now - *waiting_since_;
            waiting_since_.reset();
        }
        return std::nullopt;
    }
    if (!waiting_since_) {
        waiting_since_ = now;
    }
    return now + std::chrono::duration_cast<Clock::duration>(
                     std::chrono::duration<double>(-tokens_ / rate_));
}

void BandwidthCap::spend(std::uint64_t bytes, Clock::time_point now) {
    if (!capped()) {
        return;
    }
    std::lock_guard lock(mutex_);
    refill(now);
    tokens_ -= static_cast<double>(bytes);
}

double BandwidthCap::waited_seconds() const {
    std::lock_guard lock(mutex_);
    return std::chrono::duration<double>(waited_).count();
}

}  // namespace uffdm::migration
