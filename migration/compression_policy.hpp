// compression_policy.hpp — Which encoding the source tries for each data run, and what it cost.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>

#include "migration/compression.hpp"
#include "migration/report.hpp"
#include "migration/wire.hpp"

namespace uffdm::migration {

// The encoding one run tries, and zstd's level for it.
struct RunCodec {
    wire::Encoding encoding = wire::Encoding::Raw;
    int zstd_level = 0;
    bool sample = false;  // Auto: one run tried with another step than the stream's
    bool cold = false;    // the first of a burst of samples: its speed is not counted
};

// One per source. The mode asked for, narrowed to what the destination accepted (its START or
// RESUME), and for Auto a choice made by measurement: compression pays only when the stream is held
// back by something other than the CPU that compresses (a link that is the bottleneck, a send queue
// that stays full) and the CPU keeps up with the link. Rather than guess that from queue depths,
// Auto measures the stream's own rate (guest bytes handed to the sockets per second, over 200 ms
// windows of continuous streaming, the first 100 ms) on a ladder of encodings, each compressing
// more and costing more CPU: raw, lz4, zstd:-1, zstd:1. It tries the next step up and keeps it only
// while it measures at least 5 % faster with the link still as full (the wire's bytes per second at
// least 0.85 of the step in use's: the link, not the CPU, holds the stream, as it must for
// compression to pay), checks the step below the same way, and tries again with a backoff that
// doubles while the choice holds (0.4 s up to 16 s); a step that paid is followed by the next one
// up. One run in 16 is compressed with another step as a sample (in bursts of four, steps in turn,
// and only while the samples' compression takes at most 1 % of the stream's time after a first 5
// ms, a quarter of that while lz4 would not outrun the raw stream), so that the policy knows what
// each step shrinks the guest's pages to and how fast it compresses here: the ladder is climbed
// only when the pages shrink (lz4's ratio < 0.9) and lz4 outruns the stream (twice its rate, on one
// thread), and then the step predicted fastest (the wire's rate over its ratio, or its speed times
// the threads compressing, whichever is lower; of steps predicted alike the highest, as each
// compresses at least as much as those below it) is tried at once rather than a step at a time, the
// window deciding as for any probe. Speeds are thread CPU time on warm buffers (FrameBuilder), so
// that other threads' turns on shared cores do not count against a step.
class CompressionPolicy {
  public:
    using Clock = std::chrono::steady_clock;

    explicit CompressionPolicy(CompressionOptions options) : options_(options) {}

    // The encodings the session's destination accepts (START/RESUME flags). Any thread.
    void accept(std::uint32_t start_flags) noexcept;
    // The encoding to try for the stream's next data run, chosen before the run is made (a
    // compressed one takes short gaps of zero pages in: SentPages::next_stream_run); then
    // streamed() with the run's data bytes (its zero pages not counted: as zero runs, they
    // cost the stream nothing). Only the loop that streams (one at a time).
    [[nodiscard]] RunCodec next_stream(Clock::time_point now);
    void streamed(std::uint64_t data_bytes) noexcept;
    // The same for a run made first: counts its `raw_bytes`, then chooses.
    [[nodiscard]] RunCodec for_stream(std::uint64_t raw_bytes, Clock::time_point now);
    // Whether the destination takes zero maps in compressed runs (version 4). Any thread.
    [[nodiscard]] bool zero_maps() const noexcept {
        return (accepted_.load(std::memory_order_relaxed) & wire::Start::kAcceptZeroMap) != 0;
    }
    // The encoding to try for an answer to a REQUEST (urgent loop).
    [[nodiscard]] RunCodec for_answer() const noexcept;
    // What a try cost and gave (wire_bytes 0: it did not shrink and went raw). Any thread;
    // `stream` feeds Auto's estimates (the streaming loop's runs only).
    void record(RunCodec tried, std::uint64_t raw_bytes, std::uint64_t wire_bytes,
                std::chrono::nanoseconds spent, bool stream);

    [[nodiscard]] CompressionReport report() const;

  private:
    static constexpr std::size_t kSteps = 4;  // raw, lz4, zstd:-1, zstd:1
    [[nodiscard]] RunCodec fixed(Codec codec) const noexcept;
    [[nodiscard]] RunCodec step(std::size_t index) const noexcept;
    [[nodiscard]] std::size_t top_step() const noexcept;  // the highest step accepted
    [[nodiscard]] bool measuring() const noexcept;        // Auto, with steps to choose from
    void run_begins(Clock::time_point now);               // a window starts after a gap
    [[nodiscard]] RunCodec choose(Clock::time_point now);
    // rate: the guest's bytes per second the window streamed; wire_rate: the bytes per second
    // that put on the wire.
    void close_window(double rate, double wire_rate, Clock::time_point now);
    void close_window_of(double rate, double wire_rate, Clock::time_point now);
    void settle(std::size_t on, Clock::time_point now, bool held);
    // Whether the samples' compression time is past its share of the stream's time so far.
    [[nodiscard]] bool over_sample_budget(Clock::time_point now) const;
    // The step predicted fastest from the samples, with the stream at `rate` on current_;
    // current_ when none is predicted at least kBetter faster.
    [[nodiscard]] std::size_t predicted_best(double rate) const;
    // lz4 compresses well over the raw stream's `rate`: the link, not this CPU, holds it.
    [[nodiscard]] bool lz4_outruns(double rate) const noexcept;
    [[nodiscard]] static std::size_t step_of(RunCodec codec) noexcept;

    CompressionOptions options_;
    std::atomic<std::uint32_t> accepted_{0};
    std::atomic<std::uint64_t> runs_compressed_{0};
    std::atomic<std::uint64_t> runs_not_shrunk_{0};
    std::atomic<std::uint64_t> raw_bytes_{0};
    std::atomic<std::uint64_t> compressed_bytes_{0};
    std::atomic<std::uint64_t> compress_ns_{0};
    std::atomic<std::uint64_t> auto_switches_{0};
    std::atomic<std::size_t> step_at_end_{0};

    // Auto, the streaming loop's only.
    std::size_t current_ = 0;                  // the step in use
    std::optional<std::size_t> probing_;       // the step being measured instead, this window
    bool probe_up_next_ = true;                // which neighbour the next probe tries
    std::array<double, kSteps> rates_{};       // guest bytes per second, each step's last window
    std::array<double, kSteps> wire_rates_{};  // and the wire's bytes per second in it
    Clock::time_point window_start_{};
    Clock::time_point last_run_{};
    std::uint64_t window_bytes_ = 0;
    std::atomic<std::uint64_t> window_saved_{0};  // what compression saved of them
    Clock::time_point next_probe_{};
    Clock::time_point settled_at_{};  // windows count only from here (after a change)
    std::chrono::milliseconds backoff_{400};
    std::uint64_t runs_seen_ = 0;
    std::uint64_t samples_taken_ = 0;
    std::size_t sampling_ = 1;  // the step of the current burst of samples (kSteps: none)
    Clock::time_point stream_began_{};
    std::atomic<std::uint64_t> sample_ns_{0};  // compression time the samples took
    // Per step, from its recent stream runs (moving averages): compressed / raw bytes, and raw
    // bytes per second one thread compresses here (0: not sampled yet). Raw: 1 and unbounded.
    std::array<double, kSteps> ratio_{1.0, 1.0, 1.0, 1.0};
    std::array<double, kSteps> speed_{};
    std::array<std::uint64_t, kSteps> tries_{};
};

}  // namespace uffdm::migration
