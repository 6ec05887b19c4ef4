// workload.cpp — Page choice per pattern (Zipf by rejection-inversion), user and kernel touches.
#include "cli/workload.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <random>

namespace uffdm::cli {

namespace {

// Rejection-inversion sampling of a Zipf distribution over 1..n (Hörmann and Derflinger,
// as in Apache Commons RNG): O(1) per sample, no table.
class ZipfSampler {
  public:
    ZipfSampler(std::uint64_t n, double exponent) : n_(static_cast<double>(n)), s_(exponent) {
        h_x1_ = h_integral(1.5) - 1.0;
        h_n_ = h_integral(n_ + 0.5);
        threshold_ = 2.0 - h_integral_inverse(h_integral(2.5) - h(2.0));
    }
    template <typename Rng>
    std::uint64_t operator()(Rng& rng) const {
        std::uniform_real_distribution<double> unit(0.0, 1.0);
        for (;;) {
            double u = h_n_ + unit(rng) * (h_x1_ - h_n_);
            double x = h_integral_inverse(u);
            double k = std::clamp(std::floor(x + 0.5), 1.0, n_);
            if (k - x <= threshold_ || u >= h_integral(k + 0.5) - h(k)) {
                return static_cast<std::uint64_t>(k) - 1;
            }
        }
    }

  private:
    static double helper1(double x) {
        return std::abs(x) > 1e-8 ? std::log1p(x) / x
                                  : 1.0 - x * (0.5 - x * (1.0 / 3.0 - 0.25 * x));
    }
    static double helper2(double x) {
        return std::abs(x) > 1e-8 ? std::expm1(x) / x
                                  : 1.0 + x * 0.5 * (1.0 + x / 3.0 * (1.0 + 0.25 * x));
    }
    double h(double x) const { return std::exp(-s_ * std::log(x)); }
    double h_integral(double x) const {
        double log_x = std::log(x);
        return helper2((1.0 - s_) * log_x) * log_x;
    }
    double h_integral_inverse(double x) const {
        double t = std::max(x * (1.0 - s_), -1.0);
        return std::exp(helper1(t) * x);
    }

    double n_;
    double s_;
    double h_x1_;
    double h_n_;
    double threshold_;
};

void record(std::vector<double>& samples, std::chrono::steady_clock::time_point start) {
    if (samples.size() < Vcpus::kMaxSamples) {
        samples.push_back(
            std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start)
                .count());
    }
}

}  // namespace

std::expected<Workload, std::string> parse_workload(std::string_view text) {
    for (Workload w : {Workload::Random, Workload::Sequential, Workload::Zipf, Workload::Io}) {
        if (text == to_string(w)) {
            return w;
        }
    }
    return std::unexpected("workload '" + std::string(text) + "' is not random, seq, zipf or io");
}

std::string_view to_string(Workload workload) noexcept {
    switch (workload) {
        case Workload::Random:
            return "random";
        case Workload::Sequential:
            return "seq";
        case Workload::Zipf:
            return "zipf";
        case Workload::Io:
            return "io";
    }
    return "random";
}

Vcpus::Vcpus(std::vector<std::pair<std::byte*, std::size_t>> regions, const SyntheticGuest& guest,
             Workload workload, unsigned count, std::uint64_t touches, PageCheck check)
    : regions_(std::move(regions)),
      guest_(guest),
      check_(std::move(check)),
      workload_(workload),
      count_(count),
      finished_(count, started_),
      samples_(count) {
    for (unsigned i = 0; i < count; ++i) {
        threads_.emplace_back([this, i, touches] { run(i, touches); });
    }
}

Vcpus::~Vcpus() {
    stop();
    for (auto& t : threads_) {
        if (t.joinable()) {
            t.join();
        }
    }
}

VcpuTotals Vcpus::join() {
    for (auto& t : threads_) {
        if (t.joinable()) {
            t.join();
        }
    }
    VcpuTotals totals{touches_.load(), wrong_.load(), io_errors_.load(), {}, 0};
    for (unsigned i = 0; i < count_; ++i) {
        totals.touch_ns.insert(totals.touch_ns.end(), samples_[i].begin(), samples_[i].end());
        totals.seconds = std::max(totals.seconds,
                                  std::chrono::duration<double>(finished_[i] - started_).count());
    }
    return totals;
}

void Vcpus::run(unsigned index, std::uint64_t touches) {
    const std::uint64_t page_size = guest_.page_size;
    std::vector<std::uint64_t> first_page;  // global page index where each region starts
    std::uint64_t total = 0;
    for (const auto& [data, length] : regions_) {
        first_page.push_back(total);
        total += length / page_size;
    }
    std::mt19937_64 rng(guest_.seed * 1000 + index);
    std::uniform_int_distribution<std::uint64_t> uniform(0, total - 1);
    ZipfSampler zipf(total, 1.1);
    std::uint64_t cursor = total / count_ * index;
    int pipe_fds[2] = {-1, -1};
    if (workload_ == Workload::Io && ::pipe2(pipe_fds, O_CLOEXEC) < 0) {
        io_errors_.fetch_add(1);
        return;
    }
    std::vector<std::byte> copy(std::min<std::uint64_t>(page_size, 4096));
    std::vector<double>& samples = samples_[index];
    samples.reserve(touches == 0 ? 4096 : std::min<std::uint64_t>(touches, kMaxSamples));
    for (std::uint64_t n = 0;
         (touches == 0 || n < touches) && !stop_.load(std::memory_order_relaxed); ++n) {
        std::uint64_t global = 0;
        switch (workload_) {
            case Workload::Sequential:
                global = cursor++ % total;
                break;
            case Workload::Zipf:
                // Rank r is the r-th hottest page; a fixed odd multiplier scatters the ranks.
                global = (zipf(rng) * 0x9e3779b97f4a7c15ULL) % total;
                break;
            case Workload::Random:
            case Workload::Io:
                global = uniform(rng);
                break;
        }
        auto region = static_cast<std::uint32_t>(
            std::upper_bound(first_page.begin(), first_page.end(), global) - first_page.begin() -
            1);
        std::uint64_t page = global - first_page[region];
        std::byte* address = regions_[region].first + page * page_size;
        auto touch_start = std::chrono::steady_clock::now();
        if (workload_ == Workload::Io) {
            // copy_from_user in write(2) faults on the missing page in kernel mode.
            bool written =
                ::write(pipe_fds[1], address, copy.size()) == static_cast<ssize_t>(copy.size());
            record(samples, touch_start);
            if (!written ||
                ::read(pipe_fds[0], copy.data(), copy.size()) !=
                    static_cast<ssize_t>(copy.size()) ||
                std::memcmp(copy.data(), address, copy.size()) != 0) {
                io_errors_.fetch_add(1);
            }
        } else {
            (void)*reinterpret_cast<volatile const std::byte*>(address);
            record(samples, touch_start);
        }
        if (check_ ? !check_(region, page, address)
                   : !synthetic_page_matches(guest_, region, page, address)) {
            wrong_.fetch_add(1);
        }
        touches_.fetch_add(1, std::memory_order_relaxed);
    }
    if (pipe_fds[0] >= 0) {
        ::close(pipe_fds[0]);
        ::close(pipe_fds[1]);
    }
    finished_[index] = std::chrono::steady_clock::now();
}

}  // namespace uffdm::cli
