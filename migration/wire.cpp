// wire.cpp — Encoding and strict decoding of LAYOUT, START, REQUEST, PAGES, STREAM_END, DONE.
#include "migration/wire.hpp"

#include <algorithm>
#include <bit>

#include "transport/byte_order.hpp"

namespace uffdm::migration::wire {

using transport::load_le;
using transport::store_le;

namespace {

transport::Failure violation(std::string detail) {
    return transport::failure(Errc::ProtocolViolation, std::move(detail));
}

std::expected<void, transport::Failure> exact_size(std::span<const std::byte> p, std::size_t want,
                                                   const char* what) {
    if (p.size() != want) {
        return std::unexpected(violation(std::string(what) + " payload is " +
                                         std::to_string(p.size()) + " bytes, not " +
                                         std::to_string(want)));
    }
    return {};
}

bool all_zero(std::span<const std::byte> bytes) {
    return std::all_of(bytes.begin(), bytes.end(), [](std::byte b) { return b == std::byte{0}; });
}

std::string size_text(std::uint64_t bytes) {
    const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int unit = 0;
    while (unit < 4 && bytes >= 1024 && bytes % 1024 == 0) {
        bytes /= 1024;
        ++unit;
    }
    return std::to_string(bytes) + " " + units[unit];
}

// The run [first, first+count) lies inside the region (no overflow).
std::expected<const RegionInfo*, transport::Failure> check_run(const Layout& layout,
                                                               std::uint32_t region,
                                                               std::uint64_t first,
                                                               std::uint64_t count,
                                                               const char* what) {
    if (region >= layout.regions.size()) {
        return std::unexpected(violation(std::string(what) + " region " + std::to_string(region) +
                                         " does not exist (the layout has " +
                                         std::to_string(layout.regions.size()) + ")"));
    }
    const RegionInfo& info = layout.regions[region];
    if (count == 0) {
        return std::unexpected(violation(std::string(what) + " of 0 pages"));
    }
    if (count > max_pages_per_frame(info.page_size)) {
        return std::unexpected(violation(std::string(what) + " of " + std::to_string(count) +
                                         " pages exceeds " +
                                         std::to_string(max_pages_per_frame(info.page_size))));
    }
    if (first >= info.pages() || count > info.pages() - first) {
        return std::unexpected(violation(std::string(what) + " pages " + std::to_string(first) +
                                         ".." + std::to_string(first + count - 1) +
                                         " outside region " + std::to_string(region) + " (" +
                                         std::to_string(info.pages()) + " pages)"));
    }
    return &info;
}

}  // namespace

std::string to_string(MessageType type) {
    switch (type) {
        case MessageType::Layout:
            return "LAYOUT";
        case MessageType::Start:
            return "START";
        case MessageType::Request:
            return "REQUEST";
        case MessageType::Pages:
            return "PAGES";
        case MessageType::StreamEnd:
            return "STREAM_END";
        case MessageType::Done:
            return "DONE";
        case MessageType::Stream:
            return "STREAM";
        case MessageType::Bitmap:
            return "BITMAP";
        case MessageType::Resume:
            return "RESUME";
        case MessageType::RoundEnd:
            return "ROUND_END";
        case MessageType::RoundDone:
            return "ROUND_DONE";
        case MessageType::Discard:
            return "DISCARD";
        case MessageType::Switchover:
            return "SWITCHOVER";
        case MessageType::Running:
            return "RUNNING";
        case MessageType::Invalid:
            break;
    }
    return "message " + std::to_string(static_cast<unsigned>(type));
}

std::uint64_t Layout::total_pages() const noexcept {
    std::uint64_t total = 0;
    for (const auto& r : regions) {
        total += r.pages();
    }
    return total;
}

std::uint64_t Layout::total_bytes() const noexcept {
    std::uint64_t total = 0;
    for (const auto& r : regions) {
        total += r.length;
    }
    return total;
}

std::string Layout::describe() const {
    std::string out =
        std::to_string(regions.size()) + (regions.size() == 1 ? " region" : " regions");
    for (std::size_t i = 0; i < regions.size(); ++i) {
        out += (i == 0 ? ": " : ", ");
        out += "#" + std::to_string(regions[i].id) + " " + size_text(regions[i].length) + " of " +
               size_text(regions[i].page_size) + " pages";
    }
    return out;
}

std::expected<void, transport::Failure> validate(const Layout& layout) {
    if (layout.regions.empty() || layout.regions.size() > kMaxRegions) {
        return std::unexpected(violation("layout has " + std::to_string(layout.regions.size()) +
                                         " regions, not 1.." + std::to_string(kMaxRegions)));
    }
    for (std::size_t i = 0; i < layout.regions.size(); ++i) {
        const RegionInfo& r = layout.regions[i];
        std::string which = "region " + std::to_string(i);
        if (r.id != i) {
            return std::unexpected(violation(which + " has id " + std::to_string(r.id)));
        }
        if (!std::has_single_bit(r.page_size) || r.page_size < kMinPageSize ||
            r.page_size > kMaxPageSize) {
            return std::unexpected(violation(which + " page size " + std::to_string(r.page_size) +
                                             " is not a power of two in 4 KiB..1 GiB"));
        }
        if (r.length == 0 || r.length % r.page_size != 0) {
            return std::unexpected(violation(which + " length " + std::to_string(r.length) +
                                             " is not a non-zero multiple of its page size " +
                                             std::to_string(r.page_size)));
        }
    }
    return {};
}

std::vector<std::byte> encode(const Layout& layout) {
    std::vector<std::byte> out(16 + 32 * layout.regions.size());
    store_le<std::uint32_t>(out, 0, static_cast<std::uint32_t>(layout.regions.size()));
    store_le<std::uint32_t>(out, 4, layout.flags);
    store_le<std::uint64_t>(out, 8, layout.total_pages());
    for (std::size_t i = 0; i < layout.regions.size(); ++i) {
        std::size_t at = 16 + 32 * i;
        store_le<std::uint32_t>(out, at, layout.regions[i].id);
        store_le<std::uint64_t>(out, at + 8, layout.regions[i].page_size);
        store_le<std::uint64_t>(out, at + 16, layout.regions[i].length);
    }
    return out;
}

std::expected<Layout, transport::Failure> decode_layout(std::span<const std::byte> p) {
    if (p.size() < 16) {
        return std::unexpected(violation("LAYOUT payload of " + std::to_string(p.size()) +
                                         " bytes is shorter than its 16-byte head"));
    }
    auto count = load_le<std::uint32_t>(p, 0);
    if (count == 0 || count > kMaxRegions) {
        return std::unexpected(violation("LAYOUT region_count " + std::to_string(count) +
                                         " outside 1.." + std::to_string(kMaxRegions)));
    }
    if (auto ok = exact_size(p, 16 + 32 * std::size_t{count}, "LAYOUT"); !ok) {
        return std::unexpected(ok.error());
    }
    Layout layout;
    layout.flags = load_le<std::uint32_t>(p, 4);
    if ((layout.flags & ~Layout::kLive) != 0) {
        return std::unexpected(violation("LAYOUT flags have reserved bits set"));
    }
    for (std::uint32_t i = 0; i < count; ++i) {
        std::size_t at = 16 + 32 * std::size_t{i};
        if (load_le<std::uint32_t>(p, at + 4) != 0 || load_le<std::uint64_t>(p, at + 24) != 0) {
            return std::unexpected(
                violation("LAYOUT region " + std::to_string(i) + " has reserved bytes set"));
        }
        layout.regions.push_back({load_le<std::uint32_t>(p, at), load_le<std::uint64_t>(p, at + 8),
                                  load_le<std::uint64_t>(p, at + 16)});
    }
    if (auto ok = validate(layout); !ok) {
        return std::unexpected(transport::Failure{ok.error().code, "LAYOUT " + ok.error().detail});
    }
    auto total = load_le<std::uint64_t>(p, 8);
    if (total != layout.total_pages()) {
        return std::unexpected(violation("LAYOUT total_pages " + std::to_string(total) +
                                         " but the regions hold " +
                                         std::to_string(layout.total_pages())));
    }
    return layout;
}

std::vector<std::byte> encode(const Start& start) {
    std::vector<std::byte> out(16);
    store_le<std::uint32_t>(out, 0, start.flags);
    return out;
}

std::expected<Start, transport::Failure> decode_start(std::span<const std::byte> p) {
    if (auto ok = exact_size(p, 16, "START"); !ok) {
        return std::unexpected(ok.error());
    }
    Start start{load_le<std::uint32_t>(p, 0)};
    if ((start.flags & ~Start::kKnownFlags) != 0 || !all_zero(p.subspan(4))) {
        return std::unexpected(violation("START has reserved bits set"));
    }
    return start;
}

std::vector<std::byte> encode(const Stream& stream) {
    std::vector<std::byte> out(16);
    store_le<std::uint32_t>(out, 0, stream.flags);
    return out;
}

std::expected<Stream, transport::Failure> decode_stream(std::span<const std::byte> p) {
    if (auto ok = exact_size(p, 16, "STREAM"); !ok) {
        return std::unexpected(ok.error());
    }
    Stream stream{load_le<std::uint32_t>(p, 0)};
    if ((stream.flags & ~Stream::kHold) != 0 || !all_zero(p.subspan(4))) {
        return std::unexpected(violation("STREAM has reserved bits set"));
    }
    return stream;
}

std::vector<std::byte> encode(const BitmapChunk& chunk) {
    std::vector<std::byte> out(kBitmapHeaderSize + chunk.words.size() * 8);
    store_le<std::uint32_t>(out, 0, chunk.region);
    store_le<std::uint64_t>(out, 8, chunk.first_page);
    store_le<std::uint64_t>(out, 16, chunk.count);
    for (std::size_t i = 0; i < chunk.words.size(); ++i) {
        store_le<std::uint64_t>(out, kBitmapHeaderSize + i * 8, chunk.words[i]);
    }
    return out;
}

namespace {

std::expected<BitmapChunk, transport::Failure> decode_bits(std::span<const std::byte> p,
                                                           const Layout& layout,
                                                           const std::string& name) {
    if (p.size() < kBitmapHeaderSize) {
        return std::unexpected(violation(name + " of " + std::to_string(p.size()) +
                                         " bytes is shorter than its 32-byte descriptor"));
    }
    BitmapChunk chunk{load_le<std::uint32_t>(p, 0),
                      load_le<std::uint64_t>(p, 8),
                      load_le<std::uint64_t>(p, 16),
                      {}};
    if (load_le<std::uint32_t>(p, 4) != 0 || load_le<std::uint64_t>(p, 24) != 0) {
        return std::unexpected(violation(name + " has reserved bytes set"));
    }
    if (chunk.region >= layout.regions.size()) {
        return std::unexpected(violation(name + " region " + std::to_string(chunk.region) +
                                         " does not exist (" +
                                         std::to_string(layout.regions.size()) + " regions)"));
    }
    std::uint64_t pages = layout.regions[chunk.region].pages();
    if (chunk.count == 0 || chunk.count > kMaxBitmapPages || chunk.first_page % 64 != 0 ||
        chunk.first_page >= pages || chunk.count > pages - chunk.first_page) {
        return std::unexpected(violation(
            name + " pages " + std::to_string(chunk.first_page) + " +" +
            std::to_string(chunk.count) + " do not fit region " + std::to_string(chunk.region) +
            " (" + std::to_string(pages) + " pages; start a multiple of 64, at most " +
            std::to_string(kMaxBitmapPages) + " a frame)"));
    }
    std::uint64_t words = (chunk.count + 63) / 64;
    if (p.size() != kBitmapHeaderSize + words * 8) {
        return std::unexpected(violation(name + " of " + std::to_string(chunk.count) +
                                         " pages must be " +
                                         std::to_string(kBitmapHeaderSize + words * 8) +
                                         " bytes, not " + std::to_string(p.size())));
    }
    chunk.words.resize(words);
    for (std::uint64_t i = 0; i < words; ++i) {
        chunk.words[i] = load_le<std::uint64_t>(p, kBitmapHeaderSize + i * 8);
    }
    if (chunk.count % 64 != 0 && (chunk.words.back() >> (chunk.count % 64)) != 0) {
        return std::unexpected(violation(name + " sets bits past its last page"));
    }
    return chunk;
}

// The 16-byte messages whose fields are a u32, a reserved u32 and a u64.
std::expected<std::pair<std::uint32_t, std::uint64_t>, transport::Failure> decode_u32_u64(
    std::span<const std::byte> p, const char* name) {
    if (auto ok = exact_size(p, 16, name); !ok) {
        return std::unexpected(ok.error());
    }
    if (load_le<std::uint32_t>(p, 4) != 0) {
        return std::unexpected(violation(std::string(name) + " has reserved bytes set"));
    }
    return std::pair{load_le<std::uint32_t>(p, 0), load_le<std::uint64_t>(p, 8)};
}

std::vector<std::byte> encode_u32_u64(std::uint32_t a, std::uint64_t b) {
    std::vector<std::byte> out(16);
    store_le<std::uint32_t>(out, 0, a);
    store_le<std::uint64_t>(out, 8, b);
    return out;
}

}  // namespace

std::expected<BitmapChunk, transport::Failure> decode_bitmap(std::span<const std::byte> p,
                                                             const Layout& layout) {
    return decode_bits(p, layout, "BITMAP");
}

std::expected<BitmapChunk, transport::Failure> decode_discard(std::span<const std::byte> p,
                                                              const Layout& layout) {
    return decode_bits(p, layout, "DISCARD");
}

std::vector<std::byte> encode(const RoundEnd& end) {
    return encode_u32_u64(end.round, end.pages_sent);
}

std::vector<std::byte> encode(const RoundDone& done) {
    return encode_u32_u64(done.round, done.pages_present);
}

std::vector<std::byte> encode(const Switchover& switchover) {
    return encode_u32_u64(switchover.rounds, switchover.pages_discarded);
}

std::vector<std::byte> encode(const Running& running) {
    std::vector<std::byte> out(16);
    store_le<std::uint64_t>(out, 0, running.pages_missing);
    return out;
}

namespace {

// ROUND_END and ROUND_DONE: a round number below kMaxRounds and a count.
std::expected<std::pair<std::uint32_t, std::uint64_t>, transport::Failure> decode_round(
    std::span<const std::byte> p, const char* name) {
    auto fields = decode_u32_u64(p, name);
    if (fields && fields->first >= kMaxRounds) {
        return std::unexpected(violation(std::string(name) + " round " +
                                         std::to_string(fields->first) + " is past the last (" +
                                         std::to_string(kMaxRounds - 1) + ")"));
    }
    return fields;
}

}  // namespace

std::expected<RoundEnd, transport::Failure> decode_round_end(std::span<const std::byte> p) {
    auto f = decode_round(p, "ROUND_END");
    if (!f) {
        return std::unexpected(f.error());
    }
    return RoundEnd{f->first, f->second};
}

std::expected<RoundDone, transport::Failure> decode_round_done(std::span<const std::byte> p) {
    auto f = decode_round(p, "ROUND_DONE");
    if (!f) {
        return std::unexpected(f.error());
    }
    return RoundDone{f->first, f->second};
}

std::expected<Switchover, transport::Failure> decode_switchover(std::span<const std::byte> p) {
    auto fields = decode_u32_u64(p, "SWITCHOVER");
    if (!fields) {
        return std::unexpected(fields.error());
    }
    if (fields->first > kMaxRounds) {
        return std::unexpected(violation("SWITCHOVER after " + std::to_string(fields->first) +
                                         " rounds; at most " + std::to_string(kMaxRounds)));
    }
    return Switchover{fields->first, fields->second};
}

std::expected<Running, transport::Failure> decode_running(std::span<const std::byte> p) {
    if (auto ok = exact_size(p, 16, "RUNNING"); !ok) {
        return std::unexpected(ok.error());
    }
    if (!all_zero(p.subspan(8))) {
        return std::unexpected(violation("RUNNING has reserved bytes set"));
    }
    return Running{load_le<std::uint64_t>(p, 0)};
}

std::vector<std::byte> encode(const Resume& resume) {
    std::vector<std::byte> out(16);
    store_le<std::uint32_t>(out, 0, resume.flags);
    store_le<std::uint32_t>(out, 4, resume.phase);
    store_le<std::uint64_t>(out, 8, resume.pages_present);
    return out;
}

std::expected<Resume, transport::Failure> decode_resume(std::span<const std::byte> p) {
    if (auto ok = exact_size(p, 16, "RESUME"); !ok) {
        return std::unexpected(ok.error());
    }
    Resume resume{load_le<std::uint32_t>(p, 0), load_le<std::uint32_t>(p, 4),
                  load_le<std::uint64_t>(p, 8)};
    if ((resume.flags & ~Start::kKnownFlags) != 0) {
        return std::unexpected(violation("RESUME has reserved bits set"));
    }
    if (resume.phase > Resume::kSwitchedOver) {
        return std::unexpected(
            violation("RESUME phase " + std::to_string(resume.phase) + " is unknown (0 or 1)"));
    }
    return resume;
}

std::vector<std::byte> encode(const Request& request) {
    std::vector<std::byte> out(kRequestSize);
    store_le<std::uint32_t>(out, 0, request.region);
    store_le<std::uint32_t>(out, 4, request.count);
    store_le<std::uint64_t>(out, 8, request.first_page);
    return out;
}

std::expected<Request, transport::Failure> decode_request(std::span<const std::byte> p,
                                                          const Layout& layout) {
    if (auto ok = exact_size(p, kRequestSize, "REQUEST"); !ok) {
        return std::unexpected(ok.error());
    }
    Request request{load_le<std::uint32_t>(p, 0), load_le<std::uint32_t>(p, 4),
                    load_le<std::uint64_t>(p, 8)};
    if (auto ok = check_run(layout, request.region, request.first_page, request.count, "REQUEST");
        !ok) {
        return std::unexpected(ok.error());
    }
    return request;
}

std::array<std::byte, kPagesHeaderSize> encode(const PagesHeader& h) {
    std::array<std::byte, kPagesHeaderSize> out{};
    store_le<std::uint32_t>(out, 0, h.region);
    store_le<std::uint8_t>(out, 4, static_cast<std::uint8_t>(h.encoding));
    store_le<std::uint8_t>(out, 5, h.flags);
    store_le<std::uint64_t>(out, 8, h.first_page);
    store_le<std::uint32_t>(out, 16, h.count);
    return out;
}

std::vector<std::byte> encode(const PagesHeader& header,
                              std::span<const std::uint64_t> zero_words) {
    PagesHeader h = header;
    if (!zero_words.empty()) {
        h.flags |= PagesHeader::kZeroMap;
    }
    auto descriptor = encode(h);
    std::vector<std::byte> out(descriptor.begin(), descriptor.end());
    out.resize(kPagesHeaderSize + 8 * zero_words.size());
    for (std::size_t w = 0; w < zero_words.size(); ++w) {
        store_le<std::uint64_t>(out, kPagesHeaderSize + 8 * w, zero_words[w]);
    }
    return out;
}

std::uint64_t PagesView::hash(std::size_t i) const noexcept {
    return load_le<std::uint64_t>(hashes, i * 8);
}

bool PagesView::zero_at(std::uint64_t i) const noexcept {
    if (zero_map.empty()) {
        return false;
    }
    return ((load_le<std::uint64_t>(zero_map, (i / 64) * 8) >> (i % 64)) & 1U) != 0;
}

std::uint64_t PagesView::zero_pages() const noexcept {
    std::uint64_t n = 0;
    for (std::size_t at = 0; at < zero_map.size(); at += 8) {
        n += static_cast<std::uint64_t>(std::popcount(load_le<std::uint64_t>(zero_map, at)));
    }
    return n;
}

std::uint64_t PagesView::packed_bytes(const Layout& layout) const noexcept {
    return layout.regions[header.region].page_size * (header.count - zero_pages());
}

const char* name(Encoding encoding) noexcept {
    switch (encoding) {
        case Encoding::Raw:
            return "raw";
        case Encoding::Zero:
            return "zero";
        case Encoding::Lz4:
            return "lz4";
        case Encoding::Zstd:
            return "zstd";
        default:
            return "invalid";
    }
}

std::uint64_t PagesView::raw_bytes(const Layout& layout) const noexcept {
    return layout.regions[header.region].page_size * header.count;
}

namespace {

// A compressed run's zero map: negotiated, whole, no bit past the run, not every page.
std::expected<std::span<const std::byte>, transport::Failure> zero_map(std::span<const std::byte> p,
                                                                       const PagesHeader& h,
                                                                       std::uint32_t start_flags) {
    std::string what = "PAGES " + std::string(name(h.encoding)) + " run of " +
                       std::to_string(h.count) + " pages at page " + std::to_string(h.first_page);
    if (!compressed(h.encoding)) {
        return std::unexpected(violation(what + " has a zero map (only compressed runs may)"));
    }
    if ((start_flags & Start::kAcceptZeroMap) == 0) {
        return std::unexpected(violation(
            what + " has a zero map, which was not negotiated (START did not accept it)"));
    }
    std::size_t words = (h.count + 63) / 64;
    if (p.size() < kPagesHeaderSize + 8 * words) {
        return std::unexpected(violation(what + ": its zero map is cut short"));
    }
    auto map = p.subspan(kPagesHeaderSize, 8 * words);
    std::uint64_t zeros = 0;
    for (std::size_t w = 0; w < words; ++w) {
        std::uint64_t bits = load_le<std::uint64_t>(map, 8 * w);
        std::uint64_t past = std::min<std::uint64_t>(64, h.count - 64 * w);
        if (past < 64 && (bits >> past) != 0) {
            return std::unexpected(violation(what + ": its zero map marks pages past the run"));
        }
        zeros += static_cast<std::uint64_t>(std::popcount(bits));
    }
    if (zeros == h.count) {
        return std::unexpected(
            violation(what + ": its zero map marks every page (that is a ZERO run)"));
    }
    return map;
}

}  // namespace

std::expected<PagesView, transport::Failure> decode_pages(std::span<const std::byte> p,
                                                          const Layout& layout,
                                                          std::uint32_t start_flags) {
    if (p.size() < kPagesHeaderSize) {
        return std::unexpected(violation("PAGES payload of " + std::to_string(p.size()) +
                                         " bytes is shorter than its descriptor"));
    }
    PagesView view;
    PagesHeader& h = view.header;
    h.region = load_le<std::uint32_t>(p, 0);
    h.encoding = static_cast<Encoding>(load_le<std::uint8_t>(p, 4));
    h.flags = load_le<std::uint8_t>(p, 5);
    h.first_page = load_le<std::uint64_t>(p, 8);
    h.count = load_le<std::uint32_t>(p, 16);
    if (load_le<std::uint16_t>(p, 6) != 0 || load_le<std::uint32_t>(p, 20) != 0 ||
        (h.flags & ~(PagesHeader::kHashes | PagesHeader::kAnswer | PagesHeader::kZeroMap)) != 0) {
        return std::unexpected(violation("PAGES has reserved bits set"));
    }
    if (h.encoding != Encoding::Raw && h.encoding != Encoding::Zero && !compressed(h.encoding)) {
        return std::unexpected(violation(
            "PAGES encoding " + std::to_string(static_cast<unsigned>(h.encoding)) + " is unknown"));
    }
    if (!accepts(start_flags, h.encoding)) {
        return std::unexpected(violation(std::string("PAGES encoding ") + name(h.encoding) +
                                         " was not negotiated (START did not accept it)"));
    }
    auto region = check_run(layout, h.region, h.first_page, h.count, "PAGES");
    if (!region) {
        return std::unexpected(region.error());
    }
    bool hashes = (h.flags & PagesHeader::kHashes) != 0;
    if (h.encoding == Encoding::Zero && hashes) {
        return std::unexpected(violation("PAGES zero run with hashes"));
    }
    std::uint64_t hash_bytes = hashes ? 8ULL * h.count : 0;
    std::uint64_t raw_bytes = (*region)->page_size * h.count;
    std::uint64_t map_bytes = 0;
    if ((h.flags & PagesHeader::kZeroMap) != 0) {
        auto map = zero_map(p, h, start_flags);
        if (!map) {
            return std::unexpected(map.error());
        }
        view.zero_map = *map;
        map_bytes = map->size();
    }
    std::uint64_t before_data = kPagesHeaderSize + map_bytes + hash_bytes;
    if (compressed(h.encoding)) {
        // Whatever follows the hashes is the compressed run; it must be worth compressing.
        if (p.size() <= before_data || p.size() - before_data >= raw_bytes) {
            return std::unexpected(violation(
                std::string("PAGES ") + name(h.encoding) + " run of " + std::to_string(h.count) +
                " pages carries " +
                std::to_string(p.size() - std::min<std::uint64_t>(p.size(), before_data)) +
                " compressed bytes; 1 to " + std::to_string(raw_bytes - 1) +
                " (fewer than its raw bytes) are allowed"));
        }
        view.hashes = p.subspan(kPagesHeaderSize + map_bytes, hash_bytes);
        view.data = p.subspan(before_data);
        return view;
    }
    std::uint64_t data_bytes = h.encoding == Encoding::Raw ? raw_bytes : 0;
    std::uint64_t want = kPagesHeaderSize + hash_bytes + data_bytes;
    if (p.size() != want) {
        return std::unexpected(violation(
            "PAGES of " + std::to_string(h.count) + " " + name(h.encoding) + " pages of " +
            std::to_string((*region)->page_size) + " bytes should be " + std::to_string(want) +
            " bytes, not " + std::to_string(p.size()) + " (short or wrong-size pages)"));
    }
    view.hashes = p.subspan(kPagesHeaderSize, hash_bytes);
    view.data = p.subspan(kPagesHeaderSize + hash_bytes, data_bytes);
    return view;
}

std::vector<std::byte> encode(const StreamEnd& end) {
    std::vector<std::byte> out(16);
    store_le<std::uint64_t>(out, 0, end.pages_sent);
    return out;
}

std::vector<std::byte> encode(const Done& done) {
    std::vector<std::byte> out(16);
    store_le<std::uint64_t>(out, 0, done.pages_present);
    return out;
}

std::expected<StreamEnd, transport::Failure> decode_stream_end(std::span<const std::byte> p) {
    if (auto ok = exact_size(p, 16, "STREAM_END"); !ok) {
        return std::unexpected(ok.error());
    }
    if (!all_zero(p.subspan(8))) {
        return std::unexpected(violation("STREAM_END has reserved bytes set"));
    }
    return StreamEnd{load_le<std::uint64_t>(p, 0)};
}

std::expected<Done, transport::Failure> decode_done(std::span<const std::byte> p) {
    if (auto ok = exact_size(p, 16, "DONE"); !ok) {
        return std::unexpected(ok.error());
    }
    if (!all_zero(p.subspan(8))) {
        return std::unexpected(violation("DONE has reserved bytes set"));
    }
    return Done{load_le<std::uint64_t>(p, 0)};
}

}  // namespace uffdm::migration::wire
