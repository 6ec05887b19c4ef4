// bandwidth_cap.hpp — The background stream's cap on the wire: a token bucket in bytes.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>

namespace uffdm::migration {

// QEMU's max-postcopy-bandwidth for this source: the stream may put `rate` bytes a second on
// the wire, with a burst of 10 ms of it (at least 512 KiB: two bulk frames), so that a
// migration leaves the link's rest to the guest's own traffic. Answers to faults never ask.
// Called by the loop that streams; the wake-up it schedules runs elsewhere.
class BandwidthCap {
  public:
    using Clock = std::chrono::steady_clock;

    explicit BandwidthCap(std::uint64_t bytes_per_second);

    [[nodiscard]] bool capped() const noexcept { return rate_ > 0; }
    // Whether a frame may go now. When not, the time at which one may (the caller arranges to
    // be asked again then).
    [[nodiscard]] std::optional<Clock::time_point> wait_until(Clock::time_point now);
    // A frame of `bytes` went (it may take the bucket below zero: the debt delays the next).
    void spend(std::uint64_t bytes, Clock::time_point now);
    [[nodiscard]] double waited_seconds() const;

  private:
    void refill(Clock::time_point now);

    double rate_;
    double burst_;
    mutable std::mutex mutex_;
    double tokens_;
    Clock::time_point last_{};
    std::optional<Clock::time_point> waiting_since_;
    Clock::duration waited_{};
};

}  // namespace uffdm::migration
