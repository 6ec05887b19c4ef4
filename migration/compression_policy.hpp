// compression_policy.hpp — Which encoding the source tries for each data run, and what it cost.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

#include "migration/compression.hpp"
#include "migration/report.hpp"
#include "migration/wire.hpp"

namespace uffdm::migration {

// One per source. The mode asked for, narrowed to what the destination accepted (its START or
// RESUME), and for Auto a choice made by measurement: compression pays only when the stream is
// held back by something other than the CPU that compresses (a link that is the bottleneck, a
// send queue that stays full) and the CPU keeps up with the link. Rather than guess that from
// queue depths, Auto measures the stream's own rate (guest bytes handed to the sockets per
// second, over 200 ms windows of continuous streaming) raw and with lz4, keeps the faster one,
// and checks again with a backoff that doubles while the choice holds (1 s up to 16 s). While
// raw, every 16th run is compressed as a sample, so that a probe is tried only when the guest's
// pages shrink (ratio < 0.9) and lz4 on this CPU outruns the measured stream.
class CompressionPolicy {
  public:
    using Clock = std::chrono::steady_clock;

    explicit CompressionPolicy(CompressionOptions options) : options_(options) {}

    // The encodings the session's destination accepts (START/RESUME flags). Any thread.
    void accept(std::uint32_t start_flags) noexcept;
    // The encoding to try for the stream's next data run of `raw_bytes`. Only the loop that
    // streams (one at a time).
    [[nodiscard]] wire::Encoding for_stream(std::uint64_t raw_bytes, Clock::time_point now);
    // The encoding to try for an answer to a REQUEST (urgent loop).
    [[nodiscard]] wire::Encoding for_answer() const noexcept;
    [[nodiscard]] int zstd_level() const noexcept { return options_.zstd_level; }
    // What a try cost and gave (wire_bytes 0: it did not shrink and went raw). Any thread;
    // `stream` feeds Auto's estimates (the streaming loop's runs only).
    void record(wire::Encoding tried, std::uint64_t raw_bytes, std::uint64_t wire_bytes,
                std::chrono::nanoseconds spent, bool stream);

    [[nodiscard]] CompressionReport report() const;

  private:
    enum class AutoState : std::uint8_t { Raw, Probing, Compressing, Checking };
    [[nodiscard]] wire::Encoding fixed(Codec codec) const noexcept;
    void close_window(double rate, Clock::time_point now);

    CompressionOptions options_;
    std::atomic<std::uint32_t> accepted_{0};
    std::atomic<std::uint64_t> runs_compressed_{0};
    std::atomic<std::uint64_t> runs_not_shrunk_{0};
    std::atomic<std::uint64_t> raw_bytes_{0};
    std::atomic<std::uint64_t> compressed_bytes_{0};
    std::atomic<std::uint64_t> compress_ns_{0};
    std::atomic<std::uint64_t> auto_switches_{0};
    std::atomic<bool> compressing_{false};

    // Auto, the streaming loop's only.
    AutoState state_ = AutoState::Raw;
    Clock::time_point window_start_{};
    Clock::time_point last_run_{};
    std::uint64_t window_bytes_ = 0;
    double rate_raw_ = 0;         // guest bytes per second, the last raw window
    double rate_compressed_ = 0;  // the last lz4 window
    Clock::time_point next_change_{};
    std::chrono::milliseconds backoff_{1000};
    std::uint64_t runs_seen_ = 0;
    double ratio_ = 1.0;    // compressed / raw bytes of lz4's recent runs (moving average)
    double lz4_speed_ = 0;  // raw bytes per second lz4 compresses here (moving average)
};

}  // namespace uffdm::migration
