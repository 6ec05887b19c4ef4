// workload.hpp — "vCPU" threads that touch guest memory in a pattern and check every page.
#pragma once

#include <uffdm/uffdm.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <expected>
#include <functional>
#include <string>
#include <thread>
#include <vector>

namespace uffdm::cli {

enum class Workload : std::uint8_t {
    Random,      // uniform over the guest
    Sequential,  // each vCPU scans its own slice in order
    Zipf,        // a few hot pages touched often, most rarely (s = 1.1), scattered in memory
    Io,          // the kernel touches the page: write(2) from guest memory into a pipe
};

[[nodiscard]] std::expected<Workload, std::string> parse_workload(std::string_view text);
[[nodiscard]] std::string_view to_string(Workload workload) noexcept;

struct VcpuTotals {
    std::uint64_t touches = 0;
    std::uint64_t wrong_pages = 0;  // a touched page whose bytes were not the guest's
    std::uint64_t io_errors = 0;    // write(2)/read(2) failed (EFAULT: a kernel fault refused)
    // How long each touch took as the vCPU saw it (the first byte read, or the write(2) of the
    // io workload): a fault's whole round trip, wake-ups included. At most kMaxSamples a vCPU.
    std::vector<double> touch_ns;
    double seconds = 0;  // from the start until the last vCPU finished
};

// Whether a touched page holds what it should (default: the synthetic guest's bytes).
using PageCheck = std::function<bool(std::uint32_t region, std::uint64_t page, const void* data)>;

class Vcpus {
  public:
    // Starts count threads at once. Each touches up to touches pages (0: until stop()), checking
    // the whole page against the synthetic guest each time.
    Vcpus(std::vector<std::pair<std::byte*, std::size_t>> regions, const SyntheticGuest& guest,
          Workload workload, unsigned count, std::uint64_t touches, PageCheck check = {});
    Vcpus(const Vcpus&) = delete;
    Vcpus& operator=(const Vcpus&) = delete;
    ~Vcpus();

    void stop() noexcept { stop_.store(true); }
    // Joins every thread (never call while a page they wait on may not come).
    VcpuTotals join();

    static constexpr std::size_t kMaxSamples = 1U << 18;

  private:
    void run(unsigned index, std::uint64_t touches);

    std::vector<std::pair<std::byte*, std::size_t>> regions_;
    SyntheticGuest guest_;
    PageCheck check_;
    Workload workload_;
    unsigned count_;
    std::atomic<bool> stop_{false};
    std::atomic<std::uint64_t> touches_{0};
    std::atomic<std::uint64_t> wrong_{0};
    std::atomic<std::uint64_t> io_errors_{0};
    std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
    std::vector<std::chrono::steady_clock::time_point> finished_;  // one per vCPU
    std::vector<std::vector<double>> samples_;                     // one per vCPU
    std::vector<std::thread> threads_;
};

}  // namespace uffdm::cli
