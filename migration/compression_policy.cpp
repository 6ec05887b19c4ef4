// compression_policy.cpp — Fixed codecs, and Auto's measured choice between raw and lz4.
#include "migration/compression_policy.hpp"

#include <algorithm>
#include <string>

namespace uffdm::migration {

namespace {

constexpr auto kWindow = std::chrono::milliseconds(200);
// A gap this long between runs is not streaming (held, between rounds, the window full of
// answers): the window starts again after it rather than counting the idle time.
constexpr auto kIdleGap = std::chrono::milliseconds(50);
constexpr auto kMaxBackoff = std::chrono::milliseconds(16000);
constexpr std::uint64_t kSampleEvery = 16;
constexpr double kWorthProbing = 0.9;  // lz4's recent ratio must be below this
constexpr double kBetter = 1.05;       // a mode must beat the other by 5 % to be chosen

}  // namespace

void CompressionPolicy::accept(std::uint32_t start_flags) noexcept {
    accepted_.store(start_flags, std::memory_order_relaxed);
}

wire::Encoding CompressionPolicy::fixed(Codec codec) const noexcept {
    wire::Encoding want = codec == Codec::Zstd  ? wire::Encoding::Zstd
                          : codec == Codec::Off ? wire::Encoding::Raw
                                                : wire::Encoding::Lz4;
    return wire::accepts(accepted_.load(std::memory_order_relaxed), want) ? want
                                                                          : wire::Encoding::Raw;
}

wire::Encoding CompressionPolicy::for_answer() const noexcept {
    if (!options_.answers) {
        return wire::Encoding::Raw;
    }
    // Auto measures the stream, not single answers: they take lz4 when asked for.
    return fixed(options_.codec);
}

wire::Encoding CompressionPolicy::for_stream(std::uint64_t raw_bytes, Clock::time_point now) {
    if (options_.codec != Codec::Auto) {
        return fixed(options_.codec);
    }
    if (fixed(Codec::Lz4) != wire::Encoding::Lz4) {
        return wire::Encoding::Raw;  // the destination takes no lz4
    }
    if (now - last_run_ > kIdleGap) {
        window_start_ = now;
        window_bytes_ = 0;
    }
    last_run_ = now;
    window_bytes_ += raw_bytes;
    if (now - window_start_ >= kWindow) {
        double seconds = std::chrono::duration<double>(now - window_start_).count();
        close_window(static_cast<double>(window_bytes_) / seconds, now);
        window_start_ = now;
        window_bytes_ = 0;
    }
    switch (state_) {
        case AutoState::Probing:
        case AutoState::Compressing:
            return wire::Encoding::Lz4;
        case AutoState::Checking:
            return wire::Encoding::Raw;
        case AutoState::Raw:
            break;
    }
    return ++runs_seen_ % kSampleEvery == 0 ? wire::Encoding::Lz4 : wire::Encoding::Raw;
}

void CompressionPolicy::close_window(double rate, Clock::time_point now) {
    auto to = [&](AutoState next) {
        bool was = state_ == AutoState::Probing || state_ == AutoState::Compressing;
        bool is = next == AutoState::Probing || next == AutoState::Compressing;
        if (was != is) {
            auto_switches_.fetch_add(1, std::memory_order_relaxed);
        }
        compressing_.store(is, std::memory_order_relaxed);
        state_ = next;
    };
    switch (state_) {
        case AutoState::Raw:
            rate_raw_ = rate;
            if (now >= next_change_ && ratio_ < kWorthProbing && lz4_speed_ > rate) {
                to(AutoState::Probing);
            }
            return;
        case AutoState::Probing:
            rate_compressed_ = rate;
            if (rate_compressed_ > kBetter * rate_raw_) {
                backoff_ = std::chrono::milliseconds(1000);
                next_change_ = now + backoff_;
                to(AutoState::Compressing);
            } else {
                backoff_ = std::min(backoff_ * 2, kMaxBackoff);
                next_change_ = now + backoff_;
                to(AutoState::Raw);
            }
            return;
        case AutoState::Compressing:
            rate_compressed_ = rate;
            if (ratio_ >= kWorthProbing) {
                next_change_ = now + backoff_;  // the guest's pages stopped shrinking
                to(AutoState::Raw);
            } else if (now >= next_change_) {
                to(AutoState::Checking);
            }
            return;
        case AutoState::Checking:
            rate_raw_ = rate;
            if (rate_raw_ > kBetter * rate_compressed_) {
                backoff_ = std::chrono::milliseconds(1000);
                next_change_ = now + backoff_;
                to(AutoState::Raw);
            } else {
                backoff_ = std::min(backoff_ * 2, kMaxBackoff);
                next_change_ = now + backoff_;
                to(AutoState::Compressing);
            }
            return;
    }
}

void CompressionPolicy::record(wire::Encoding tried, std::uint64_t raw_bytes,
                               std::uint64_t wire_bytes, std::chrono::nanoseconds spent,
                               bool stream) {
    compress_ns_.fetch_add(static_cast<std::uint64_t>(spent.count()), std::memory_order_relaxed);
    if (wire_bytes == 0) {
        runs_not_shrunk_.fetch_add(1, std::memory_order_relaxed);
    } else {
        runs_compressed_.fetch_add(1, std::memory_order_relaxed);
        raw_bytes_.fetch_add(raw_bytes, std::memory_order_relaxed);
        compressed_bytes_.fetch_add(wire_bytes, std::memory_order_relaxed);
    }
    if (!stream || tried != wire::Encoding::Lz4 || raw_bytes == 0) {
        return;
    }
    // Moving averages over about the last eight tries.
    double ratio =
        wire_bytes == 0 ? 1.0 : static_cast<double>(wire_bytes) / static_cast<double>(raw_bytes);
    double seconds = std::max(std::chrono::duration<double>(spent).count(), 1e-9);
    double speed = static_cast<double>(raw_bytes) / seconds;
    ratio_ += (ratio - ratio_) / 8;
    lz4_speed_ = lz4_speed_ == 0 ? speed : lz4_speed_ + (speed - lz4_speed_) / 8;
}

CompressionReport CompressionPolicy::report() const {
    CompressionReport out;
    switch (options_.codec) {
        case Codec::Off:
            out.mode = "off";
            break;
        case Codec::Lz4:
            out.mode = "lz4";
            break;
        case Codec::Zstd:
            out.mode = "zstd:" + std::to_string(options_.zstd_level);
            break;
        case Codec::Auto:
            out.mode = "auto";
            break;
    }
    std::uint32_t accepted = accepted_.load(std::memory_order_relaxed);
    for (wire::Encoding e : {wire::Encoding::Lz4, wire::Encoding::Zstd}) {
        if (wire::accepts(accepted, e)) {
            out.accepted += (out.accepted.empty() ? "" : ",") + std::string(wire::name(e));
        }
    }
    out.runs_compressed = runs_compressed_.load(std::memory_order_relaxed);
    out.runs_not_shrunk = runs_not_shrunk_.load(std::memory_order_relaxed);
    out.raw_bytes = raw_bytes_.load(std::memory_order_relaxed);
    out.compressed_bytes = compressed_bytes_.load(std::memory_order_relaxed);
    out.compress_seconds = static_cast<double>(compress_ns_.load(std::memory_order_relaxed)) / 1e9;
    out.auto_switches = auto_switches_.load(std::memory_order_relaxed);
    out.compressing_at_end = options_.codec == Codec::Auto
                                 ? compressing_.load(std::memory_order_relaxed)
                                 : options_.codec != Codec::Off && !out.accepted.empty();
    return out;
}

}  // namespace uffdm::migration
