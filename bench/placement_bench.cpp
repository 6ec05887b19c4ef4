// placement_bench.cpp — Placement throughput (COPY, ZEROPAGE, CONTINUE, MOVE) beside memcpy.
#include <sys/mman.h>

#include <chrono>
#include <cstring>
#include <optional>

#include "bench/bench_support.hpp"
#include "uffd/mapping.hpp"
#include "uffd/userfault_fd.hpp"

namespace uffdm::bench {
namespace {

constexpr std::size_t kArena = 256ULL << 20;  // placements per fresh arena

using Clock = std::chrono::steady_clock;

// Wall time of the timed part of a benchmark loop: total minus the paused stretches.
class BusyTime {
  public:
    void start() { begin_ = Clock::now(); }
    void pause() { paused_at_ = Clock::now(); }
    void resume() { paused_ += Clock::now() - paused_at_; }
    [[nodiscard]] double seconds() const {
        return std::chrono::duration<double>(Clock::now() - begin_ - paused_).count();
    }

  private:
    Clock::time_point begin_;
    Clock::time_point paused_at_;
    Clock::duration paused_{};
};

std::string memcpy_floor(std::size_t run) {
    return "memcpy_Bps_" + std::to_string(run);
}

// The floor: memcpy of the same run size into memory that is already present.
void BM_Memcpy(benchmark::State& state) {
    auto run = static_cast<std::size_t>(state.range(0));
    std::vector<std::byte> source(run, std::byte{0x33});
    std::vector<std::byte> target(kArena / 8);
    std::memset(target.data(), 1, target.size());
    std::size_t offset = 0;
    BusyTime busy;
    busy.start();
    for (auto _ : state) {
        if (offset + run > target.size()) {
            offset = 0;
        }
        std::memcpy(target.data() + offset, source.data(), run);
        benchmark::ClobberMemory();
        offset += run;
    }
    double seconds = busy.seconds();
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * run));
    Floors::instance().set(memcpy_floor(run),
                           static_cast<double>(state.iterations() * run) / seconds,
                           static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_Memcpy)->Arg(4 << 10)->Arg(64 << 10)->Arg(2 << 20);

enum class Op { Copy, Zeropage, Continue, Move };

// A registered arena that is replaced (outside the timed region) once it is full.
class Arena {
  public:
    Arena(const uffd::UserfaultFd& fd, uffd::MemoryKind kind, uffd::RegisterModes modes)
        : fd_(fd), kind_(kind), modes_(modes) {}

    std::string refill(bool populate_page_cache) {
        registration_.reset();
        alias_.reset();
        mapping_.reset();
        auto m = uffd::Mapping::create(kind_, kArena);
        if (!m) {
            return m.error().message();
        }
        mapping_.emplace(std::move(*m));
        if (populate_page_cache) {
            auto alias = mapping_->alias();
            if (!alias) {
                return alias.error().message();
            }
            std::memset(alias->data(), 0x44, alias->size());
            alias_.emplace(std::move(*alias));
        }
        auto r = fd_.register_mapping(*mapping_, modes_);
        if (!r) {
            return r.error().message();
        }
        registration_.emplace(std::move(*r));
        offset_ = 0;
        return "";
    }
    bool full(std::size_t run) const { return offset_ + run > kArena; }
    std::uint64_t take(std::size_t run) {
        std::uint64_t at = mapping_->address() + offset_;
        offset_ += run;
        return at;
    }

  private:
    const uffd::UserfaultFd& fd_;
    uffd::MemoryKind kind_;
    uffd::RegisterModes modes_;
    std::optional<uffd::Mapping> mapping_;
    std::optional<uffd::Mapping> alias_;
    std::optional<uffd::Registration> registration_;
    std::size_t offset_ = 0;
};

void run_placement(benchmark::State& state, Op op) {
    auto run = static_cast<std::size_t>(state.range(0));
    uffd::OpenOptions options;
    options.optional = uffd::FeatureSet{uffd::Feature::MinorShmem, uffd::Feature::Move};
    auto fd = uffd::UserfaultFd::open(options);
    if (!fd) {
        state.SkipWithError(fd.error().message().c_str());
        return;
    }
    uffd::MemoryKind kind =
        op == Op::Continue ? uffd::MemoryKind::Shmem : uffd::MemoryKind::Anonymous;
    uffd::RegisterModes modes = op == Op::Continue ? uffd::RegisterModes{.minor = true}
                                                   : uffd::RegisterModes::missing_only();
    Arena arena(*fd, kind, modes);
    if (auto error = arena.refill(op == Op::Continue); !error.empty()) {
        state.SkipWithError(error.c_str());
        return;
    }
    std::vector<std::byte> source(run, std::byte{0x33});
    // MOVE takes pages away from a populated source; refill it when it runs dry.
    std::optional<uffd::Mapping> move_source;
    std::size_t move_offset = kArena;
    BusyTime busy;
    busy.start();
    for (auto _ : state) {
        if (arena.full(run)) {
            state.PauseTiming();
            busy.pause();
            (void)arena.refill(op == Op::Continue);
            busy.resume();
            state.ResumeTiming();
        }
        if (op == Op::Move && move_offset + run > kArena) {
            state.PauseTiming();
            busy.pause();
            move_source.reset();
            move_source.emplace(std::move(*uffd::Mapping::anonymous(kArena)));
            std::memset(move_source->data(), 0x33, kArena);
            move_offset = 0;
            busy.resume();
            state.ResumeTiming();
        }
        std::uint64_t at = arena.take(run);
        std::expected<std::uint64_t, std::error_code> placed;
        switch (op) {
            case Op::Copy:
                placed = fd->copy(at, source.data(), run);
                break;
            case Op::Zeropage:
                placed = fd->zeropage(at, run);
                break;
            case Op::Continue:
                placed = fd->continue_minor(at, run);
                break;
            case Op::Move:
                placed = fd->move(at, move_source->address() + move_offset, run);
                move_offset += run;
                break;
        }
        if (!placed || *placed != run) {
            state.SkipWithError("placement failed");
            return;
        }
    }
    double seconds = busy.seconds();
    auto bytes = static_cast<double>(state.iterations() * run);
    state.SetBytesProcessed(static_cast<std::int64_t>(bytes));
    add_ratio(state, "x_memcpy", bytes / seconds, memcpy_floor(run));
    state.counters["pages_per_s"] = benchmark::Counter(
        bytes / static_cast<double>(uffd::base_page_size()), benchmark::Counter::kIsRate);
}

void BM_Copy(benchmark::State& state) {
    run_placement(state, Op::Copy);
}
void BM_Zeropage(benchmark::State& state) {
    run_placement(state, Op::Zeropage);
}
void BM_Continue(benchmark::State& state) {
    run_placement(state, Op::Continue);
}
void BM_Move(benchmark::State& state) {
    run_placement(state, Op::Move);
}

BENCHMARK(BM_Copy)->Arg(4 << 10)->Arg(64 << 10)->Arg(2 << 20);
BENCHMARK(BM_Zeropage)->Arg(4 << 10)->Arg(64 << 10);
BENCHMARK(BM_Continue)->Arg(4 << 10)->Arg(64 << 10);
BENCHMARK(BM_Move)->Arg(4 << 10)->Arg(64 << 10);

}  // namespace
}  // namespace uffdm::bench
