// wire_test.cpp — Every migration message: a round trip, and each field's bad values refused.
#include <gtest/gtest.h>

#include <tuple>

#include "migration/wire.hpp"
#include "transport/byte_order.hpp"

namespace uffdm::migration::wire {
namespace {

using transport::store_le;

Layout two_regions() {
    return Layout{{{0, 4096, 1 << 20}, {1, 2 << 20, 8 << 20}}};
}

template <typename T>
void expect_refused(const std::expected<T, transport::Failure>& result, const std::string& words) {
    ASSERT_FALSE(result) << "accepted";
    EXPECT_EQ(result.error().code, Errc::ProtocolViolation);
    EXPECT_NE(result.error().detail.find(words), std::string::npos) << result.error().detail;
}

TEST(Wire, LayoutRoundTripsAndDescribesItself) {
    Layout layout = two_regions();
    auto decoded = decode_layout(encode(layout));
    ASSERT_TRUE(decoded) << decoded.error().detail;
    EXPECT_EQ(*decoded, layout);
    EXPECT_EQ(layout.total_pages(), 256u + 4u);
    EXPECT_EQ(layout.describe(), "2 regions: #0 1 MiB of 4 KiB pages, #1 8 MiB of 2 MiB pages");
}

TEST(Wire, LayoutRejectsEveryBadField) {
    auto bytes = encode(two_regions());
    auto with = [&](std::size_t offset, auto value) {
        auto copy = bytes;
        store_le<decltype(value)>(copy, offset, value);
        return decode_layout(copy);
    };
    expect_refused(with(0, std::uint32_t{0}), "region_count 0");
    expect_refused(with(0, std::uint32_t{65}), "region_count 65");
    expect_refused(with(0, std::uint32_t{3}), "payload is");  // count says 3, two follow
    expect_refused(with(4, std::uint32_t{2}), "reserved");    // bit 0 is kLive (version 2)
    expect_refused(with(8, std::uint64_t{7}), "total_pages 7");
    expect_refused(with(16, std::uint32_t{5}), "id 5");
    expect_refused(with(20, std::uint32_t{1}), "reserved");
    expect_refused(with(24, std::uint64_t{3000}), "page size 3000");
    expect_refused(with(24, std::uint64_t{1024}), "page size 1024");
    expect_refused(with(32, std::uint64_t{4097}), "length 4097");
    expect_refused(with(32, std::uint64_t{0}), "length 0");
    expect_refused(with(40, std::uint64_t{1}), "reserved");
    expect_refused(decode_layout(std::span(bytes).first(10)), "shorter");
}

TEST(Wire, StartRoundTripsAndRejectsReservedBits) {
    auto decoded = decode_start(encode(Start{Start::kWantHashes}));
    ASSERT_TRUE(decoded);
    EXPECT_EQ(decoded->flags, Start::kWantHashes);
    std::uint32_t every = Start::kWantHashes | Start::kStreamHeld | Start::kStreamOnUrgent;
    auto all = decode_start(encode(Start{every}));
    ASSERT_TRUE(all);
    EXPECT_EQ(all->flags, every);
    auto bytes = encode(Start{});
    bytes[0] = std::byte{0x8};
    expect_refused(decode_start(bytes), "reserved");
    bytes = encode(Start{});
    bytes[12] = std::byte{1};
    expect_refused(decode_start(bytes), "reserved");
    expect_refused(decode_start(std::span(bytes).first(8)), "8 bytes, not 16");
}

TEST(Wire, StreamRoundTripsAndRejectsReservedBits) {
    for (std::uint32_t flags : {0U, Stream::kHold}) {
        auto decoded = decode_stream(encode(Stream{flags}));
        ASSERT_TRUE(decoded) << decoded.error().detail;
        EXPECT_EQ(decoded->flags, flags);
    }
    auto bytes = encode(Stream{});
    bytes[0] = std::byte{0x2};
    expect_refused(decode_stream(bytes), "reserved");
    bytes = encode(Stream{});
    bytes[9] = std::byte{1};
    expect_refused(decode_stream(bytes), "reserved");
    expect_refused(decode_stream(std::span(bytes).first(12)), "12 bytes, not 16");
}

// Region 0 of two_regions() has 256 pages of 4 KiB; region 1 has 4 of 2 MiB.
TEST(Wire, BitmapRoundTripsAndMustFitItsRegion) {
    Layout layout = two_regions();
    BitmapChunk chunk{0, 64, 130, {0x5, ~std::uint64_t{0}, 0x3}};
    auto decoded = decode_bitmap(encode(chunk), layout);
    ASSERT_TRUE(decoded) << decoded.error().detail;
    EXPECT_EQ(decoded->region, 0u);
    EXPECT_EQ(decoded->first_page, 64u);
    EXPECT_EQ(decoded->count, 130u);
    EXPECT_EQ(decoded->words, chunk.words);

    auto with = [&](BitmapChunk c) { return decode_bitmap(encode(c), layout); };
    expect_refused(with({2, 0, 1, {1}}), "region 2 does not exist");
    expect_refused(with({0, 32, 1, {1}}), "multiple of 64");
    expect_refused(with({0, 0, 0, {}}), "do not fit");
    expect_refused(with({0, 192, 65, {0, 0}}), "do not fit region 0 (256 pages");
    expect_refused(with({1, 0, 5, {1}}), "do not fit region 1 (4 pages");
    expect_refused(with({0, 0, 3, {0x8}}), "bits past its last page");
    auto bytes = encode(chunk);
    bytes[4] = std::byte{1};
    expect_refused(decode_bitmap(bytes, layout), "reserved");
    bytes = encode(chunk);
    bytes[24] = std::byte{1};
    expect_refused(decode_bitmap(bytes, layout), "reserved");
    bytes = encode(chunk);
    bytes.resize(bytes.size() - 8);
    expect_refused(decode_bitmap(bytes, layout), "must be 56 bytes, not 48");
    expect_refused(decode_bitmap(std::span(bytes).first(20), layout), "shorter than its 32-byte");
}

TEST(Wire, ResumeRoundTripsAndRejectsReservedBits) {
    auto decoded =
        decode_resume(encode(Resume{.flags = Start::kWantHashes, .pages_present = 12345}));
    ASSERT_TRUE(decoded) << decoded.error().detail;
    EXPECT_EQ(decoded->flags, Start::kWantHashes);
    EXPECT_EQ(decoded->pages_present, 12345u);
    auto bytes = encode(Resume{});
    bytes[0] = std::byte{0x10};
    expect_refused(decode_resume(bytes), "reserved");
    bytes = encode(Resume{});
    bytes[4] = std::byte{2};
    expect_refused(decode_resume(bytes), "phase 2 is unknown");
    auto switched = decode_resume(encode(Resume{.flags = 0, .phase = Resume::kSwitchedOver}));
    ASSERT_TRUE(switched);
    EXPECT_EQ(switched->phase, Resume::kSwitchedOver);
    expect_refused(decode_resume(std::span(bytes).first(15)), "15 bytes, not 16");
}

TEST(Wire, RequestRoundTripsAndMustLieInsideItsRegion) {
    Layout layout = two_regions();
    auto decoded = decode_request(encode(Request{1, 1, 3}), layout);
    ASSERT_TRUE(decoded) << decoded.error().detail;
    EXPECT_EQ(decoded->region, 1u);
    EXPECT_EQ(decoded->first_page, 3u);
    expect_refused(decode_request(encode(Request{2, 1, 0}), layout), "region 2 does not exist");
    expect_refused(decode_request(encode(Request{0, 1, 256}), layout), "outside region 0");
    expect_refused(decode_request(encode(Request{0, 0, 0}), layout), "of 0 pages");
    expect_refused(decode_request(encode(Request{0, 257, 0}), layout), "exceeds 256");
    expect_refused(decode_request(encode(Request{1, 2, 0}), layout), "exceeds 1");
    // first + count overflowing 64 bits must not wrap into range.
    expect_refused(decode_request(encode(Request{0, 2, ~0ULL}), layout), "outside region 0");
    auto bytes = encode(Request{0, 1, 0});
    bytes.push_back(std::byte{0});
    expect_refused(decode_request(bytes, layout), "17 bytes, not 16");
}

std::vector<std::byte> pages_payload(const PagesHeader& h, std::size_t hash_count,
                                     std::size_t data_bytes) {
    auto head = encode(h);
    std::vector<std::byte> out(head.begin(), head.end());
    out.resize(out.size() + hash_count * 8 + data_bytes, std::byte{0x5a});
    return out;
}

TEST(Wire, PagesRoundTripRawWithHashesAndZero) {
    Layout layout = two_regions();
    PagesHeader raw{.region = 0,
                    .encoding = Encoding::Raw,
                    .flags = PagesHeader::kHashes | PagesHeader::kAnswer,
                    .first_page = 10,
                    .count = 3};
    auto payload = pages_payload(raw, 3, 3 * 4096);
    store_le<std::uint64_t>(payload, kPagesHeaderSize + 8, 0x1122334455667788ULL);
    auto view = decode_pages(payload, layout);
    ASSERT_TRUE(view) << view.error().detail;
    EXPECT_EQ(view->header.first_page, 10u);
    EXPECT_EQ(view->header.count, 3u);
    EXPECT_EQ(view->data.size(), 3u * 4096u);
    EXPECT_EQ(view->hash(1), 0x1122334455667788ULL);
    PagesHeader zero{.region = 1, .encoding = Encoding::Zero, .first_page = 3, .count = 1};
    auto zero_view = decode_pages(pages_payload(zero, 0, 0), layout);
    ASSERT_TRUE(zero_view) << zero_view.error().detail;
    EXPECT_TRUE(zero_view->data.empty());
}

TEST(Wire, PagesOutsideTheRegionShortOrOfTheWrongPageSizeAreRefused) {
    Layout layout = two_regions();
    PagesHeader h{.region = 0, .encoding = Encoding::Raw, .first_page = 255, .count = 1};
    EXPECT_TRUE(decode_pages(pages_payload(h, 0, 4096), layout));
    // A page outside the region.
    h.first_page = 256;
    expect_refused(decode_pages(pages_payload(h, 0, 4096), layout), "outside region 0");
    // A run that starts inside and ends outside.
    h.first_page = 255;
    h.count = 2;
    expect_refused(decode_pages(pages_payload(h, 0, 2 * 4096), layout), "outside region 0");
    // A short page, and a page of the other region's size.
    h.count = 1;
    expect_refused(decode_pages(pages_payload(h, 0, 4095), layout), "short or wrong-size");
    h.region = 1;
    h.first_page = 0;
    expect_refused(decode_pages(pages_payload(h, 0, 4096), layout), "short or wrong-size");
    // Hashes promised but missing.
    h = {.region = 0, .encoding = Encoding::Raw, .flags = PagesHeader::kHashes, .count = 2};
    expect_refused(decode_pages(pages_payload(h, 1, 2 * 4096), layout), "short or wrong-size");
    // A zero run carrying data, or hashes.
    h = {.region = 0, .encoding = Encoding::Zero, .count = 1};
    expect_refused(decode_pages(pages_payload(h, 0, 4096), layout), "short or wrong-size");
    h.flags = PagesHeader::kHashes;
    expect_refused(decode_pages(pages_payload(h, 0, 0), layout), "zero run with hashes");
}

TEST(Wire, PagesRejectUnknownEncodingsFlagsAndReservedFields) {
    Layout layout = two_regions();
    PagesHeader h{.region = 0, .encoding = Encoding::Zero, .count = 1};
    auto payload = pages_payload(h, 0, 0);
    auto with = [&](std::size_t offset, auto value) {
        auto copy = payload;
        store_le<decltype(value)>(copy, offset, value);
        return decode_pages(copy, layout);
    };
    expect_refused(with(4, std::uint8_t{0}), "encoding 0");
    expect_refused(with(4, std::uint8_t{5}), "encoding 5");
    // Compressed encodings exist from version 3, but only where START accepted them.
    expect_refused(with(4, std::uint8_t{3}), "encoding lz4 was not negotiated");
    expect_refused(with(4, std::uint8_t{4}), "encoding zstd was not negotiated");
    expect_refused(with(5, std::uint8_t{0x80}), "reserved");
    expect_refused(with(6, std::uint16_t{1}), "reserved");
    expect_refused(with(20, std::uint32_t{1}), "reserved");
    expect_refused(decode_pages(std::span(payload).first(20), layout), "shorter");
}

TEST(Wire, StreamEndAndDoneRoundTripAndRejectReservedBytes) {
    auto end = decode_stream_end(encode(StreamEnd{42}));
    ASSERT_TRUE(end);
    EXPECT_EQ(end->pages_sent, 42u);
    auto done = decode_done(encode(Done{7}));
    ASSERT_TRUE(done);
    EXPECT_EQ(done->pages_present, 7u);
    auto bytes = encode(Done{7});
    bytes[15] = std::byte{1};
    expect_refused(decode_done(bytes), "reserved");
    bytes = encode(StreamEnd{1});
    bytes[9] = std::byte{1};
    expect_refused(decode_stream_end(bytes), "reserved");
    expect_refused(decode_done(std::span(bytes).first(15)), "15 bytes");
}

TEST(Wire, EveryMessageTypeIsAnApplicationFrameAndHasAName) {
    // Every type protocol.md lists, by its number there and its name.
    const std::vector<std::tuple<MessageType, std::uint8_t, std::string>> table{
        {MessageType::Layout, 0x40, "LAYOUT"},         {MessageType::Start, 0x41, "START"},
        {MessageType::Request, 0x42, "REQUEST"},       {MessageType::Pages, 0x43, "PAGES"},
        {MessageType::StreamEnd, 0x44, "STREAM_END"},  {MessageType::Done, 0x45, "DONE"},
        {MessageType::Stream, 0x46, "STREAM"},         {MessageType::Bitmap, 0x47, "BITMAP"},
        {MessageType::Resume, 0x48, "RESUME"},         {MessageType::RoundEnd, 0x49, "ROUND_END"},
        {MessageType::RoundDone, 0x4a, "ROUND_DONE"},  {MessageType::Discard, 0x4b, "DISCARD"},
        {MessageType::Switchover, 0x4c, "SWITCHOVER"}, {MessageType::Running, 0x4d, "RUNNING"},
    };
    for (const auto& [type, number, name] : table) {
        EXPECT_TRUE(transport::is_application(frame_type(type))) << name;
        EXPECT_EQ(static_cast<std::uint8_t>(frame_type(type)), number) << name;
        EXPECT_EQ(to_string(type), name);
    }
    // The next number is no message: a peer's frame of that type is refused, not misread.
    EXPECT_EQ(to_string(static_cast<MessageType>(0x4e)), "message 78");
    EXPECT_EQ(max_pages_per_frame(4096), 256u);
    EXPECT_EQ(max_pages_per_frame(2 << 20), 1u);
}

TEST(Wire, LayoutCarriesTheLiveFlagOutsideTheGuestsShape) {
    Layout live = two_regions();
    live.flags = Layout::kLive;
    auto back = decode_layout(encode(live));
    ASSERT_TRUE(back) << back.error().detail;
    EXPECT_TRUE(back->live());
    EXPECT_EQ(*back, two_regions());  // the same guest, whether or not it runs
}

TEST(Wire, RoundMessagesRoundTripAndRejectBadFields) {
    auto end = decode_round_end(encode(RoundEnd{3, 77}));
    ASSERT_TRUE(end);
    EXPECT_EQ(end->round, 3u);
    EXPECT_EQ(end->pages_sent, 77u);
    auto done = decode_round_done(encode(RoundDone{4, 1234}));
    ASSERT_TRUE(done);
    EXPECT_EQ(done->round, 4u);
    EXPECT_EQ(done->pages_present, 1234u);
    expect_refused(decode_round_end(encode(RoundEnd{kMaxRounds, 0})), "past the last");
    expect_refused(decode_round_done(encode(RoundDone{kMaxRounds, 0})), "past the last");
    auto bytes = encode(RoundEnd{1, 1});
    bytes[4] = std::byte{1};
    expect_refused(decode_round_end(bytes), "reserved");
    expect_refused(decode_round_done(std::span(bytes).first(12)), "12 bytes, not 16");
}

TEST(Wire, SwitchoverRunningAndDiscardRoundTripAndRejectBadFields) {
    auto switchover = decode_switchover(encode(Switchover{5, 999}));
    ASSERT_TRUE(switchover);
    EXPECT_EQ(switchover->rounds, 5u);
    EXPECT_EQ(switchover->pages_discarded, 999u);
    expect_refused(decode_switchover(encode(Switchover{kMaxRounds + 1, 0})), "at most");
    auto running = decode_running(encode(Running{42}));
    ASSERT_TRUE(running);
    EXPECT_EQ(running->pages_missing, 42u);
    auto bytes = encode(Running{1});
    bytes[9] = std::byte{1};
    expect_refused(decode_running(bytes), "reserved");
    // DISCARD is BITMAP's layout under its own name, with the same checks.
    BitmapChunk chunk{.region = 0, .first_page = 0, .count = 64, .words = {0x5}};
    auto discard = decode_discard(encode(chunk), two_regions());
    ASSERT_TRUE(discard) << discard.error().detail;
    EXPECT_EQ(discard->words, chunk.words);
    chunk.region = 7;
    expect_refused(decode_discard(encode(chunk), two_regions()), "DISCARD region 7");
    chunk = {.region = 0, .first_page = 0, .count = 3, .words = {0xF}};
    expect_refused(decode_discard(encode(chunk), two_regions()), "DISCARD sets bits past");
}

}  // namespace
}  // namespace uffdm::migration::wire
