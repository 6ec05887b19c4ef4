// compression_test.cpp — Compressed PAGES runs: made, checked, expanded; Auto's choice by rate.
#include <gtest/gtest.h>
#include <zstd.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "migration/compression.hpp"
#include "migration/compression_policy.hpp"
#include "migration/host_corpus.hpp"
#include "migration/source_pages.hpp"
#include "transport/byte_order.hpp"

namespace uffdm::migration {
namespace {

using wire::Encoding;

const wire::Layout kLayout{{{0, 4096, 64 * 4096}}};
constexpr std::uint32_t kAcceptBoth = wire::Start::kAcceptLz4 | wire::Start::kAcceptZstd;

// Pages that compress: text-like bytes with repeats, as a guest's page cache holds.
std::vector<std::byte> compressible(std::size_t pages) {
    std::vector<std::byte> out(pages * 4096);
    const char* words[] = {"migration ", "userfaultfd ", "page ", "guest ", "0x7f12 "};
    std::size_t at = 0;
    for (std::size_t i = 0; at < out.size(); ++i) {
        const char* w = words[(i * 7 + i / 3) % 5];
        for (std::size_t k = 0; w[k] != 0 && at < out.size(); ++k) {
            out[at++] = static_cast<std::byte>(w[k]);
        }
    }
    return out;
}

std::vector<std::byte> frame(Encoding encoding, std::uint32_t count,
                             std::span<const std::byte> data, std::uint64_t first = 3) {
    auto head = wire::encode(
        wire::PagesHeader{.region = 0, .encoding = encoding, .first_page = first, .count = count});
    std::vector<std::byte> out(head.begin(), head.end());
    out.insert(out.end(), data.begin(), data.end());
    return out;
}

void expect_refused(const std::expected<wire::PagesView, transport::Failure>& result,
                    const std::string& words) {
    ASSERT_FALSE(result) << "accepted";
    EXPECT_EQ(result.error().code, Errc::ProtocolViolation);
    EXPECT_NE(result.error().detail.find(words), std::string::npos) << result.error().detail;
}

class Codecs : public ::testing::TestWithParam<Encoding> {};

TEST_P(Codecs, ARunRoundTripsToTheSameBytesAndShrinks) {
    auto raw = compressible(4);
    RunCompressor compressor;
    std::vector<std::byte> packed;
    ASSERT_TRUE(compressor.compress(GetParam(), 3, raw, packed));
    EXPECT_LT(packed.size(), raw.size() / 4);
    RunExpander expander;
    auto run = expander.read(frame(GetParam(), 4, packed), kLayout, kAcceptBoth);
    ASSERT_TRUE(run) << run.error().detail;
    EXPECT_EQ(run->header.encoding, Encoding::Raw);
    EXPECT_EQ(run->header.count, 4u);
    ASSERT_EQ(run->data.size(), raw.size());
    EXPECT_EQ(std::memcmp(run->data.data(), raw.data(), raw.size()), 0);
}

TEST_P(Codecs, RandomPagesDoNotShrinkAndGoRaw) {
    std::vector<std::byte> raw(2 * 4096);
    std::uint64_t x = 88172645463325252ULL;
    for (auto& b : raw) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b = static_cast<std::byte>(x);
    }
    RunCompressor compressor;
    std::vector<std::byte> packed;
    EXPECT_FALSE(compressor.compress(GetParam(), 3, raw, packed));
}

TEST_P(Codecs, ARunNotAcceptedByStartIsRefusedByName) {
    auto raw = compressible(1);
    RunCompressor compressor;
    std::vector<std::byte> packed;
    ASSERT_TRUE(compressor.compress(GetParam(), 3, raw, packed));
    RunExpander expander;
    std::uint32_t other =
        GetParam() == Encoding::Lz4 ? wire::Start::kAcceptZstd : wire::Start::kAcceptLz4;
    expect_refused(expander.read(frame(GetParam(), 1, packed), kLayout, other),
                   std::string("encoding ") + wire::name(GetParam()) + " was not negotiated");
}

TEST_P(Codecs, CompressedBytesAsLongAsTheRawRunOrNoneAreRefused) {
    RunExpander expander;
    std::vector<std::byte> as_long(4096, std::byte{1});
    expect_refused(expander.read(frame(GetParam(), 1, as_long), kLayout, kAcceptBoth),
                   "fewer than its raw bytes");
    expect_refused(expander.read(frame(GetParam(), 1, {}), kLayout, kAcceptBoth),
                   "carries 0 compressed bytes");
}

INSTANTIATE_TEST_SUITE_P(Both, Codecs, ::testing::Values(Encoding::Lz4, Encoding::Zstd),
                         [](const auto& info) { return std::string(wire::name(info.param)); });

TEST(Lz4Run, ABlockOfAnotherSizeOrGarbageIsRefusedAndNothingIsWrittenPastTheRun) {
    RunCompressor compressor;
    RunExpander expander;
    std::vector<std::byte> packed;
    // Three pages of content declared as two: lz4 stops at the run's end (no overflow).
    ASSERT_TRUE(compressor.compress(Encoding::Lz4, 0, compressible(3), packed));
    expect_refused(expander.read(frame(Encoding::Lz4, 2, packed), kLayout, kAcceptBoth),
                   "a corrupt lz4 block, or one that expands past the run's 8192 bytes");
    // One page declared as two.
    ASSERT_TRUE(compressor.compress(Encoding::Lz4, 0, compressible(1), packed));
    expect_refused(expander.read(frame(Encoding::Lz4, 2, packed), kLayout, kAcceptBoth),
                   "expands to 4096 bytes; the descriptor says 8192");
    std::vector<std::byte> garbage(300, std::byte{0xf0});
    expect_refused(expander.read(frame(Encoding::Lz4, 1, garbage), kLayout, kAcceptBoth),
                   "a corrupt lz4 block");
}

TEST(ZstdRun, SizesStatedWrongOrNotAtAllAndTrailingBytesAreRefused) {
    RunCompressor compressor;
    RunExpander expander;
    std::vector<std::byte> packed;
    // A bomb: the frame states (and holds) more than the run.
    ASSERT_TRUE(compressor.compress(Encoding::Zstd, 3, compressible(16), packed));
    expect_refused(expander.read(frame(Encoding::Zstd, 2, packed), kLayout, kAcceptBoth),
                   "states 65536 bytes, more than the run holds (8192)");
    ASSERT_TRUE(compressor.compress(Encoding::Zstd, 3, compressible(1), packed));
    expect_refused(expander.read(frame(Encoding::Zstd, 2, packed), kLayout, kAcceptBoth),
                   "states 4096 bytes; the descriptor says 8192");
    auto trailing = packed;
    trailing.push_back(std::byte{0});
    expect_refused(expander.read(frame(Encoding::Zstd, 1, trailing), kLayout, kAcceptBoth),
                   "bytes follow the zstd frame");
    // A frame that states no size (a streaming compressor's).
    auto raw = compressible(1);
    std::vector<std::byte> unsized(4096);
    ZSTD_CCtx* cctx = ZSTD_createCCtx();
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 0);
    std::size_t n = ZSTD_compress2(cctx, unsized.data(), unsized.size(), raw.data(), raw.size());
    ZSTD_freeCCtx(cctx);
    ASSERT_FALSE(ZSTD_isError(n));
    unsized.resize(n);
    expect_refused(expander.read(frame(Encoding::Zstd, 1, unsized), kLayout, kAcceptBoth),
                   "states no content size");
    std::vector<std::byte> garbage(300, std::byte{0xf0});
    expect_refused(expander.read(frame(Encoding::Zstd, 1, garbage), kLayout, kAcceptBoth),
                   "not a zstd frame");
    // A true header with a body that is not zstd's.
    auto body = packed;
    for (std::size_t i = 6; i < body.size(); ++i) {
        body[i] = std::byte{0xff};
    }
    expect_refused(expander.read(frame(Encoding::Zstd, 1, body), kLayout, kAcceptBoth), "zstd");
}

// Version 4: a compressed run with a zero map carries only its data pages; the expander puts
// zeros where the map says, and every inconsistency between the map, the run and the bytes is
// refused before anything is placed.
constexpr std::uint32_t kAcceptMaps = kAcceptBoth | wire::Start::kAcceptZeroMap;

std::vector<std::byte> mapped_frame(Encoding encoding, std::uint32_t count,
                                    std::span<const std::uint64_t> words,
                                    std::span<const std::byte> packed) {
    auto head = wire::encode(
        wire::PagesHeader{.region = 0, .encoding = encoding, .first_page = 3, .count = count},
        words);
    head.insert(head.end(), packed.begin(), packed.end());
    return head;
}

class ZeroMaps : public ::testing::TestWithParam<Encoding> {};

TEST_P(ZeroMaps, TheDataPagesComeBackInPlaceWithZerosBetween) {
    // 40 pages: data, a gap of 3 zero pages, data, one zero page, data to the end.
    const std::uint32_t count = 40;
    auto run = compressible(count);
    for (std::uint32_t i = 0; i < count; ++i) {  // each page its own (the order is checked)
        std::memcpy(run.data() + i * 4096, &i, sizeof i);
    }
    std::array<std::uint64_t, 1> words{(0b111ULL << 5) | (1ULL << 20)};
    for (std::uint32_t i : {5U, 6U, 7U, 20U}) {
        std::memset(run.data() + i * 4096, 0xee, 4096);  // never read: the map says zero
    }
    RunCompressor compressor;
    std::vector<std::byte> packed;
    ASSERT_TRUE(compressor.compress(GetParam(), 1, run, 4096, words, packed));
    RunExpander expander;
    auto expanded =
        expander.read(mapped_frame(GetParam(), count, words, packed), kLayout, kAcceptMaps);
    ASSERT_TRUE(expanded) << expanded.error().detail;
    EXPECT_EQ(expanded->header.encoding, Encoding::Raw);
    EXPECT_TRUE(expanded->zeros_inside);
    EXPECT_TRUE(expanded->zero_map.empty());
    ASSERT_EQ(expanded->data.size(), count * 4096u);
    for (std::uint32_t i = 0; i < count; ++i) {
        auto page = expanded->data.subspan(i * 4096, 4096);
        bool zero = ((words[0] >> i) & 1U) != 0;
        if (zero) {
            EXPECT_TRUE(std::all_of(page.begin(), page.end(),
                                    [](std::byte b) { return b == std::byte{0}; }))
                << "page " << i;
        } else {
            EXPECT_EQ(0, std::memcmp(page.data(), run.data() + i * 4096, 4096)) << "page " << i;
        }
    }
}

TEST_P(ZeroMaps, EveryInconsistencyIsAViolation) {
    const std::uint32_t count = 8;
    auto run = compressible(count);
    std::array<std::uint64_t, 1> words{0b0110};
    RunCompressor compressor;
    std::vector<std::byte> packed;
    ASSERT_TRUE(compressor.compress(GetParam(), 1, run, 4096, words, packed));
    RunExpander expander;
    // Not negotiated (a version 3 destination's START).
    expect_refused(
        expander.read(mapped_frame(GetParam(), count, words, packed), kLayout, kAcceptBoth),
        "not negotiated");
    // On a raw run.
    expect_refused(
        expander.read(mapped_frame(Encoding::Raw, count, words, run), kLayout, kAcceptMaps),
        "only compressed runs");
    // A bit past the run, every page zero, the map cut short.
    std::array<std::uint64_t, 1> past{1ULL << count};
    expect_refused(
        expander.read(mapped_frame(GetParam(), count, past, packed), kLayout, kAcceptMaps),
        "past the run");
    std::array<std::uint64_t, 1> all{(1ULL << count) - 1};
    expect_refused(
        expander.read(mapped_frame(GetParam(), count, all, packed), kLayout, kAcceptMaps),
        "every page");
    auto whole = mapped_frame(GetParam(), count, words, {});
    whole.resize(wire::kPagesHeaderSize + 4);
    expect_refused(expander.read(whole, kLayout, kAcceptMaps), "cut short");
    // The bytes of the whole run (zero pages included) under a map that leaves two out: they
    // expand to more than the map allows (never written past the buffer).
    std::vector<std::byte> full;
    ASSERT_TRUE(compressor.compress(GetParam(), 1, run, full));
    expect_refused(
        expander.read(mapped_frame(GetParam(), count, words, full), kLayout, kAcceptMaps),
        GetParam() == Encoding::Lz4 ? "lz4" : "more than the run holds");
    // Fewer pages than the map leaves: the data of the six pages with a map of three zeros.
    std::array<std::uint64_t, 1> more{0b1110};
    expect_refused(
        expander.read(mapped_frame(GetParam(), count, more, packed), kLayout, kAcceptMaps),
        GetParam() == Encoding::Lz4 ? "lz4" : "more than the run holds");
}

INSTANTIATE_TEST_SUITE_P(Compression, ZeroMaps, ::testing::Values(Encoding::Lz4, Encoding::Zstd),
                         [](const auto& info) { return std::string(wire::name(info.param)); });

// The source's side: a run to be compressed goes on over short gaps of zero pages (their bits
// in its map), not over a long one nor over a page already sent.
TEST(ZeroGaps, ACompressedStreamRunTakesShortGapsInAndStopsAtLongOnesAndSentPages) {
    constexpr std::uint64_t kPages = 128;
    // Page-aligned, as guest memory is.
    std::unique_ptr<std::byte, decltype(&std::free)> owned(
        static_cast<std::byte*>(std::aligned_alloc(4096, kPages * 4096)), &std::free);
    std::span<std::byte> guest(owned.get(), kPages * 4096);
    std::fill(guest.begin(), guest.end(), std::byte{0});
    auto data = [&](std::uint64_t from, std::uint64_t to) {
        for (std::uint64_t p = from; p < to; ++p) {
            guest[p * 4096 + 100] = std::byte{1};
        }
    };
    data(0, 4);    // 4..6: a gap of 3
    data(7, 10);   // 10..29: a gap of 20, longer than SentPages::kZeroGap
    data(30, 31);  // 31..47: a gap of exactly kZeroGap (17 would not be taken)
    data(47, 50);
    auto memory = GuestMemory::external({std::span<const std::byte>(guest)}, 4096);
    ASSERT_TRUE(memory) << memory.error().detail;
    static_assert(SentPages::kZeroGap == 16);

    SentPages plain(*memory, 256 << 10);
    plain.start_fresh();
    auto first = plain.next_stream_run(false);
    ASSERT_TRUE(first);
    EXPECT_EQ(first->count, 4u);  // not compressed: homogeneous runs, as before
    EXPECT_EQ(first->zero_inside, 0u);

    SentPages pages(*memory, 256 << 10);
    pages.start_fresh();
    auto run = pages.next_stream_run(true);
    ASSERT_TRUE(run);
    EXPECT_EQ(run->first, 0u);
    EXPECT_EQ(run->count, 10u);
    EXPECT_EQ(run->zero_inside, 3u);
    EXPECT_EQ(run->data_pages(), 7u);
    EXPECT_EQ(run->zero_map[0], 0b111ULL << 4);
    EXPECT_EQ(run->zero_words().size(), 1u);
    auto zeros = pages.next_stream_run(true);  // the long gap: a ZERO run of its own
    ASSERT_TRUE(zeros);
    EXPECT_TRUE(zeros->zero);
    EXPECT_EQ(zeros->first, 10u);
    EXPECT_EQ(zeros->count, 20u);
    auto last = pages.next_stream_run(true);  // 30, 16 zero pages, 47..49
    ASSERT_TRUE(last);
    EXPECT_EQ(last->first, 30u);
    EXPECT_EQ(last->count, 20u);
    EXPECT_EQ(last->zero_inside, 16u);
    EXPECT_EQ(pages.counts().zero.load(), 3u + 20u + 16u);

    SentPages answered(*memory, 256 << 10);
    answered.start_fresh();
    (void)answered.answer(0, 5, 1);  // a fault's answer took a page of the first gap
    auto cut = answered.next_stream_run(true);
    ASSERT_TRUE(cut);
    EXPECT_EQ(cut->count, 4u);
    EXPECT_EQ(cut->zero_inside, 0u);
}

TEST(RunExpander, AnUncompressedRunIsReturnedAsItIs) {
    RunExpander expander;
    std::vector<std::byte> page(4096, std::byte{7});
    auto payload = frame(Encoding::Raw, 1, page);
    auto run = expander.read(payload, kLayout, 0);
    ASSERT_TRUE(run) << run.error().detail;
    EXPECT_EQ(run->data.data(), payload.data() + wire::kPagesHeaderSize);  // no copy
    EXPECT_EQ(run->data.size(), 4096u);
    EXPECT_EQ(run->data[0], std::byte{7});
}

// Auto, fed runs at rates the test chooses (the clock is a parameter): it stays raw while
// compression would not help, and climbs the ladder (raw, lz4, zstd:-1, zstd:1) only as far as
// each step measures faster.
struct Step {
    double rate;   // guest bytes per second the stream reaches with this encoding
    double ratio;  // what it shrinks runs to
};
struct AutoDrive {
    CompressionPolicy policy{CompressionOptions{.codec = Codec::Auto}};
    CompressionPolicy::Clock::time_point now{};
    Step raw{120e6, 1.0}, lz4{210e6, 0.56}, fast_zstd{230e6, 0.49}, zstd{190e6, 0.44};
    std::uint64_t run_bytes = 256 << 10;
    // Streams for `ms`. Returns how many runs went compressed.
    int run(int ms) {
        int compressed = 0;
        auto end = now + std::chrono::milliseconds(ms);
        while (now < end) {
            RunCodec c = policy.for_stream(run_bytes, now);
            const Step& s = c.encoding == Encoding::Raw   ? raw
                            : c.encoding == Encoding::Lz4 ? lz4
                            : c.zstd_level < 0            ? fast_zstd
                                                          : zstd;
            if (c.encoding != Encoding::Raw) {
                ++compressed;
                policy.record(c, run_bytes, static_cast<std::uint64_t>(run_bytes * s.ratio),
                              std::chrono::nanoseconds(static_cast<std::int64_t>(run_bytes / 0.5)),
                              true);
            }
            now += std::chrono::nanoseconds(static_cast<std::int64_t>(run_bytes / s.rate * 1e9));
        }
        return compressed;
    }
};

constexpr std::uint32_t kBoth = wire::Start::kAcceptLz4 | wire::Start::kAcceptZstd;

TEST(AutoCompression, ClimbsToTheFastestStepOnASlowLinkAndStaysThere) {
    AutoDrive link_bound;  // a 1 Gbit/s link: zstd:-1 is fastest, zstd:1 runs out of CPU
    link_bound.policy.accept(kBoth);
    link_bound.run(8000);
    auto report = link_bound.policy.report();
    EXPECT_TRUE(report.compressing_at_end);
    EXPECT_EQ(report.auto_choice, "zstd:-1");
    link_bound.run(20000);  // it checks its neighbours now and then, and comes back
    EXPECT_EQ(link_bound.policy.report().auto_choice, "zstd:-1");

    AutoDrive lz4_only;  // a destination that accepts lz4 only: the ladder stops there
    lz4_only.policy.accept(wire::Start::kAcceptLz4);
    lz4_only.run(8000);
    EXPECT_EQ(lz4_only.policy.report().auto_choice, "lz4");
}

TEST(AutoCompression, JumpsStraightToTheStepItsSamplesPredictWhileTheLinkHoldsTheStream) {
    // zstd:1 shrinks most and its CPU keeps up: the link's rate over its ratio is the best.
    // Climbing one step per probe would reach it after about two seconds (three probes and
    // their backoffs); the samples of every step say so after the first window.
    AutoDrive link_bound;
    link_bound.run_bytes = 32 << 10;  // as a guest with zero pages among the others has
    link_bound.lz4 = {214e6, 0.56};
    link_bound.fast_zstd = {245e6, 0.49};
    link_bound.zstd = {273e6, 0.44};
    link_bound.policy.accept(kBoth);
    // The first window (raw) is 100 ms, then the probe settles (100 ms) and is measured (200
    // ms): chosen by 450 ms (a first window of 200 ms would take till 500).
    link_bound.run(450);
    EXPECT_EQ(link_bound.policy.report().auto_choice, "zstd:1");
    link_bound.run(250);
    EXPECT_EQ(link_bound.policy.report().auto_choice, "zstd:1");
    EXPECT_EQ(link_bound.policy.report().auto_switches, 1u);  // raw -> compressed, once
    link_bound.run(10000);  // the neighbours measured slower: it stays
    EXPECT_EQ(link_bound.policy.report().auto_choice, "zstd:1");
}

TEST(AutoCompression, StaysRawWhenCompressionIsSlowerOrThePagesDoNotShrink) {
    AutoDrive cpu_bound;  // loopback: every step is slower than raw
    cpu_bound.raw = {3e9, 1.0};
    cpu_bound.lz4 = {1.5e9, 0.56};
    cpu_bound.fast_zstd = {0.8e9, 0.49};
    cpu_bound.policy.accept(kBoth);
    int compressed = cpu_bound.run(6000);
    EXPECT_FALSE(cpu_bound.policy.report().compressing_at_end);
    EXPECT_EQ(cpu_bound.policy.report().auto_choice, "raw");
    // Samples only (lz4 does not outrun the stream: no probe), within their budget: their
    // compression (0.5 ms a run here) at most a quarter of 1 % of the stream's 6 s after the
    // first 5 ms (the CPU holds the stream), 38 runs and the burst that crossed it, of about
    // 68000 (one in 16 would be 4300; at 1 % of the time, 130).
    EXPECT_LE(compressed, 44);
    EXPECT_GT(compressed, 30);

    AutoDrive incompressible;  // a link holds the stream: the samples keep their full share
    incompressible.lz4 = {120e6, 1.0};
    incompressible.fast_zstd = {120e6, 1.0};
    incompressible.policy.accept(kBoth);
    int sampled = incompressible.run(3000);
    EXPECT_FALSE(incompressible.policy.report().compressing_at_end);
    EXPECT_EQ(incompressible.policy.report().auto_switches, 0u);
    EXPECT_GT(sampled, 50) << "a link's stream sampled as little as a CPU-held one";

    AutoDrive not_accepted;  // a version 2 destination: never
    EXPECT_EQ(not_accepted.run(3000), 0);
}

TEST(AutoCompression, KeepsNoStepWhoseFasterGuestRateCameFromAnEmptierWire) {
    // Loopback on two shared vCPUs: lz4 outruns the stream in its samples and its probe window
    // hands the sockets 11 % more guest, but the wire carries two thirds of what raw did, so the
    // CPU, not the link, set the pace (the destination pays for the borrowed CPU later; such a
    // migration took 1.19x the time of `off`). It stays raw.
    auto after_4s = [](Step raw, Step lz4, Step fast_zstd, Step zstd) {
        AutoDrive drive;
        drive.raw = raw;
        drive.lz4 = lz4;
        drive.fast_zstd = fast_zstd;
        drive.zstd = zstd;
        drive.policy.accept(kBoth);
        drive.run(4000);
        return drive.policy.report();
    };
    auto loopback = after_4s({450e6, 1.0}, {500e6, 0.6}, {300e6, 0.5}, {200e6, 0.45});
    EXPECT_EQ(loopback.auto_choice, "raw");
    EXPECT_EQ(loopback.auto_switches, 0u);
    // The same rates through a link that holds raw at 120 MB/s: lz4's wire stays as full, and
    // the step pays.
    auto link_bound = after_4s({120e6, 1.0}, {200e6, 0.6}, {110e6, 0.5}, {100e6, 0.45});
    EXPECT_EQ(link_bound.auto_choice, "lz4");
}

TEST(AutoCompression, DoesNotProbeWhereLz4OnlyJustOutrunsTheStream) {
    // Loopback with CPU-time speeds: lz4 compresses 500 MB/s on one thread, the raw stream runs
    // at 400 (the CPU holds it, not the link). A probe would be thrown away (its wire empties)
    // but its windows would still cost the stream; lz4 must compress twice the stream's rate.
    AutoDrive drive;
    drive.raw = {400e6, 1.0};
    drive.lz4 = {440e6, 0.56};
    drive.fast_zstd = {300e6, 0.49};
    drive.zstd = {200e6, 0.45};
    drive.policy.accept(kBoth);
    int compressed = drive.run(6000);
    EXPECT_EQ(drive.policy.report().auto_choice, "raw");
    EXPECT_LT(compressed, 200) << "probe windows compressed the stream";
}

TEST(AutoCompression, KeepsAStepThatIsClearlyFasterEvenIfItsWireDipped) {
    // Measured at 1 Gbit/s: raw's first window 112 MB/s, the probe of zstd:1 197 MB/s of guest
    // while the CPU it shares held it back (its wire 87 MB/s, under 0.85 of raw's): 1.76 times
    // the stream is the link, not borrowed CPU (that never made more than 1.25 on loopback).
    AutoDrive drive;
    drive.raw = {112e6, 1.0};
    drive.lz4 = {150e6, 0.56};        // 1.34x, its wire 84: not kept
    drive.fast_zstd = {140e6, 0.49};  // 1.25x, its wire 69: not kept
    drive.zstd = {197e6, 0.44};       // 1.76x, its wire 87: kept
    drive.policy.accept(kBoth);
    drive.run(4000);
    EXPECT_EQ(drive.policy.report().auto_choice, "zstd:1");
}

TEST(HostCorpus, HoldsThisHostsFilesAndCompressesLikeRealMemory) {
    const HostCorpus& corpus = HostCorpus::get();
    ASSERT_GT(corpus.pages(), 1000u) << "no files under /usr/lib, /usr/bin, /usr/include";
    RunCompressor compressor;
    std::uint64_t raw = 0;
    std::uint64_t packed_bytes = 0;
    std::vector<std::byte> packed;
    for (std::uint64_t i = 0; i < corpus.pages(); i += 97) {
        auto page = corpus.page(i, 4096);
        raw += page.size();
        packed_bytes +=
            compressor.compress(Encoding::Lz4, 0, page, packed) ? packed.size() : page.size();
    }
    double ratio = static_cast<double>(raw) / static_cast<double>(packed_bytes);
    EXPECT_GT(ratio, 1.3) << "host files should compress (code, text)";
    EXPECT_LT(ratio, 20.0) << "nor be mostly zeros";
}

}  // namespace
}  // namespace uffdm::migration
