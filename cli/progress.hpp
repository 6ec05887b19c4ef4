// progress.hpp — A one-line progress bar on a terminal: pages present, rate, ETA.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace uffdm::cli {

// Draws on stderr only when it is a terminal (a pipe or a log file gets nothing), at most ten
// times a second, and clears its line when done.
class ProgressBar {
  public:
    explicit ProgressBar(std::string label, std::FILE* out = stderr);
    ~ProgressBar();
    ProgressBar(const ProgressBar&) = delete;
    ProgressBar& operator=(const ProgressBar&) = delete;

    // done/total units (pages), bytes so far (for the rate), and a free-form tail ("faults 12").
    void update(std::uint64_t done, std::uint64_t total, std::uint64_t bytes,
                const std::string& tail = "");
    void finish();
    [[nodiscard]] bool enabled() const noexcept { return enabled_; }

  private:
    std::string label_;
    std::FILE* out_;
    bool enabled_;
    bool drawn_ = false;
    std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
    std::chrono::steady_clock::time_point last_{};
};

}  // namespace uffdm::cli
