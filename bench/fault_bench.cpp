// fault_bench.cpp — Local fault round trip per memory kind, against an eventfd ping-pong floor.
#include <sys/mman.h>

#include <atomic>
#include <chrono>
#include <optional>
#include <thread>

#include "bench/bench_support.hpp"
#include "uffd/event_fd.hpp"
#include "uffd/fault_reader.hpp"
#include "uffd/mapping.hpp"
#include "uffd/userfault_fd.hpp"

namespace uffdm::bench {
namespace {

using Clock = std::chrono::steady_clock;

// The floor: one thread wakes another through an eventfd and is woken back through a second,
// both waiting in poll(2) + read(2) like the fault reader does. A fault round trip cannot be
// cheaper than two such wake-ups.
void BM_EventFdPingPong(benchmark::State& state) {
    auto ping = uffd::EventFd::create();
    auto pong = uffd::EventFd::create();
    std::atomic<bool> stop{false};
    std::thread peer([&] {
        while (true) {
            (void)ping->wait();
            if (stop.load(std::memory_order_acquire)) {
                return;
            }
            (void)pong->signal();
        }
    });
    std::vector<double> samples;
    samples.reserve(1 << 16);
    for (auto _ : state) {
        auto start = Clock::now();
        (void)ping->signal();
        (void)pong->wait();
        double ns = std::chrono::duration<double, std::nano>(Clock::now() - start).count();
        samples.push_back(ns);
        state.SetIterationTime(ns / 1e9);
    }
    stop.store(true, std::memory_order_release);
    (void)ping->signal();
    peer.join();
    Latency latency = report_latency(state, samples);
    Floors::instance().set("eventfd_p50_ns", latency.p50_ns, state.iterations());
    Floors::instance().set("eventfd_p99_ns", latency.p99_ns, state.iterations());
}
BENCHMARK(BM_EventFdPingPong)->UseManualTime()->Iterations(20000);

// A fresh registered mapping and a reader thread that resolves each fault with UFFDIO_COPY.
class FaultRig {
  public:
    FaultRig(const uffd::UserfaultFd& fd, uffd::MemoryKind kind, std::size_t pages)
        : fd_(fd), kind_(kind), pages_(pages) {}

    bool refill() {
        registration_.reset();
        mapping_.reset();
        std::size_t page =
            kind_ == uffd::MemoryKind::Hugetlb ? uffd::kHugePageSize : uffd::base_page_size();
        auto m = uffd::Mapping::create(kind_, pages_ * page);
        if (!m) {
            error_ = m.error().message();
            return false;
        }
        mapping_.emplace(std::move(*m));
        auto r = fd_.register_mapping(*mapping_, uffd::RegisterModes::missing_only());
        if (!r) {
            error_ = r.error().message();
            return false;
        }
        registration_.emplace(std::move(*r));
        next_ = 0;
        return true;
    }
    [[nodiscard]] bool exhausted() const { return next_ >= pages_; }
    std::byte* next_page() { return mapping_->page(next_++); }
    [[nodiscard]] const std::string& error() const { return error_; }

  private:
    const uffd::UserfaultFd& fd_;
    uffd::MemoryKind kind_;
    std::size_t pages_;
    std::optional<uffd::Mapping> mapping_;
    std::optional<uffd::Registration> registration_;
    std::size_t next_ = 0;
    std::string error_;
};

void BM_LocalFaultRoundTrip(benchmark::State& state) {
    auto kind = static_cast<uffd::MemoryKind>(state.range(0));
    std::size_t page =
        kind == uffd::MemoryKind::Hugetlb ? uffd::kHugePageSize : uffd::base_page_size();
    uffd::OpenOptions options;
    options.optional =
        uffd::FeatureSet{uffd::Feature::MissingShmem, uffd::Feature::MissingHugetlbfs};
    auto fd = uffd::UserfaultFd::open(options);
    if (!fd) {
        state.SkipWithError(("userfaultfd: " + fd.error().message()).c_str());
        return;
    }
    FaultRig rig(*fd, kind, kind == uffd::MemoryKind::Hugetlb ? 8 : 4096);
    if (!rig.refill()) {
        state.SkipWithError(("memory unavailable: " + rig.error()).c_str());
        return;
    }
    std::vector<std::byte> source(page, std::byte{0x5a});
    auto stop = uffd::EventFd::create();
    std::thread server([&] {
        uffd::FaultReader reader(*fd, *stop);
        for (;;) {
            auto batch = reader.next();
            if (!batch || batch->stopped) {
                return;
            }
            for (auto& event : batch->events) {
                if (auto* fault = std::get_if<uffd::PageFault>(&event)) {
                    std::uint64_t at = fault->page(page);
                    if (!fd->copy(at, source.data(), page)) {
                        (void)fd->wake(at, page);
                    }
                }
            }
        }
    });
    std::vector<double> samples;
    for (auto _ : state) {
        if (rig.exhausted()) {
            state.PauseTiming();
            rig.refill();
            state.ResumeTiming();
        }
        volatile std::byte* p = rig.next_page();
        auto start = Clock::now();
        std::byte value = p[0];
        double ns = std::chrono::duration<double, std::nano>(Clock::now() - start).count();
        benchmark::DoNotOptimize(value);
        samples.push_back(ns);
        state.SetIterationTime(ns / 1e9);
    }
    (void)stop->signal();
    server.join();
    Latency latency = report_latency(state, samples);
    add_ratio(state, "p50_x_eventfd", latency.p50_ns, "eventfd_p50_ns");
    add_ratio(state, "p99_x_eventfd", latency.p99_ns, "eventfd_p99_ns");
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * page));
    state.SetLabel(std::string(uffdm::to_string(kind)));
}
BENCHMARK(BM_LocalFaultRoundTrip)
    ->ArgName("kind")
    ->Arg(static_cast<int>(uffd::MemoryKind::Anonymous))
    ->Arg(static_cast<int>(uffd::MemoryKind::Shmem))
    ->UseManualTime()
    ->Iterations(20000);
BENCHMARK(BM_LocalFaultRoundTrip)
    ->ArgName("kind")
    ->Arg(static_cast<int>(uffd::MemoryKind::Hugetlb))
    ->UseManualTime()
    ->Iterations(200);

}  // namespace
}  // namespace uffdm::bench
