// compression.hpp — Compressed PAGES runs (lz4, zstd): making them, checking and expanding them.
#pragma once

#include <chrono>
#include <cstdint>
#include <expected>
#include <memory>
#include <span>
#include <vector>

#include "migration/wire.hpp"
#include "transport/failure.hpp"

namespace uffdm::migration {

// How the source may encode the stream's data runs. Auto: lz4 while the measured stream is
// faster with it than without (compression.cpp, CompressionPolicy), raw otherwise.
enum class Codec : std::uint8_t { Off, Lz4, Zstd, Auto };

struct CompressionOptions {
    Codec codec = Codec::Off;
    int zstd_level = 3;  // 1..19 (negative: zstd's faster levels, down to -7)
    // Answers to REQUESTs too (the stream's choice applies to the urgent connection only with
    // this). Off by default: BENCHMARKS.md "Real links" measured it (a fault waits for the
    // compression and the expansion of its run, not for the link, at 1 Gbit/s).
    bool answers = false;
    // Threads that compress the stream's runs beside each bulk loop (0: the loop alone). Used
    // only while runs are compressed; the loop works on each batch too.
    std::size_t threads = 0;
};

// Compresses one run into a buffer of its own. One per FrameBuilder (one loop thread).
class RunCompressor {
  public:
    RunCompressor();
    ~RunCompressor();
    RunCompressor(RunCompressor&&) noexcept;
    RunCompressor& operator=(RunCompressor&&) noexcept;

    // The compressed bytes of `raw` in `out` (resized), or false when the result would not be
    // shorter than `raw` (the run goes raw).
    [[nodiscard]] bool compress(wire::Encoding encoding, int zstd_level,
                                std::span<const std::byte> raw, std::vector<std::byte>& out);
    // The CPU time the last compress() spent compressing (not copying the result out, which
    // is the caller's buffer's first touch as often as not).
    [[nodiscard]] std::chrono::nanoseconds spent() const noexcept { return spent_; }
    // The same for a run with a zero map (bit i of zero_words: page i is zero): only its other
    // pages are compressed (gathered first; the zero pages are never read), and the result must
    // be shorter than the whole run.
    [[nodiscard]] bool compress(wire::Encoding encoding, int zstd_level,
                                std::span<const std::byte> run, std::uint64_t page_size,
                                std::span<const std::uint64_t> zero_words,
                                std::vector<std::byte>& out);

  private:
    [[nodiscard]] bool compress_into(wire::Encoding encoding, int zstd_level,
                                     std::span<const std::byte> raw, std::size_t room,
                                     std::vector<std::byte>& out);
    struct Contexts;
    std::unique_ptr<Contexts> contexts_;
    std::vector<std::byte> gathered_;  // a zero-mapped run's data pages
    std::vector<std::byte> scratch_;   // the result, before it is copied out
    std::chrono::nanoseconds spent_{};
};

// This thread's CPU time: what compressing costs, whatever other threads run on the cores.
[[nodiscard]] std::chrono::nanoseconds thread_cpu_time() noexcept;

// Expands a validated compressed run (wire::decode_pages) into a buffer of its own; one per
// receiving channel. The result views Raw pages: valid until the next expand().
class RunExpander {
  public:
    RunExpander();
    ~RunExpander();
    RunExpander(RunExpander&&) noexcept;
    RunExpander& operator=(RunExpander&&) noexcept;

    // A run that is not compressed is returned as it is. A corrupt block, a zstd frame that
    // states no size or another size than the run's, one that holds more than the run (a
    // decompression bomb: never written past the buffer), or trailing bytes: a protocol
    // violation naming the run, and nothing of it is usable. A run with a zero map comes back
    // whole: its zero pages as zeros between the expanded ones.
    [[nodiscard]] std::expected<wire::PagesView, transport::Failure> expand(
        const wire::PagesView& run, const wire::Layout& layout);
    // wire::decode_pages, then expand().
    [[nodiscard]] std::expected<wire::PagesView, transport::Failure> read(
        std::span<const std::byte> payload, const wire::Layout& layout, std::uint32_t start_flags);

  private:
    struct Contexts;
    std::unique_ptr<Contexts> contexts_;
    std::vector<std::byte> buffer_;
    std::vector<std::byte> packed_;  // a zero-mapped run's pages, before they are spread out
};

}  // namespace uffdm::migration
