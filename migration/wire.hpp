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

// See protocol.md beside this file for the sequence and both state machines.
inline constexpr std::uint16_t kVersion = 1;

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
    std::vector<RegionInfo> regions;

    [[nodiscard]] std::uint64_t total_pages() const noexcept;
    [[nodiscard]] std::uint64_t total_bytes() const noexcept;
    // "2 regions: #0 1 GiB of 4 KiB pages, #1 64 MiB of 2 MiB pages"
    [[nodiscard]] std::string describe() const;
    bool operator==(const Layout&) const = default;
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
    static constexpr std::uint32_t kKnownFlags = kWantHashes | kStreamHeld | kStreamOnUrgent;
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

// ---- RESUME (16): u32 flags (START's), u32 reserved, u64 pages_present (the bits set in the
// BITMAPs before it: a check that none was lost).
struct Resume {
    std::uint32_t flags = 0;
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
enum class Encoding : std::uint8_t { Invalid = 0, Raw = 1, Zero = 2 };

struct PagesHeader {
    static constexpr std::uint8_t kHashes = 1U << 0;  // count u64 XXH3-64 values follow
    static constexpr std::uint8_t kAnswer = 1U << 1;  // sent because the destination asked
    std::uint32_t region = 0;
    Encoding encoding = Encoding::Invalid;
    std::uint8_t flags = 0;
    std::uint64_t first_page = 0;
    std::uint32_t count = 0;
};
inline constexpr std::size_t kPagesHeaderSize = 24;

[[nodiscard]] std::array<std::byte, kPagesHeaderSize> encode(const PagesHeader& header);

// A validated PAGES frame, viewing its payload.
struct PagesView {
    PagesHeader header;
    std::span<const std::byte> hashes;  // count * 8 bytes, or empty
    std::span<const std::byte> data;    // count * page_size bytes for Raw, empty for Zero
    [[nodiscard]] std::uint64_t hash(std::size_t i) const noexcept;
};
// Every field checked against the layout: region, encoding, flags, the run inside the region,
// at most max_pages_per_frame, and the payload exactly as long as the descriptor says.
[[nodiscard]] std::expected<PagesView, transport::Failure> decode_pages(
    std::span<const std::byte> payload, const Layout& layout);

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

}  // namespace uffdm::migration::wire
