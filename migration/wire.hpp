// wire.hpp — The migration messages carried in transport frames: fixed little-endian layouts.
#pragma once

#include <cstddef>
#include <cstdint>
#include <expected>
#include <span>
#include <string>
#include <vector>

#include "transport/failure.hpp"
#include "transport/frame.hpp"

namespace uffdm::migration::wire {

// See protocol.md beside this file for the sequence and both state machines. Version 2 added a
// live source's precopy rounds and switchover (ROUND_END .. RUNNING, LAYOUT's live flag and
// RESUME's phase); version 3 compressed PAGES runs (lz4, zstd), offered in START's flags;
// version 4 compressed runs with a zero map (the zero pages between a run's data pages left out).
// Older peers still migrate: a version 1 one a guest that no longer runs, a version 2 one raw,
// a version 3 one with compressed runs of data pages only.
inline constexpr std::uint16_t kVersion = 4;
inline constexpr std::uint16_t kLiveVersion = 2;         // the first version with precopy
inline constexpr std::uint16_t kCompressionVersion = 3;  // the first with compressed runs
inline constexpr std::uint16_t kZeroMapVersion = 4;      // the first with zero maps

// Transport frame types 0x40..0x7f belong to this layer.
enum class MessageType : std::uint8_t {
    Invalid = 0,
    Layout = 0x40,     // source -> destination (urgent, first): the guest's regions
    Start = 0x41,      // destination -> source (urgent): layout accepted, go
    Request = 0x42,    // destination -> source (urgent): a faulting vCPU needs these pages
    Pages = 0x43,      // source -> destination (urgent answers, bulk stream): a run of pages
    StreamEnd = 0x44,  // source -> destination (bulk): this channel has sent its last page
    Done = 0x45,       // destination -> source (urgent): every page is present
    Stream = 0x46,     // destination -> source (urgent): hold or resume the background stream
    Bitmap = 0x47,     // destination -> source (urgent, before RESUME): pages it already has
    Resume = 0x48,     // destination -> source (urgent): START for a session that continues
    // Version 2: a live source (precopy rounds, then the switchover).
    RoundEnd = 0x49,    // source -> destination (each streaming connection): a round's last page
    RoundDone = 0x4a,   // destination -> source (urgent): every page of the round is placed
    Discard = 0x4b,     // source -> destination (urgent, switchover): pages written since sent
    Switchover = 0x4c,  // source -> destination (urgent): the source's guest is paused; run yours
    Running = 0x4d,     // destination -> source (urgent): the discards applied, the guest runs
};

[[nodiscard]] std::string to_string(MessageType type);
[[nodiscard]] constexpr transport::FrameType frame_type(MessageType type) noexcept {
    return static_cast<transport::FrameType>(type);
}

inline constexpr std::size_t kMaxRegions = 64;
inline constexpr std::uint64_t kMinPageSize = 4096;
inline constexpr std::uint64_t kMaxPageSize = 1ULL << 30;
// A PAGES frame carries at most this many bytes of page data (and never less than one page).
inline constexpr std::uint64_t kMaxRunBytes = 1ULL << 20;

[[nodiscard]] constexpr std::uint64_t max_pages_per_frame(std::uint64_t page_size) noexcept {
    return page_size >= kMaxRunBytes ? 1 : kMaxRunBytes / page_size;
}

// ---- LAYOUT: 16 + 32 per region.
//   0 u32 region_count (1..64)   4 u32 flags (0)   8 u64 total_pages
//   per region: u32 id (= its index), u32 reserved, u64 page_size, u64 length, u64 reserved
struct RegionInfo {
    std::uint32_t id = 0;
    std::uint64_t page_size = 0;  // a power of two, 4 KiB .. 1 GiB
    std::uint64_t length = 0;     // a non-zero multiple of page_size

    [[nodiscard]] std::uint64_t pages() const noexcept { return length / page_size; }
    bool operator==(const RegionInfo&) const = default;
};

struct Layout {
    // flags bit 0 (version 2): the source's guest runs; precopy rounds come first, and the
    // destination's guest waits for SWITCHOVER.
    static constexpr std::uint32_t kLive = 1U << 0;
    std::vector<RegionInfo> regions;
    std::uint32_t flags = 0;

    [[nodiscard]] bool live() const noexcept { return (flags & kLive) != 0; }

    [[nodiscard]] std::uint64_t total_pages() const noexcept;
    [[nodiscard]] std::uint64_t total_bytes() const noexcept;
    // "2 regions: #0 1 GiB of 4 KiB pages, #1 64 MiB of 2 MiB pages"
    [[nodiscard]] std::string describe() const;
    // The guest's shape: the regions (whether the source runs is not part of it).
    bool operator==(const Layout& other) const { return regions == other.regions; }
};

// Every region well formed, ids 0..n-1 in order, at most kMaxRegions.
[[nodiscard]] std::expected<void, transport::Failure> validate(const Layout& layout);

[[nodiscard]] std::vector<std::byte> encode(const Layout& layout);
[[nodiscard]] std::expected<Layout, transport::Failure> decode_layout(
    std::span<const std::byte> payload);

// ---- START (16): u32 flags, u32 reserved, u64 reserved.
struct Start {
    static constexpr std::uint32_t kWantHashes = 1U << 0;  // every raw page comes with its XXH3-64
    // The background stream waits for a STREAM that resumes it; only requests are answered.
    static constexpr std::uint32_t kStreamHeld = 1U << 1;
    // No bulk connections: the stream shares the urgent connection, behind the answers (the
    // single-connection design, kept for comparison and for links where one socket is all).
    static constexpr std::uint32_t kStreamOnUrgent = 1U << 2;
    // Version 3: the encodings this destination accepts besides raw and zero runs.
    static constexpr std::uint32_t kAcceptLz4 = 1U << 8;
    static constexpr std::uint32_t kAcceptZstd = 1U << 9;
    // Version 4: compressed runs may carry a zero map (PagesHeader::kZeroMap).
    static constexpr std::uint32_t kAcceptZeroMap = 1U << 10;
    static constexpr std::uint32_t kKnownFlags =
        kWantHashes | kStreamHeld | kStreamOnUrgent | kAcceptLz4 | kAcceptZstd | kAcceptZeroMap;
    std::uint32_t flags = 0;
};
[[nodiscard]] std::vector<std::byte> encode(const Start& start);
[[nodiscard]] std::expected<Start, transport::Failure> decode_start(
    std::span<const std::byte> payload);

// ---- STREAM (16): u32 flags (bit 0: hold), u32 reserved, u64 reserved. After START only.
struct Stream {
    static constexpr std::uint32_t kHold = 1U << 0;
    std::uint32_t flags = 0;
};
[[nodiscard]] std::vector<std::byte> encode(const Stream& stream);
[[nodiscard]] std::expected<Stream, transport::Failure> decode_stream(
    std::span<const std::byte> payload);

// ---- BITMAP: a 32-byte descriptor, then the bits (bit i of word w: page first + 64 w + i).
//   0 u32 region   4 u32 reserved   8 u64 first_page (a multiple of 64)   16 u64 count
//  24 u64 reserved; then ceil(count / 64) u64 words, bits past count zero, at most 1 MiB.
struct BitmapChunk {
    std::uint32_t region = 0;
    std::uint64_t first_page = 0;
    std::uint64_t count = 0;
    std::vector<std::uint64_t> words;
};
inline constexpr std::size_t kBitmapHeaderSize = 32;
inline constexpr std::uint64_t kMaxBitmapPages = kMaxRunBytes * 8;  // pages per BITMAP frame
[[nodiscard]] std::vector<std::byte> encode(const BitmapChunk& chunk);
// Every field checked against the layout (the run inside the region, the length exact).
[[nodiscard]] std::expected<BitmapChunk, transport::Failure> decode_bitmap(
    std::span<const std::byte> payload, const Layout& layout);

// ---- RESUME (16): u32 flags (START's), u32 phase, u64 pages_present (the bits set in the
// BITMAPs before it: a check that none was lost). phase (version 2, a live source only): 0 the
// destination's guest has not run (no SWITCHOVER applied), 1 it runs (SWITCHOVER applied).
struct Resume {
    static constexpr std::uint32_t kSwitchedOver = 1;
    std::uint32_t flags = 0;
    std::uint32_t phase = 0;
    std::uint64_t pages_present = 0;
};
[[nodiscard]] std::vector<std::byte> encode(const Resume& resume);
[[nodiscard]] std::expected<Resume, transport::Failure> decode_resume(
    std::span<const std::byte> payload);

// ---- REQUEST (16): u32 region, u32 count, u64 first_page. Checked against the layout.
struct Request {
    std::uint32_t region = 0;
    std::uint32_t count = 0;
    std::uint64_t first_page = 0;
};
inline constexpr std::size_t kRequestSize = 16;
[[nodiscard]] std::vector<std::byte> encode(const Request& request);
[[nodiscard]] std::expected<Request, transport::Failure> decode_request(
    std::span<const std::byte> payload, const Layout& layout);

// ---- PAGES: a 24-byte descriptor, then for raw runs the hashes (when flagged) and the data.
//   0 u32 region   4 u8 encoding   5 u8 flags   6 u16 reserved   8 u64 first_page
//  16 u32 count   20 u32 reserved
// Version 3, only where START accepted them: Lz4 (one LZ4 block) and Zstd (one zstd frame that
// states its content size), each decompressing to exactly count * page_size bytes and
// shorter than that on the wire (a run that does not shrink goes raw).
// Version 4, only where START accepted it: a compressed run flagged kZeroMap has ceil(count /
// 64) u64 words after the descriptor (bit i of word w: page first + 64 w + i is all zeros; bits
// past count clear; at least one page is not zero), before the hashes (of every page, zero ones
// included); its compressed bytes hold only the pages not in the map, in order, and expand to
// exactly their size. The source takes the short gaps of zero pages between data pages into a
// compressed run this way (it reads no zero page, and sends none), so that it compresses a
// few larger runs where it would compress many small ones.
enum class Encoding : std::uint8_t { Invalid = 0, Raw = 1, Zero = 2, Lz4 = 3, Zstd = 4 };
[[nodiscard]] const char* name(Encoding encoding) noexcept;
[[nodiscard]] constexpr bool compressed(Encoding encoding) noexcept {
    return encoding == Encoding::Lz4 || encoding == Encoding::Zstd;
}
// Which encodings START's flags accept (raw and zero always).
[[nodiscard]] constexpr bool accepts(std::uint32_t start_flags, Encoding encoding) noexcept {
    switch (encoding) {
        case Encoding::Raw:
        case Encoding::Zero:
            return true;
        case Encoding::Lz4:
            return (start_flags & Start::kAcceptLz4) != 0;
        case Encoding::Zstd:
            return (start_flags & Start::kAcceptZstd) != 0;
        default:
            return false;
    }
}

struct PagesHeader {
    static constexpr std::uint8_t kHashes = 1U << 0;   // count u64 XXH3-64 values follow
    static constexpr std::uint8_t kAnswer = 1U << 1;   // sent because the destination asked
    static constexpr std::uint8_t kZeroMap = 1U << 2;  // a compressed run's zero map follows
    std::uint32_t region = 0;
    Encoding encoding = Encoding::Invalid;
    std::uint8_t flags = 0;
    std::uint64_t first_page = 0;
    std::uint32_t count = 0;
};
inline constexpr std::size_t kPagesHeaderSize = 24;
// The most pages a PAGES frame holds (kMaxRunBytes of the smallest pages), and the zero map's
// most words.
inline constexpr std::uint64_t kMaxRunPages = kMaxRunBytes / kMinPageSize;
inline constexpr std::size_t kMaxZeroMapWords = kMaxRunPages / 64;
// Bit i of a zero map held as words: page first + i is zero.
[[nodiscard]] constexpr bool zero_bit(std::span<const std::uint64_t> words,
                                      std::uint64_t i) noexcept {
    return i / 64 < words.size() && ((words[i / 64] >> (i % 64)) & 1U) != 0;
}

[[nodiscard]] std::array<std::byte, kPagesHeaderSize> encode(const PagesHeader& header);
// The descriptor and its zero map (`zero_words`, flagged kZeroMap when given) as one piece.
[[nodiscard]] std::vector<std::byte> encode(const PagesHeader& header,
                                            std::span<const std::uint64_t> zero_words);

// A validated PAGES frame, viewing its payload.
struct PagesView {
    PagesHeader header;
    std::span<const std::byte> hashes;  // count * 8 bytes, or empty
    // count * page_size bytes for Raw, empty for Zero, the compressed bytes (1 .. raw - 1) for
    // Lz4 and Zstd (compression.hpp expands them; hashes are of the expanded pages).
    std::span<const std::byte> data;
    std::span<const std::byte> zero_map;  // ceil(count / 64) words, or empty
    // Expanded from a compressed run: zero pages may lie between its data pages (placed as
    // zero pages, as a ZERO run's are). Not a wire field.
    bool zeros_inside = false;
    [[nodiscard]] std::uint64_t hash(std::size_t i) const noexcept;
    [[nodiscard]] bool zero_at(std::uint64_t i) const noexcept;  // in the zero map
    [[nodiscard]] std::uint64_t zero_pages() const noexcept;     // set in the zero map
    // count * page_size: the run's bytes once expanded.
    [[nodiscard]] std::uint64_t raw_bytes(const Layout& layout) const noexcept;
    // What a compressed run's bytes expand to: raw_bytes less the zero map's pages.
    [[nodiscard]] std::uint64_t packed_bytes(const Layout& layout) const noexcept;
};
// Every field checked against the layout: region, encoding (and that START accepted it:
// `start_flags`), flags, the run inside the region, at most max_pages_per_frame, and the payload
// exactly as long as the descriptor says (a compressed run: shorter than its raw pages).
[[nodiscard]] std::expected<PagesView, transport::Failure> decode_pages(
    std::span<const std::byte> payload, const Layout& layout, std::uint32_t start_flags = 0);

// ---- STREAM_END (16) and DONE (16): u64 count, u64 reserved.
struct StreamEnd {
    std::uint64_t pages_sent = 0;
};
struct Done {
    std::uint64_t pages_present = 0;
};
[[nodiscard]] std::vector<std::byte> encode(const StreamEnd& end);
[[nodiscard]] std::vector<std::byte> encode(const Done& done);
[[nodiscard]] std::expected<StreamEnd, transport::Failure> decode_stream_end(
    std::span<const std::byte> p);
[[nodiscard]] std::expected<Done, transport::Failure> decode_done(std::span<const std::byte> p);

// ---- Version 2: a live source.
// ROUND_END (16), on every connection that streams, after its last page of the round:
//   u32 round, u32 reserved, u64 pages_sent (this round, on this connection, in this session)
struct RoundEnd {
    std::uint32_t round = 0;
    std::uint64_t pages_sent = 0;
};
// ROUND_DONE (16): u32 round, u32 reserved, u64 pages_present (the destination's count).
struct RoundDone {
    std::uint32_t round = 0;
    std::uint64_t pages_present = 0;
};
// DISCARD: BITMAP's layout; a set bit: the page was written after it was sent, so the
// destination's copy is stale and must go before its guest runs. Only before SWITCHOVER.
// SWITCHOVER (16): u32 rounds (precopy rounds sent), u32 reserved, u64 pages_discarded (the bits
// set in the DISCARDs before it).
struct Switchover {
    std::uint32_t rounds = 0;
    std::uint64_t pages_discarded = 0;
};
// RUNNING (16): u64 pages_missing (after the discards), u64 reserved.
struct Running {
    std::uint64_t pages_missing = 0;
};
// The most rounds a source may run (the field is 32 bits; no real convergence needs more).
inline constexpr std::uint32_t kMaxRounds = 1000;

[[nodiscard]] std::vector<std::byte> encode(const RoundEnd& end);
[[nodiscard]] std::vector<std::byte> encode(const RoundDone& done);
[[nodiscard]] std::vector<std::byte> encode(const Switchover& switchover);
[[nodiscard]] std::vector<std::byte> encode(const Running& running);
[[nodiscard]] std::expected<RoundEnd, transport::Failure> decode_round_end(
    std::span<const std::byte> p);
[[nodiscard]] std::expected<RoundDone, transport::Failure> decode_round_done(
    std::span<const std::byte> p);
// A DISCARD chunk: BITMAP's checks, under its own name.
[[nodiscard]] std::expected<BitmapChunk, transport::Failure> decode_discard(
    std::span<const std::byte> payload, const Layout& layout);
[[nodiscard]] std::expected<Switchover, transport::Failure> decode_switchover(
    std::span<const std::byte> p);
[[nodiscard]] std::expected<Running, transport::Failure> decode_running(
    std::span<const std::byte> p);

}  // namespace uffdm::migration::wire
