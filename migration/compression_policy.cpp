// compression_policy.cpp — Fixed codecs, and Auto's measured choice between raw and lz4.
#include "migration/compression_policy.hpp"

#include <algorithm>
#include <string>

namespace uffdm::migration {

namespace {

constexpr auto kWindow = std::chrono::milliseconds(200);
// The stream's first window (raw, before any step was measured) is shorter: on a link that
// holds the stream every millisecond of it is sent uncompressed, and the samples that decide
// the jump are taken by then (12 MB at 1 Gbit/s measure the raw rate well enough).
constexpr auto kFirstWindow = std::chrono::milliseconds(100);
// A gap this long between runs is not streaming (held, between rounds, the window full of
// answers): the window starts again after it rather than counting the idle time.
constexpr auto kIdleGap = std::chrono::milliseconds(50);
constexpr auto kSettle = std::chrono::milliseconds(100);
constexpr auto kFirstBackoff = std::chrono::milliseconds(400);  // after a change: two windows
constexpr auto kMaxBackoff = std::chrono::milliseconds(16000);
constexpr std::uint64_t kSampleEvery = 16;  // one run in this many is a sample
constexpr std::uint64_t kBurst = 4;         // taken in bursts of this many runs
// Samples compress on the loop that streams: where its CPU sets the pace (loopback) one run in
// 16 cost the stream 4-7 %. A burst is taken only while the samples' compression time stays
// within this share of the time since the stream began, after an allowance that covers the
// first window's samples.
constexpr double kSampleShare = 0.01;
// A quarter of that while the stream stays raw because lz4 would not outrun it (the CPU, not a
// link, holds it): the samples then only watch for pages that change. On loopback the 640-820
// sample runs of a 1 s host-files migration (16-22 ms of CPU at the source, and their expansion
// at the destination) cost Auto 4 % against `off`; with 230-270 of them, 1 % less than `off`
// (8 alternating runs of each, noise included).
constexpr double kHeldSampleShare = 0.0025;
constexpr auto kSampleAllowance = std::chrono::milliseconds(5);
constexpr double kWorthProbing = 0.9;  // lz4's recent ratio must be below this
constexpr double kBetter = 1.05;       // a mode must beat the other by 5 % to be chosen
// A step up must keep the wire at least this full (the bytes its window put on the wire per
// second, against the step in use's): a faster guest rate from a wire that emptied is the CPU,
// not the link, setting the pace (on loopback the probe's window borrows CPU its destination
// pays back later).
constexpr double kLinkHeld = 0.85;
// Unless the step is this much faster: the CPU borrowed on loopback made a step up look 5-25 %
// faster, never more; at 1 Gbit/s a step that doubles the stream while a shared vCPU held it
// back for part of the window (its wire 0.84 of raw's first, slow-starting window) was thrown
// away and the stream went raw for another second.
constexpr double kClearlyBetter = 1.4;
// lz4 "outruns the stream" when one thread compresses this many times the stream's raw rate.
// Measured in CPU time, lz4 compresses 440-600 MB/s of guest here: the raw stream is 120 MB/s
// on a 1 Gbit/s link (the link holds it) and 500 on loopback, where the CPU holds it and every
// probe of lz4 cost the stream (auto 1.08x of off with a bound of 1x, which wall-clock speeds,
// a half of these, had hidden).
constexpr double kOutrun = 2.0;

}  // namespace

void CompressionPolicy::accept(std::uint32_t start_flags) noexcept {
    accepted_.store(start_flags, std::memory_order_relaxed);
}

RunCodec CompressionPolicy::fixed(Codec codec) const noexcept {
    RunCodec want{codec == Codec::Zstd  ? wire::Encoding::Zstd
                  : codec == Codec::Off ? wire::Encoding::Raw
                                        : wire::Encoding::Lz4,
                  options_.zstd_level};
    return wire::accepts(accepted_.load(std::memory_order_relaxed), want.encoding) ? want
                                                                                   : RunCodec{};
}

RunCodec CompressionPolicy::step(std::size_t index) const noexcept {
    switch (index) {
        case 1:
            return {wire::Encoding::Lz4, 0};
        case 2:
            return {wire::Encoding::Zstd, -1};
        case 3:
            return {wire::Encoding::Zstd, 1};
        default:
            return {};
    }
}

std::size_t CompressionPolicy::top_step() const noexcept {
    std::uint32_t accepted = accepted_.load(std::memory_order_relaxed);
    if (!wire::accepts(accepted, wire::Encoding::Lz4)) {
        return 0;
    }
    return wire::accepts(accepted, wire::Encoding::Zstd) ? kSteps - 1 : 1;
}

RunCodec CompressionPolicy::for_answer() const noexcept {
    if (!options_.answers) {
        return {};
    }
    // Auto measures the stream, not single answers: they take lz4 when asked for.
    return fixed(options_.codec);
}

RunCodec CompressionPolicy::for_stream(std::uint64_t raw_bytes, Clock::time_point now) {
    if (!measuring()) {
        return next_stream(now);
    }
    run_begins(now);
    streamed(raw_bytes);
    return choose(now);
}

RunCodec CompressionPolicy::next_stream(Clock::time_point now) {
    if (options_.codec != Codec::Auto) {
        return fixed(options_.codec);
    }
    if (top_step() == 0) {
        return {};  // the destination takes no compressed run
    }
    run_begins(now);
    return choose(now);
}

void CompressionPolicy::streamed(std::uint64_t data_bytes) noexcept {
    window_bytes_ += data_bytes;
}

bool CompressionPolicy::measuring() const noexcept {
    return options_.codec == Codec::Auto && top_step() != 0;
}

void CompressionPolicy::run_begins(Clock::time_point now) {
    if (now - last_run_ > kIdleGap || now < settled_at_) {
        window_start_ = now;
        window_bytes_ = 0;
        window_saved_.store(0, std::memory_order_relaxed);
    }
    last_run_ = now;
}

RunCodec CompressionPolicy::choose(Clock::time_point now) {
    bool first = current_ == 0 && !probing_ && rates_[0] == 0;
    if (now - window_start_ >= (first ? kFirstWindow : kWindow)) {
        double seconds = std::chrono::duration<double>(now - window_start_).count();
        // What went on the wire: the guest's bytes less what compression saved (recorded as
        // each compressed run's frame is finished).
        auto saved = std::min(window_saved_.exchange(0, std::memory_order_relaxed), window_bytes_);
        close_window(static_cast<double>(window_bytes_) / seconds,
                     static_cast<double>(window_bytes_ - saved) / seconds, now);
        window_start_ = now;
        window_bytes_ = 0;
    }
    std::size_t on = probing_.value_or(current_);
    if (probing_) {
        return step(on);
    }
    // Samples of other steps, a burst of kBurst runs every kBurst * kSampleEvery: what does
    // each shrink the guest's pages to, and how fast does it compress here (the burst's first
    // run warms its context and is not timed: a lone sample measured a third of the speed)?
    if (runs_seen_ == 0) {
        stream_began_ = now;
    }
    std::uint64_t phase = runs_seen_++ % (kBurst * kSampleEvery);
    if (phase == 0 && over_sample_budget(now)) {
        sampling_ = kSteps;  // no burst this time
    } else if (phase == 0) {
        // lz4 every other burst (the ratio that says whether to compress at all); the zstd
        // steps only where they may pay: in the first window, or once lz4 shrinks the pages
        // and outruns the stream (a link that holds it; on loopback, or for pages that do not
        // shrink, they would take the CPU the stream needs).
        bool wide =
            rates_[0] == 0 || current_ > 0 || (lz4_outruns(rates_[0]) && ratio_[1] < kWorthProbing);
        std::size_t top = wide ? top_step() : 1;
        ++samples_taken_;
        sampling_ = samples_taken_ % 2 == 1 ? 1 : 1 + (samples_taken_ / 2) % top;
    }
    if (phase < kBurst && sampling_ != on && sampling_ < kSteps) {
        RunCodec sample = step(sampling_);
        sample.sample = true;
        sample.cold = phase == 0;
        return sample;
    }
    return step(on);
}

bool CompressionPolicy::over_sample_budget(Clock::time_point now) const {
    bool cpu_holds = current_ == 0 && rates_[0] > 0 && speed_[1] > 0 && !lz4_outruns(rates_[0]);
    auto allowed = std::chrono::duration_cast<std::chrono::nanoseconds>(
        kSampleAllowance + (cpu_holds ? kHeldSampleShare : kSampleShare) * (now - stream_began_));
    return sample_ns_.load(std::memory_order_relaxed) > static_cast<std::uint64_t>(allowed.count());
}

std::size_t CompressionPolicy::step_of(RunCodec codec) noexcept {
    switch (codec.encoding) {
        case wire::Encoding::Lz4:
            return 1;
        case wire::Encoding::Zstd:
            return codec.zstd_level < 0 ? 2 : 3;
        default:
            return 0;
    }
}

bool CompressionPolicy::lz4_outruns(double rate) const noexcept {
    return speed_[1] > kOutrun * rate;
}

std::size_t CompressionPolicy::predicted_best(double rate) const {
    // What the link carries now, if it is what holds the stream back; each step would then
    // reach the wire's rate over its ratio, unless its compression cannot keep up (its speed
    // on each thread that compresses: the loop and its helpers).
    double wire = rate * ratio_[current_];
    double threads = 1.0 + static_cast<double>(options_.threads);
    std::size_t best = current_;
    double best_rate = rate;
    for (std::size_t s = 1; s <= top_step(); ++s) {
        if (s == current_ || speed_[s] == 0) {
            continue;
        }
        // Each step compresses at least as much as the one below it on the same pages; the
        // samples' ratios, from a few runs each, say otherwise now and then.
        double ratio = ratio_[s];
        for (std::size_t below = 1; below < s; ++below) {
            ratio = std::min(ratio, ratio_[below]);
        }
        double predicted = std::min(wire / ratio, speed_[s] * threads);
        if (rates_[s] > 0) {
            // What its last probe measured bounds the model: a step the samples overrate (its
            // wire emptied, its CPU did not keep up) is not tried again and again.
            predicted = std::min(predicted, rates_[s]);
        }
        // Better than the step in use by kBetter; among those the highest that is predicted no
        // slower (it leaves the link the most room).
        if (predicted > kBetter * rate && predicted >= best_rate) {
            best = s;
            best_rate = predicted;
        }
    }
    return best;
}

void CompressionPolicy::settle(std::size_t on, Clock::time_point now, bool held) {
    if ((on == 0) != (current_ == 0)) {
        auto_switches_.fetch_add(1, std::memory_order_relaxed);
    }
    current_ = on;
    step_at_end_.store(on, std::memory_order_relaxed);
    // A choice that held waits longer before it is questioned again; a change is checked soon.
    backoff_ = held ? std::min(backoff_ * 2, kMaxBackoff) : kFirstBackoff;
    next_probe_ = now + backoff_;
}

void CompressionPolicy::close_window(double rate, double wire_rate, Clock::time_point now) {
    std::size_t measured = probing_.value_or(current_);
    close_window_of(rate, wire_rate, now);
    if (probing_.value_or(current_) != measured) {
        // The frames of the last encoding still drain from the socket and the link's queue:
        // the next window starts once they are out of the way.
        settled_at_ = now + kSettle;
    }
}

void CompressionPolicy::close_window_of(double rate, double wire_rate, Clock::time_point now) {
    if (probing_) {
        std::size_t tried = *probing_;
        probing_.reset();
        rates_[tried] = rate;
        wire_rates_[tried] = wire_rate;
        bool better = rate > kBetter * rates_[current_] &&
                      (tried < current_ || wire_rate >= kLinkHeld * wire_rates_[current_] ||
                       rate > kClearlyBetter * rates_[current_]);
        // A step that paid is followed by the next one the same way; one that did not turns
        // the next probe the other way.
        probe_up_next_ = (tried > current_) == better;
        settle(better ? tried : current_, now, !better);
        return;
    }
    rates_[current_] = rate;
    wire_rates_[current_] = wire_rate;
    if (current_ > 0 && ratio_[1] >= kWorthProbing) {
        settle(0, now, false);  // the guest's pages stopped shrinking
        return;
    }
    if (now < next_probe_) {
        return;
    }
    // From raw only where lz4 outruns the stream (the link, not this CPU, holds it).
    if (current_ > 0 || (ratio_[1] < kWorthProbing && lz4_outruns(rate))) {
        if (std::size_t best = predicted_best(rate); best > current_) {
            probing_ = best;  // the link holds the stream: straight to the step that pays most
            return;
        }
    }
    bool can_up =
        current_ < top_step() && (current_ > 0 || (ratio_[1] < kWorthProbing && lz4_outruns(rate)));
    bool can_down = current_ > 0;
    if (can_up && (probe_up_next_ || !can_down)) {
        probing_ = current_ + 1;
    } else if (can_down) {
        probing_ = current_ - 1;
    }
}

void CompressionPolicy::record(RunCodec tried, std::uint64_t raw_bytes, std::uint64_t wire_bytes,
                               std::chrono::nanoseconds spent, bool stream) {
    compress_ns_.fetch_add(static_cast<std::uint64_t>(spent.count()), std::memory_order_relaxed);
    if (tried.sample) {
        sample_ns_.fetch_add(static_cast<std::uint64_t>(spent.count()), std::memory_order_relaxed);
    }
    if (wire_bytes == 0) {
        runs_not_shrunk_.fetch_add(1, std::memory_order_relaxed);
    } else {
        runs_compressed_.fetch_add(1, std::memory_order_relaxed);
        raw_bytes_.fetch_add(raw_bytes, std::memory_order_relaxed);
        compressed_bytes_.fetch_add(wire_bytes, std::memory_order_relaxed);
    }
    std::size_t s = step_of(tried);
    if (!stream || s == 0 || raw_bytes == 0 || options_.codec != Codec::Auto) {
        return;
    }
    if (wire_bytes != 0 && wire_bytes < raw_bytes) {
        window_saved_.fetch_add(raw_bytes - wire_bytes, std::memory_order_relaxed);
    }
    // Moving averages over about the last eight tries.
    double ratio =
        wire_bytes == 0 ? 1.0 : static_cast<double>(wire_bytes) / static_cast<double>(raw_bytes);
    double seconds = std::max(std::chrono::duration<double>(spent).count(), 1e-9);
    double speed = static_cast<double>(raw_bytes) / seconds;
    bool first = tries_[s]++ == 0;  // the first try of a step is its ratio's estimate
    ratio_[s] = first ? ratio : ratio_[s] + (ratio - ratio_[s]) / 8;
    if (!tried.cold) {
        speed_[s] = speed_[s] == 0 ? speed : speed_[s] + (speed - speed_[s]) / 8;
    }
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
    out.threads = options_.codec == Codec::Off ? 0 : static_cast<std::uint32_t>(options_.threads);
    if (options_.codec == Codec::Auto) {
        static constexpr const char* kNames[kSteps] = {"raw", "lz4", "zstd:-1", "zstd:1"};
        std::size_t at = step_at_end_.load(std::memory_order_relaxed);
        out.compressing_at_end = at > 0;
        out.auto_choice = kNames[at];
    } else {
        out.compressing_at_end = options_.codec != Codec::Off && !out.accepted.empty();
    }
    return out;
}

}  // namespace uffdm::migration
