// signals.hpp — SIGINT and SIGTERM turned into a clean stop: the migration ends and reports.
#pragma once

#include <atomic>
#include <functional>
#include <thread>

namespace uffdm::cli {

// Blocks SIGINT and SIGTERM in the calling thread; threads created afterwards inherit the
// mask, so only the watcher ever takes them. Call before creating any thread.
void block_stop_signals();

// Watches for SIGINT/SIGTERM on a thread of its own and calls on_signal(number) for the first.
class StopOnSignal {
  public:
    explicit StopOnSignal(std::function<void(int)> on_signal);
    ~StopOnSignal();
    StopOnSignal(const StopOnSignal&) = delete;
    StopOnSignal& operator=(const StopOnSignal&) = delete;
    [[nodiscard]] int received() const noexcept { return received_.load(); }

  private:
    std::atomic<bool> done_{false};
    std::atomic<int> received_{0};
    std::thread watcher_;
};

}  // namespace uffdm::cli
