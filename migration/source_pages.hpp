// source_pages.hpp — What the source has sent of the guest, what it streams next, in which frame.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "migration/compression_policy.hpp"
#include "migration/guest_memory.hpp"
#include "migration/page_bitmap.hpp"
#include "transport/data_path.hpp"

namespace uffdm::migration {

// A run of pages to send: all zero (sent as ZERO, no data) or data. A data run that will be
// compressed may hold short gaps of zero pages between its data pages, in its zero map
// (SentPages::next_stream_run; wire::PagesHeader::kZeroMap): compressing many small runs costs
// far more CPU than compressing the same pages as a few larger ones.
struct PageRun {
    std::uint32_t region = 0;
    std::uint64_t first = 0;
    std::uint64_t count = 0;
    bool zero = false;
    std::uint64_t zero_inside = 0;  // a data run's zero pages, and their bits (page first + i)
    std::array<std::uint64_t, wire::kMaxZeroMapWords> zero_map{};

    [[nodiscard]] std::uint64_t data_pages() const noexcept {
        return zero ? 0 : count - zero_inside;
    }
    // The zero map's words, or none.
    [[nodiscard]] std::span<const std::uint64_t> zero_words() const noexcept {
        return {zero_map.data(), zero_inside == 0 ? 0 : (count + 63) / 64};
    }
};

// What the source counts of the pages it sends (any thread).
struct SourceCounts {
    std::atomic<std::uint64_t> streamed{0};
    std::atomic<std::uint64_t> answered{0};
    std::atomic<std::uint64_t> resent{0};  // answered after being streamed already
    std::atomic<std::uint64_t> zero{0};
    std::atomic<std::uint64_t> requests{0};
    std::atomic<std::uint64_t> resumes{0};
};

// Which pages this migration has sent, and the choice of what goes next: answers to requests
// first (on the urgent loop), the background stream from a cursor that jumps after each request
// (the guest is likely to touch what follows) on whichever loop streams, every page not yet
// sent exactly once, in homogeneous runs.
class SentPages {
  public:
    SentPages(const GuestMemory& memory, std::uint64_t stream_run_bytes);

    // A destination with nothing (START): whatever an earlier one was sent goes again.
    void start_fresh();
    // What a resuming destination says it has (its BITMAPs, per region; empty: nothing) is
    // exactly what need not be sent again: every page requested or in flight when the last
    // session broke goes again. Urgent loop, while no loop streams.
    // `stale` (per region, or nullptr): pages whose copy there may be older than one sent
    // since (a live source's round in progress), sent again whatever the bitmap says.
    void resume_from(const std::vector<PageBitmap>& received,
                     const std::vector<PageBitmap>* stale = nullptr);
    // A live source: these pages were written since they were sent; they go again (the next
    // round, or postcopy after the switchover). While no loop streams.
    void mark_unsent(const std::vector<PageBitmap>& written);
    // The stream starts again from the guest's first page (a new round).
    void rewind();
    // A resuming destination's BITMAPs may claim only pages this source sent in this migration
    // (when it has seen the migration's START: a source restarted on its image cannot know what
    // its predecessor sent). "" or the refusal naming the first page claimed and never sent.
    [[nodiscard]] std::string unsent_claim(const std::vector<PageBitmap>& received) const;

    // The guest is likely to touch what follows `page`: the stream goes on from there.
    void note_request(std::uint32_t region, std::uint64_t page);
    // The first run of a request's pages (at most `count`), marked sent; a page streamed already
    // is counted as resent (the destination asked: it has not arrived there yet).
    [[nodiscard]] PageRun answer(std::uint32_t region, std::uint64_t first, std::uint64_t count);
    // The background stream's next run, marked sent; none when every page has been sent. One
    // caller at a time (the loop that streams). `compressed`: the run will be compressed, so a
    // data run goes on over gaps of at most kZeroGap zero pages followed by a data page (a
    // longer stretch of zeros is a ZERO run of its own).
    [[nodiscard]] std::optional<PageRun> next_stream_run(bool compressed = false);
    static constexpr std::uint64_t kZeroGap = 16;

    [[nodiscard]] const GuestMemory& memory() const noexcept { return memory_; }
    [[nodiscard]] SourceCounts& counts() noexcept { return counts_; }
    [[nodiscard]] const SourceCounts& counts() const noexcept { return counts_; }

  private:
    [[nodiscard]] PageRun grow(PageBitmap& sent, std::uint64_t first, bool compressed);
    // The zero pages from `at` to the next data page, if there are at most kZeroGap, all
    // unsent, and the data page is unsent and below `end`; 0 otherwise.
    [[nodiscard]] std::uint64_t zero_gap(const PageBitmap& sent, std::uint64_t at,
                                         std::uint64_t end) const;

    const GuestMemory& memory_;
    std::uint64_t stream_run_bytes_;
    std::vector<PageBitmap> sent_;  // per region: the page has been sent (by either path)
    // Per region: sent before this session or before a live source's later round sent it
    // again (since the migration's START), so a destination may hold it. Only what this
    // process sent. Set at a resume (urgent loop) and by mark_unsent (the precopy thread).
    std::vector<PageBitmap> delivered_;
    bool started_here_ = false;  // this process has seen the migration's START
    SourceCounts counts_;

    std::atomic<std::uint64_t> hint_{0};  // region << 48 | page after the latest request
    std::atomic<std::uint64_t> hint_seq_{0};
    // The stream's cursor: the streaming loop's only.
    std::uint32_t region_ = 0;
    std::uint64_t page_ = 0;
    std::uint64_t seen_seq_ = 0;
};

// PAGES frames whose hash arrays and compressed runs live in a ring of slots as long as the
// send window: a slot is reused only after the frame that borrowed it has been sent. One per
// channel; the policy says which encoding each data run tries.
class FrameBuilder {
  public:
    // `ahead`: frames made and not yet handed to the send window (a batch compressed on
    // several threads): their slots are not reused either.
    FrameBuilder(const GuestMemory& memory, std::size_t window, CompressionPolicy& policy,
                 std::size_t ahead = 0)
        : memory_(memory),
          policy_(policy),
          slots_(window + ahead),
          copies_(window + ahead),
          packed_(window + ahead) {}

    // `live`: the guest may write these pages while the frame waits to be sent. Its bytes
    // are then copied with the hashes, so that each hash matches the bytes it travels with
    // (without hashes a torn page is harmless: the write is tracked, the page goes again; a
    // compressed run of a page written meanwhile still expands to the run's size).
    [[nodiscard]] transport::OutgoingFrame pages(const PageRun& run, bool hashes, bool answer,
                                                 bool live = false);
    // Whether the stream's next data run will try compression (so it may take zero gaps in):
    // the policy's choice for it, kept until begin() makes that run. The loop that streams.
    [[nodiscard]] bool stream_compresses();
    // The same, not as one of Auto's samples, and the destination takes zero maps: the run
    // may take zero gaps in.
    [[nodiscard]] bool stream_takes_zero_gaps();

    // The same in three steps, so that compressing may run on other threads: begin() on the
    // loop (the page data, hashes, the encoding to try), compress() on any thread with a
    // compressor of its own, finish() on the loop again, in the order begun.
    struct Pending {
        wire::PagesHeader header;
        transport::OutgoingFrame frame;
        std::span<const std::byte> data;
        RunCodec codec;
        std::size_t slot = 0;
        std::uint64_t data_bytes = 0;  // the run's bytes less its zero pages'
        std::array<std::uint64_t, wire::kMaxZeroMapWords> zero_map{};  // PageRun's
        std::size_t zero_words = 0;  // the map's words in use (0: no map)
        bool answer = false;
        bool shrank = false;
        std::chrono::nanoseconds spent{};
        [[nodiscard]] bool compresses() const noexcept {
            return codec.encoding != wire::Encoding::Raw && !data.empty();
        }
    };
    [[nodiscard]] Pending begin(const PageRun& run, bool hashes, bool answer, bool live = false);
    void compress(Pending& pending, RunCompressor& compressor);
    [[nodiscard]] transport::OutgoingFrame finish(Pending& pending);
    [[nodiscard]] RunCompressor& compressor() noexcept { return compressor_; }

  private:
    const GuestMemory& memory_;
    CompressionPolicy& policy_;
    RunCompressor compressor_;
    std::vector<std::vector<std::byte>> slots_;
    std::vector<std::vector<std::byte>> copies_;  // the copied pages, slot for slot
    std::vector<std::vector<std::byte>> packed_;  // the compressed runs, slot for slot
    std::size_t next_ = 0;
    std::optional<RunCodec> stream_codec_;  // chosen for the next stream data run
    [[nodiscard]] std::uint64_t zero_hash(std::uint64_t page_size);
    std::uint64_t zero_hash_ = 0;  // page_hash of a zero page of zero_hash_size_ bytes
    std::uint64_t zero_hash_size_ = 0;
};

}  // namespace uffdm::migration
