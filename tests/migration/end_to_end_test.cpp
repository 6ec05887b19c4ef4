// end_to_end_test.cpp — A real postcopy migration in one process: source, destination, guest.
#include <gtest/gtest.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <span>
#include <thread>

#include "migration/fault_server.hpp"
#include "migration/page_server.hpp"
#include "tests/support/loopback_source.hpp"
#include "tests/support/tcp_relay.hpp"
#include "tests/support/test_support.hpp"
#include "transport/frame.hpp"
#include "uffd/mapping.hpp"

namespace uffdm::migration {
namespace {

struct Case {
    uffd::MemoryKind kind;
    transport::Backend backend;
    std::size_t bulk;
    bool verify;
    std::size_t placement = 0;  // placement threads beside the bulk loops (0: in them)
};

class Migrate : public ::testing::TestWithParam<Case> {};

TEST_P(Migrate, EveryPageArrivesWithItsContentWhileGuestThreadsFault) {
    const Case c = GetParam();
    SyntheticSpec spec;
    spec.page_size = c.kind == uffd::MemoryKind::Hugetlb ? uffd::kHugePageSize : 4096;
    spec.size = c.kind == uffd::MemoryKind::Hugetlb ? 32ULL << 20 : 64ULL << 20;
    spec.regions = 2;
    spec.seed = 7;
    auto memory = GuestMemory::synthetic(spec);
    ASSERT_TRUE(memory) << memory.error().detail;
    PageServerOptions serve;
    serve.listen = *transport::parse_endpoint("tcp:127.0.0.1:0");
    serve.backend = c.backend;
    auto server = PageServer::open(*memory, serve);
    ASSERT_TRUE(server) << server.error().detail;
    std::optional<SourceStats> source_report;
    std::thread source([&] { source_report = (*server)->run(); });

    // The destination's guest memory, one mapping per region.
    std::vector<uffd::Mapping> mappings;
    std::vector<GuestRegion> regions;
    for (const auto& info : spec.layout().regions) {
        auto m = uffd::Mapping::create(c.kind, info.length);
        if (!m) {
            (*server)->stop();
            source.join();
            GTEST_SKIP() << "cannot map " << uffdm::to_string(c.kind) << ": "
                         << m.error().message();
        }
        // ZEROPAGE asked for everywhere: the kernel's answer at registration decides (hugetlbfs
        // has none, so its zero runs are copied from a zero page).
        regions.push_back({m->data(), m->size(), m->page_size(), c.kind, true});
        mappings.push_back(std::move(*m));
    }
    auto uffd = uffd::UserfaultFd::open(test::test_open_options());
    ASSERT_TRUE(uffd) << uffd.error().message();
    FaultServerOptions receive;
    receive.source = (*server)->local_endpoint();
    receive.backend = c.backend;
    receive.bulk_channels = c.bulk;
    receive.verify_hashes = c.verify;
    receive.placement_threads = c.placement;
    auto destination = FaultServer::create(std::move(*uffd), regions, receive);
    ASSERT_TRUE(destination) << destination.error().detail;
    ASSERT_TRUE((*destination)->start());

    // Guest threads: touch random pages right away (they fault and wait) and check each byte.
    std::atomic<std::uint64_t> wrong{0};
    std::atomic<std::uint64_t> touched{0};
    std::vector<std::thread> vcpus;
    for (int t = 0; t < 2; ++t) {
        vcpus.emplace_back([&, t] {
            std::mt19937_64 rng(t + 1);
            for (int i = 0; i < 300; ++i) {
                std::uint32_t r = static_cast<std::uint32_t>(rng() % regions.size());
                std::uint64_t pages = regions[r].length / regions[r].page_size;
                std::uint64_t p = rng() % pages;
                std::span<const std::byte> page(regions[r].data + p * regions[r].page_size,
                                                regions[r].page_size);
                if (!page_matches(spec, r, p, page)) {
                    wrong.fetch_add(1);
                }
                touched.fetch_add(1);
            }
        });
    }
    for (auto& v : vcpus) {
        v.join();
    }
    DestinationStats report = (*destination)->wait();
    source.join();
    ASSERT_TRUE(report.ok) << report.error.message;
    ASSERT_TRUE(source_report && source_report->ok) << source_report->error.message;
    EXPECT_EQ(wrong.load(), 0u);
    EXPECT_EQ(touched.load(), 600u);
    // Every page, after the fact.
    for (std::uint32_t r = 0; r < regions.size(); ++r) {
        std::uint64_t pages = regions[r].length / regions[r].page_size;
        for (std::uint64_t p = 0; p < pages; ++p) {
            ASSERT_TRUE(page_matches(
                spec, r, p, {regions[r].data + p * regions[r].page_size, regions[r].page_size}))
                << "region " << r << " page " << p;
        }
    }
    EXPECT_EQ(report.pages_total, spec.size / spec.page_size);
    EXPECT_EQ(report.pages_urgent + report.pages_background, report.pages_total);
    EXPECT_GT(report.pages_zero, 0u);
    EXPECT_GT(report.faults, 0u);
    EXPECT_GT(report.fault_latency.count, 0u);
    EXPECT_EQ(report.hashes_verified > 0, c.verify);
    EXPECT_EQ(report.placement_threads, c.placement);
    EXPECT_EQ(report.placement,
              std::string(uffdm::to_string(c.kind)) +
                  ": UFFDIO_COPY from the receive ring, zero runs " +
                  (c.kind == uffd::MemoryKind::Hugetlb ? "UFFDIO_COPY of a zero page"
                                                       : "UFFDIO_ZEROPAGE"));
    EXPECT_EQ(
        source_report->pages_streamed + source_report->pages_answered - source_report->pages_resent,
        report.pages_total);
    if (c.bulk == 0) {
        // One connection did everything: the stream rode behind the answers.
        EXPECT_EQ(source_report->bulk_channels, 0u);
        EXPECT_GT(report.pages_background, 0u);
        EXPECT_GT(source_report->pages_streamed, 0u);
    }
}

INSTANTIATE_TEST_SUITE_P(
    Kinds, Migrate,
    // Every memory kind placed both ways: by the bulk loop, and by placement threads working
    // from the receive rings while the guest threads' faults race them for the same pages.
    ::testing::Values(Case{uffd::MemoryKind::Anonymous, transport::Backend::IoUring, 1, false},
                      Case{uffd::MemoryKind::Anonymous, transport::Backend::IoUring, 1, false, 2},
                      Case{uffd::MemoryKind::Anonymous, transport::Backend::Asio, 2, true},
                      Case{uffd::MemoryKind::Anonymous, transport::Backend::Asio, 2, true, 3},
                      Case{uffd::MemoryKind::Anonymous, transport::Backend::IoUring, 0, false},
                      Case{uffd::MemoryKind::Anonymous, transport::Backend::Asio, 0, true},
                      Case{uffd::MemoryKind::Shmem, transport::Backend::IoUring, 1, true},
                      Case{uffd::MemoryKind::Shmem, transport::Backend::IoUring, 2, true, 2},
                      Case{uffd::MemoryKind::Hugetlb, transport::Backend::IoUring, 1, false},
                      Case{uffd::MemoryKind::Hugetlb, transport::Backend::Asio, 1, false, 2}),
    [](const auto& info) {
        return std::string(uffdm::to_string(info.param.kind)) + "_" +
               std::string(transport::to_string(info.param.backend)) + "_bulk" +
               std::to_string(info.param.bulk) + (info.param.verify ? "_verify" : "") +
               (info.param.placement > 0 ? "_place" + std::to_string(info.param.placement) : "");
    });

}  // namespace
}  // namespace uffdm::migration

namespace uffdm::migration {
namespace {

// receive probes the layout and then connects for real; the source may see the second session
// before it has noticed the first one end. A destination that never sent START holds nothing:
// the newer one replaces it.
TEST(SourceSessions, ADestinationThatNeverStartedIsReplacedByTheNextOne) {
    SyntheticSpec spec{.size = 8ULL << 20, .seed = 3};
    LoopbackSource served(spec);
    ASSERT_TRUE(served.server) << served.error;

    // The first destination joins, and stays connected without ever sending START.
    transport::asio::io_context io;
    std::optional<transport::Connection> idle;
    transport::asio::co_spawn(
        io,
        [&]() -> transport::asio::awaitable<void> {
            auto socket = co_await transport::connect_to(served.server->local_endpoint(), {});
            if (socket) {
                auto c = co_await transport::client_handshake(
                    std::move(*socket), {.role = transport::Role::Urgent}, {});
                if (c) {
                    idle.emplace(std::move(*c));
                }
            }
        },
        transport::asio::detached);
    io.run_for(std::chrono::seconds(5));
    ASSERT_TRUE(idle.has_value());

    auto mapping = uffd::Mapping::anonymous(spec.size);
    auto uffd = uffd::UserfaultFd::open(test::test_open_options());
    ASSERT_TRUE(mapping && uffd);
    FaultServerOptions receive;
    receive.source = served.server->local_endpoint();
    auto destination = FaultServer::create(
        std::move(*uffd),
        {{mapping->data(), mapping->size(), 4096, uffd::MemoryKind::Anonymous, true}}, receive);
    ASSERT_TRUE(destination && (*destination)->start());
    DestinationStats report = (*destination)->wait();
    if (!report.ok) {
        served.server->stop();  // it would go on serving the idle first destination
    }
    served.thread.join();
    EXPECT_TRUE(report.ok) << report.error.message;
    ASSERT_TRUE(served.report.has_value());
    EXPECT_TRUE(served.report->ok) << served.report->error.message;
}

}  // namespace
}  // namespace uffdm::migration

namespace uffdm::migration {
namespace {

// A placement the kernel refuses, on a placement thread: a quarter of the guest is unregistered
// under the pipeline (through a second descriptor of the same userfaultfd), so the stream's
// UFFDIO_COPY there fails with ENOENT. The migration ends with the pages named, the source is
// told, and nothing hangs.
TEST(PlacementFailure, ARangeUnregisteredUnderThePipelineIsReportedByName) {
    SyntheticSpec spec{.size = 32ULL << 20, .seed = 12, .zero_percent = 0};
    // The source waits this long for the failed destination to come back.
    LoopbackSource served(spec, std::chrono::milliseconds(500));
    ASSERT_TRUE(served.server) << served.error;
    auto mapping = uffd::Mapping::anonymous(spec.size);
    auto uffd = uffd::UserfaultFd::open(test::test_open_options());
    ASSERT_TRUE(mapping && uffd);
    uffd::UniqueFd second(::dup(uffd->fd()));
    ASSERT_TRUE(second);
    FaultServerOptions receive;
    receive.source = served.server->local_endpoint();
    receive.hold_stream = true;
    receive.placement_threads = 2;
    auto destination = FaultServer::create(
        std::move(*uffd),
        {{mapping->data(), mapping->size(), 4096, uffd::MemoryKind::Anonymous, true}}, receive);
    ASSERT_TRUE(destination && (*destination)->start());
    uffdio_range gone{.start = reinterpret_cast<std::uint64_t>(mapping->data()) + (24ULL << 20),
                      .len = 8ULL << 20};
    ASSERT_EQ(::ioctl(second.get(), UFFDIO_UNREGISTER, &gone), 0) << std::strerror(errno);
    (*destination)->hold_stream(false);
    DestinationStats report = (*destination)->wait();
    served.thread.join();
    ASSERT_FALSE(report.ok);
    const std::string& why = report.error.message;
    auto at = why.find("placing region 0 pages ");
    ASSERT_NE(at, std::string::npos) << why;
    std::uint64_t first = std::stoull(why.substr(at + 23));
    EXPECT_GE(first, 6144U) << why << ": a page that was still registered";
    EXPECT_NE(why.find("not inside a registration"), std::string::npos) << why;
    EXPECT_LT(report.pages_background, spec.size / 4096);
}

// With the stream held, the only pages that arrive are answers to faults; once released, the
// stream brings the rest. Without the hold, 32 MiB streams in well under the wait below.
TEST(HeldStream, OnlyAnswersArriveUntilItIsReleased) {
    SyntheticSpec spec{.size = 32ULL << 20, .seed = 11, .zero_percent = 0};
    LoopbackSource served(spec);
    ASSERT_TRUE(served.server) << served.error;

    auto mapping = uffd::Mapping::anonymous(spec.size);
    auto uffd = uffd::UserfaultFd::open(test::test_open_options());
    ASSERT_TRUE(mapping && uffd);
    FaultServerOptions receive;
    receive.source = served.server->local_endpoint();
    receive.hold_stream = true;
    auto destination = FaultServer::create(
        std::move(*uffd),
        {{mapping->data(), mapping->size(), 4096, uffd::MemoryKind::Anonymous, true}}, receive);
    ASSERT_TRUE(destination && (*destination)->start());

    // Every 16th page, from two threads: 512 faults, no two on adjacent pages.
    std::uint64_t pages = spec.size / 4096;
    std::atomic<std::uint64_t> wrong{0};
    std::vector<std::thread> vcpus;
    for (std::uint64_t t = 0; t < 2; ++t) {
        vcpus.emplace_back([&, t] {
            for (std::uint64_t p = t * 16; p < pages; p += 32) {
                if (!page_matches(spec, 0, p, {mapping->data() + p * 4096, 4096})) {
                    wrong.fetch_add(1);
                }
            }
        });
    }
    for (auto& v : vcpus) {
        v.join();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    DestinationProgress held = (*destination)->progress();
    EXPECT_EQ(held.pages_present, pages / 16) << "only the faulted pages are there";

    (*destination)->hold_stream(false);
    DestinationStats report = (*destination)->wait();
    served.thread.join();
    ASSERT_TRUE(report.ok) << report.error.message;
    EXPECT_EQ(wrong.load(), 0u);
    EXPECT_EQ(report.pages_urgent, pages / 16);
    EXPECT_EQ(report.pages_background, pages - pages / 16);
    EXPECT_EQ(report.pages_duplicate, 0u);
    for (std::uint64_t p = 0; p < pages; ++p) {
        ASSERT_TRUE(page_matches(spec, 0, p, {mapping->data() + p * 4096, 4096})) << p;
    }
    ASSERT_TRUE(served.report && served.report->ok);
    EXPECT_EQ(served.report->pages_resent, 0u);
}

// A destination that breaks the rules of STREAM, BITMAP or RESUME is refused by name and the
// source stops.
struct HostileStream {
    std::vector<std::pair<wire::MessageType, std::vector<std::byte>>> frames;
    const char* expected;
};

class HostileDestination : public ::testing::TestWithParam<HostileStream> {};

TEST_P(HostileDestination, OutOfTurnOrMalformedSessionMessageIsRefusedByName) {
    const HostileStream c = GetParam();
    SyntheticSpec spec{.size = 4ULL << 20, .seed = 5};
    LoopbackSource served(spec);
    ASSERT_TRUE(served.server) << served.error;

    transport::asio::io_context io;
    std::optional<transport::Failure> ended;
    transport::asio::co_spawn(
        io,
        [&]() -> transport::asio::awaitable<void> {
            auto socket = co_await transport::connect_to(served.server->local_endpoint(), {});
            if (!socket) {
                co_return;
            }
            auto connection = co_await transport::client_handshake(
                std::move(*socket), {.role = transport::Role::Urgent}, {});
            if (!connection) {
                co_return;
            }
            (void)co_await connection->read_frame();  // LAYOUT
            for (const auto& [type, payload] : c.frames) {
                (void)co_await connection->write(
                    transport::encode_frame(wire::frame_type(type), payload));
            }
            for (;;) {  // until the source closes: ERROR, then the end
                auto frame = co_await connection->read_frame();
                if (!frame) {
                    ended = frame.error();
                    co_return;
                }
            }
        },
        transport::asio::detached);
    io.run_for(std::chrono::seconds(10));
    served.thread.join();
    ASSERT_TRUE(served.report.has_value());
    EXPECT_FALSE(served.report->ok);
    EXPECT_NE(served.report->error.message.find(c.expected), std::string::npos)
        << served.report->error.message;
    EXPECT_TRUE(ended.has_value()) << "the source closed the connection";
}

std::vector<std::byte> stream_payload(std::uint32_t flags, std::size_t length = 16) {
    auto bytes = wire::encode(wire::Stream{flags});
    bytes.resize(length);
    return bytes;
}

using wire::MessageType;
const std::vector<std::byte> kStart = wire::encode(wire::Start{wire::Start::kStreamHeld});
// Pages 0..63 of the 1024-page guest: 64 bits set.
const std::vector<std::byte> kBitmap =
    wire::encode(wire::BitmapChunk{0, 0, 64, {~std::uint64_t{0}}});

INSTANTIATE_TEST_SUITE_P(
    Cases, HostileDestination,
    ::testing::Values(
        HostileStream{{{MessageType::Stream, stream_payload(0)}}, "STREAM before START"},
        HostileStream{{{MessageType::Start, kStart}, {MessageType::Stream, stream_payload(0x4)}},
                      "STREAM has reserved bits"},
        HostileStream{{{MessageType::Start, kStart}, {MessageType::Stream, stream_payload(0, 8)}},
                      "8 bytes, not 16"},
        HostileStream{
            {{MessageType::Bitmap, kBitmap},
             {MessageType::Resume, wire::encode(wire::Resume{.flags = 0, .pages_present = 65})}},
            "RESUME says 65 pages are present but its BITMAPs hold 64"},
        HostileStream{{{MessageType::Start, kStart}, {MessageType::Bitmap, kBitmap}},
                      "BITMAP after START or RESUME"},
        HostileStream{{{MessageType::Bitmap, kBitmap}, {MessageType::Start, kStart}},
                      "START after BITMAP"},
        HostileStream{
            {{MessageType::Bitmap, wire::encode(wire::BitmapChunk{3, 0, 64, {~std::uint64_t{0}}})}},
            "BITMAP region 3 does not exist"},
        HostileStream{
            {{MessageType::Start, kStart}, {MessageType::Done, wire::encode(wire::Done{5})}},
            "DONE says 5 pages are present; the guest has 1024"}));

// One scripted urgent connection (no bulk) to a source: reads LAYOUT, sends `frames`, then reads
// until `enough` says so or the source ends it. `reset` ends it with a TCP reset (a broken link,
// which the source waits out) instead of an orderly close.
struct Script {
    std::vector<std::pair<wire::MessageType, std::vector<std::byte>>> frames;
    std::function<bool(const transport::Frame&)> enough = [](const transport::Frame&) {
        return false;
    };
    bool reset = false;
};
struct ScriptEnd {
    std::vector<transport::Frame> received;
    std::optional<transport::Failure> ended;  // how the source ended it, if it did
};

ScriptEnd run_script(const transport::Endpoint& source, const Script& script) {
    ScriptEnd out;
    transport::asio::io_context io;
    transport::asio::co_spawn(
        io,
        [&]() -> transport::asio::awaitable<void> {
            auto socket = co_await transport::connect_to(source, {});
            if (!socket) {
                out.ended = socket.error();
                co_return;
            }
            auto connection = co_await transport::client_handshake(
                std::move(*socket), {.role = transport::Role::Urgent}, {});
            if (!connection) {
                out.ended = connection.error();
                co_return;
            }
            (void)co_await connection->read_frame();  // LAYOUT
            for (const auto& [type, payload] : script.frames) {
                (void)co_await connection->write(
                    transport::encode_frame(wire::frame_type(type), payload));
            }
            for (;;) {
                auto frame = co_await connection->read_frame();
                if (!frame) {
                    out.ended = frame.error();
                    co_return;
                }
                bool stop = transport::is_application(frame->header.type) && script.enough(*frame);
                out.received.push_back(std::move(*frame));
                if (stop) {
                    break;
                }
            }
            if (script.reset) {
                linger hard{.l_onoff = 1, .l_linger = 0};
                ::setsockopt(connection->socket().native_handle(), SOL_SOCKET, SO_LINGER, &hard,
                             sizeof hard);
            }
            boost::system::error_code ignored;
            connection->socket().close(ignored);
        },
        transport::asio::detached);
    io.run_for(std::chrono::seconds(10));
    return out;
}

bool is_pages(const transport::Frame& frame) {
    return frame.header.type == wire::frame_type(MessageType::Pages);
}

// Page 3 asked for and answered with the stream held, then the link breaks (a reset): a
// session the source waits to see resumed. Nothing else was ever sent.
void first_session_with_page_3(const LoopbackSource& served) {
    auto first =
        run_script(served.server->local_endpoint(),
                   {.frames = {{MessageType::Start, kStart},
                               {MessageType::Request, wire::encode(wire::Request{0, 1, 3})}},
                    .enough = is_pages,
                    .reset = true});
    ASSERT_EQ(first.received.size(), 1U);
    auto answer = wire::decode_pages(first.received[0].payload, served.memory->layout());
    ASSERT_TRUE(answer);
    EXPECT_EQ(answer->header.first_page, 3U);
    // Until the source has seen the break: before that, a new destination finds it busy (a
    // real one retries; this script would not).
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (served.server->progress().connected && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    ASSERT_FALSE(served.server->progress().connected);
}

std::vector<std::byte> bitmap_of(std::initializer_list<std::uint64_t> pages) {
    std::uint64_t word = 0;
    for (std::uint64_t p : pages) {
        word |= std::uint64_t{1} << p;
    }
    return wire::encode(wire::BitmapChunk{0, 0, 64, {word}});
}

// What a source can tell of a resuming destination's BITMAP: a page this source never sent
// cannot be there. The claim is refused by name and the source stops.
TEST(ResumingDestination, ABitmapClaimingAPageThisSourceNeverSentIsRefused) {
    SyntheticSpec spec{.size = 4ULL << 20, .seed = 5};
    LoopbackSource served(spec, std::chrono::seconds(10));
    ASSERT_TRUE(served.server) << served.error;
    first_session_with_page_3(served);
    auto second = run_script(
        served.server->local_endpoint(),
        {.frames = {
             {MessageType::Bitmap, bitmap_of({3, 10})},
             {MessageType::Resume,
              wire::encode(wire::Resume{.flags = wire::Start::kStreamHeld, .pages_present = 2})}}});
    served.thread.join();
    ASSERT_TRUE(served.report.has_value());
    EXPECT_FALSE(served.report->ok);
    EXPECT_NE(served.report->error.message.find(
                  "BITMAP claims page 10 of region 0 is present, but this source never sent it"),
              std::string::npos)
        << served.report->error.message;
    EXPECT_TRUE(second.ended.has_value()) << "the source closed the connection";
}

// Resumes with `bitmap` (claiming `claimed` pages), asks for page 10, and expects it answered
// with the guest's content; then stops the source, which counts one RESUME.
void expect_resumed_and_page_10_answered(LoopbackSource& served, const SyntheticSpec& spec,
                                         std::vector<std::byte> bitmap, std::uint64_t claimed) {
    auto session =
        run_script(served.server->local_endpoint(),
                   {.frames = {{MessageType::Bitmap, std::move(bitmap)},
                               {MessageType::Resume,
                                wire::encode(wire::Resume{.flags = wire::Start::kStreamHeld,
                                                          .pages_present = claimed})},
                               {MessageType::Request, wire::encode(wire::Request{0, 1, 10})}},
                    .enough = is_pages});
    ASSERT_EQ(session.received.size(), 1U) << (session.ended ? session.ended->detail : "");
    auto answer = wire::decode_pages(session.received[0].payload, served.memory->layout());
    ASSERT_TRUE(answer);
    EXPECT_EQ(answer->header.first_page, 10U);
    EXPECT_TRUE(page_matches(spec, 0, 10, answer->data));
    served.server->stop();
    served.thread.join();
    ASSERT_TRUE(served.report.has_value());
    EXPECT_EQ(served.report->resumes, 1U);
}

// The honest claim (only what was sent) resumes, and a page asked for is answered.
TEST(ResumingDestination, ABitmapOfPagesThisSourceSentResumesTheMigration) {
    SyntheticSpec spec{.size = 4ULL << 20, .seed = 5};
    LoopbackSource served(spec, std::chrono::seconds(10));
    ASSERT_TRUE(served.server) << served.error;
    first_session_with_page_3(served);
    expect_resumed_and_page_10_answered(served, spec, bitmap_of({3}), 1);
}

// What a source cannot tell: restarted on its image (here: never saw START), it knows nothing
// of what its predecessor sent, so it takes a BITMAP as it comes. It never sends the claimed
// pages unasked, and it still answers a REQUEST for one: a lying destination can only starve
// itself of pages it would then ask for.
TEST(ResumingDestination, ASourceThatNeverSawStartTrustsTheBitmapButAnswersEveryRequest) {
    SyntheticSpec spec{.size = 4ULL << 20, .seed = 5};
    LoopbackSource served(spec, std::chrono::seconds(10));
    ASSERT_TRUE(served.server) << served.error;
    expect_resumed_and_page_10_answered(served, spec, bitmap_of({3, 10}), 2);
}

}  // namespace
}  // namespace uffdm::migration

namespace uffdm::migration {
namespace {

// Pages of a one-region 4 KiB guest whose content is not the synthetic guest's.
std::uint64_t wrong_pages(const SyntheticSpec& spec, const uffd::Mapping& mapping) {
    std::uint64_t wrong = 0;
    for (std::uint64_t p = 0; p < spec.size / 4096; ++p) {
        if (!page_matches(spec, 0, p, std::span(mapping.data() + p * 4096, 4096))) {
            ++wrong;
        }
    }
    return wrong;
}

// Receives a one-region 4 KiB guest into `mapping` from the source behind the relay at `port`,
// with a reconnect deadline of 4 s.
DestinationStats receive_through(
    std::uint16_t port, const uffd::Mapping& mapping, bool verify = false,
    std::chrono::milliseconds reconnect_timeout = std::chrono::seconds(4)) {
    auto uffd = uffd::UserfaultFd::open(test::test_open_options());
    FaultServerOptions receive;
    receive.source = *transport::parse_endpoint("tcp:127.0.0.1:" + std::to_string(port));
    receive.reconnect_timeout = reconnect_timeout;
    receive.verify_hashes = verify;
    DestinationStats cannot;
    cannot.error.message = "the destination could not start";
    if (!uffd) {
        return cannot;
    }
    auto destination = FaultServer::create(
        std::move(*uffd),
        {{mapping.data(), mapping.size(), 4096, uffd::MemoryKind::Anonymous, true}}, receive);
    if (!destination || !(*destination)->start()) {
        return cannot;
    }
    return (*destination)->wait();
}

// What the relay below saw of DONE frames from the destination.
struct DoneCounts {
    std::atomic<int> broken{0};
    std::atomic<int> forwarded{0};
};

// Reads the frames the destination sends and forwards the whole ones, except that the first
// time one is DONE it resets both sides of that connection in its place: the break comes after
// the destination has every page and before the source has heard so.
test::TcpRelay::Verdict break_first_done(std::span<const std::byte> pending, DoneCounts& counts) {
    std::size_t at = 0;
    while (pending.size() - at >= transport::kHeaderSize) {
        std::uint32_t length = 0;
        std::memcpy(&length, pending.data() + at + 8, sizeof length);
        std::size_t whole = transport::kHeaderSize + length;
        if (pending.size() - at < whole) {
            break;
        }
        if (static_cast<wire::MessageType>(pending[at + 6]) == wire::MessageType::Done) {
            if (counts.broken.load() == 0) {
                ++counts.broken;
                return {.forward = at, .reset = true};
            }
            ++counts.forwarded;
        }
        at += whole;
    }
    return {.forward = at};
}

// The destination has every page and sends DONE; the connection breaks before the source reads
// it. The source cannot tell that from any other break and waits; the destination must connect
// once more to deliver DONE, or the source fails at its deadline.
TEST(Recovery, ABreakAfterTheLastPageBeforeTheSourceHeardDoneIsMendedByANewSession) {
    SyntheticSpec spec{.size = 16ULL << 20, .seed = 21, .zero_percent = 20};
    LoopbackSource served(spec, std::chrono::seconds(4));
    ASSERT_TRUE(served.server) << served.error;
    DoneCounts dones;
    test::TcpRelay relay(
        served.server->local_endpoint().port,
        [&](std::span<const std::byte> pending) { return break_first_done(pending, dones); });
    ASSERT_NE(relay.port(), 0);

    auto mapping = uffd::Mapping::anonymous(spec.size);
    ASSERT_TRUE(mapping);
    DestinationStats report = receive_through(relay.port(), *mapping);
    if (!report.ok) {
        served.server->stop();  // it may never have been reached
    }
    served.thread.join();  // the source ends by itself: after DONE, or at its deadline

    EXPECT_TRUE(report.ok) << report.error.message;
    EXPECT_EQ(dones.broken.load(), 1);
    EXPECT_EQ(dones.forwarded.load(), 1) << "the destination never delivered DONE again";
    ASSERT_TRUE(served.report.has_value());
    EXPECT_TRUE(served.report->ok) << served.report->error.message;
    EXPECT_EQ(served.report->pauses, 1U);
    EXPECT_EQ(wrong_pages(spec, *mapping), 0U);
}

// The very first session breaks during its handshake (the source was reached: this is not a
// wrong address). Like any later break it is retried, and the migration completes; before,
// the destination gave up at once.
TEST(Recovery, ABreakDuringTheFirstHandshakeIsRetriedLikeAnyOtherBreak) {
    SyntheticSpec spec{.size = 8ULL << 20, .seed = 23, .zero_percent = 20};
    LoopbackSource served(spec, std::chrono::seconds(4));
    ASSERT_TRUE(served.server) << served.error;
    std::atomic<int> resets{0};
    test::TcpRelay relay(served.server->local_endpoint().port,
                         [&](std::span<const std::byte> pending) {
                             if (resets.load() == 0) {
                                 ++resets;  // the first HELLO: reset instead of forwarding it
                                 return test::TcpRelay::Verdict{.forward = 0, .reset = true};
                             }
                             return test::TcpRelay::Verdict{.forward = pending.size()};
                         });
    ASSERT_NE(relay.port(), 0);

    auto mapping = uffd::Mapping::anonymous(spec.size);
    ASSERT_TRUE(mapping);
    DestinationStats report = receive_through(relay.port(), *mapping);
    if (!report.ok) {
        served.server->stop();
    }
    served.thread.join();

    EXPECT_EQ(resets.load(), 1);
    ASSERT_TRUE(report.ok) << report.error.message;
    ASSERT_TRUE(served.report.has_value());
    EXPECT_TRUE(served.report->ok) << served.report->error.message;
    EXPECT_EQ(wrong_pages(spec, *mapping), 0U);
}

// A source that is reached every time, and whose handshake breaks every time: retried until the
// deadline, then a failure that says so and names the last attempt's error.
TEST(Recovery, AHandshakeBrokenEveryTimeFailsAtTheDeadlineNamingTheLastAttempt) {
    SyntheticSpec spec{.size = 4ULL << 20, .seed = 29};
    LoopbackSource served(spec, std::chrono::seconds(4));
    ASSERT_TRUE(served.server) << served.error;
    std::atomic<int> resets{0};
    test::TcpRelay relay(served.server->local_endpoint().port, [&](std::span<const std::byte>) {
        ++resets;
        return test::TcpRelay::Verdict{.forward = 0, .reset = true};
    });
    ASSERT_NE(relay.port(), 0);
    auto mapping = uffd::Mapping::anonymous(spec.size);
    ASSERT_TRUE(mapping);
    DestinationStats report =
        receive_through(relay.port(), *mapping, false, std::chrono::milliseconds(800));
    served.server->stop();
    served.thread.join();
    ASSERT_FALSE(report.ok);
    EXPECT_EQ(report.error.code, Errc::TimedOut) << report.error.message;
    EXPECT_NE(report.error.message.find(
                  "no session could be made with the source within 800 ms; the last attempt: "),
              std::string::npos)
        << report.error.message;
    EXPECT_GE(resets.load(), 3) << "retried with backoff (50, 100, 200 ms...) until the deadline";
}

// Whether the page at `address` is in this process's page table (/proc/self/pagemap bit 63):
// a page placed, as opposed to missing or poisoned, which a read would block on or die of.
bool page_present(const std::byte* address) {
    std::ifstream pagemap("/proc/self/pagemap", std::ios::binary);
    pagemap.seekg(
        static_cast<std::streamoff>(reinterpret_cast<std::uintptr_t>(address) / 4096 * 8));
    std::uint64_t entry = 0;
    pagemap.read(reinterpret_cast<char*>(&entry), sizeof entry);
    return pagemap && (entry >> 63) != 0;
}

// Walks the frames the source sends, per connection, and flips the last byte of the first PAGES
// frame that carries page data (the last byte of its last page): corruption on the way, after
// the source computed the page's hash.
class PageCorrupter {
  public:
    void operator()(std::size_t connection, std::span<std::byte> bytes) {
        Walk& walk = walks_[connection];
        for (std::size_t i = 0; i < bytes.size();) {
            if (walk.header.size() < transport::kHeaderSize) {
                walk.header.push_back(bytes[i++]);
                if (walk.header.size() == transport::kHeaderSize) {
                    std::uint32_t length = 0;
                    std::memcpy(&length, walk.header.data() + 8, sizeof length);
                    walk.left = length;
                    walk.target =
                        !flipped_ && length > wire::kPagesHeaderSize + 8 &&
                        static_cast<wire::MessageType>(walk.header[6]) == wire::MessageType::Pages;
                    if (walk.left == 0) {
                        walk.header.clear();
                    }
                }
                continue;
            }
            std::size_t take = std::min<std::size_t>(walk.left, bytes.size() - i);
            if (walk.target && take == walk.left) {
                bytes[i + take - 1] ^= std::byte{0x5a};
                flipped_ = true;
                walk.target = false;
            }
            walk.left -= take;
            i += take;
            if (walk.left == 0) {
                walk.header.clear();
            }
        }
    }
    [[nodiscard]] bool flipped() const { return flipped_.load(); }

  private:
    struct Walk {
        std::vector<std::byte> header;
        std::uint64_t left = 0;
        bool target = false;
    };
    std::map<std::size_t, Walk> walks_;  // the relay's threads, under its mutex
    std::atomic<bool> flipped_{false};   // read by the test while the relay runs
};

// The limit of --verify, both ways: a page changed on the way is caught (the hash is the
// source's), and the same change without --verify reaches the guest.
TEST(Verify, APageChangedOnTheWayAfterItsHashWasMadeIsRefusedAndNeverPlaced) {
    for (bool verify : {true, false}) {
        SCOPED_TRACE(verify ? "--verify" : "no --verify");
        SyntheticSpec spec{.size = 8ULL << 20, .seed = 31, .zero_percent = 20};
        LoopbackSource served(spec, std::chrono::seconds(4));
        ASSERT_TRUE(served.server) << served.error;
        PageCorrupter corrupter;
        test::TcpRelay relay(
            served.server->local_endpoint().port,
            [](std::span<const std::byte> pending) {
                return test::TcpRelay::Verdict{.forward = pending.size()};
            },
            std::ref(corrupter));
        ASSERT_NE(relay.port(), 0);
        auto mapping = uffd::Mapping::anonymous(spec.size);
        ASSERT_TRUE(mapping);
        DestinationStats report = receive_through(relay.port(), *mapping, verify);
        served.server->stop();
        served.thread.join();
        ASSERT_TRUE(corrupter.flipped());
        if (verify) {
            ASSERT_FALSE(report.ok);
            EXPECT_EQ(report.error.code, Errc::ProtocolViolation);
            EXPECT_NE(report.error.message.find("does not match its hash"), std::string::npos)
                << report.error.message;
            // The changed page was never placed: what is there is all the source's.
            // (Missing pages are poisoned now: only present ones, by the page table, are read.)
            std::uint64_t present = 0;
            std::uint64_t wrong = 0;
            for (std::uint64_t p = 0; p < spec.size / 4096; ++p) {
                auto page = std::span(mapping->data() + p * 4096, 4096);
                if (page_present(page.data())) {
                    ++present;
                    wrong += page_matches(spec, 0, p, page) ? 0 : 1;
                }
            }
            EXPECT_LT(present, spec.size / 4096);
            EXPECT_EQ(wrong, 0U);
        } else {
            ASSERT_TRUE(report.ok) << report.error.message;
            EXPECT_EQ(wrong_pages(spec, *mapping), 1U) << "the relay changed one byte of a page";
        }
    }
}

}  // namespace
}  // namespace uffdm::migration
