// end_to_end_test.cpp — A real postcopy migration in one process: source, destination, guest.
#include <gtest/gtest.h>

#include <atomic>
#include <random>
#include <thread>

#include "migration/fault_server.hpp"
#include "migration/page_server.hpp"
#include "tests/support/test_support.hpp"
#include "uffd/mapping.hpp"

namespace uffdm::migration {
namespace {

struct Case {
    uffd::MemoryKind kind;
    transport::Backend backend;
    std::size_t bulk;
    bool verify;
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
        regions.push_back(
            {m->data(), m->size(), m->page_size(), c.kind, c.kind != uffd::MemoryKind::Hugetlb});
        mappings.push_back(std::move(*m));
    }
    auto uffd = uffd::UserfaultFd::open(test::test_open_options());
    ASSERT_TRUE(uffd) << uffd.error().message();
    FaultServerOptions receive;
    receive.source = (*server)->local_endpoint();
    receive.backend = c.backend;
    receive.bulk_channels = c.bulk;
    receive.verify_hashes = c.verify;
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
    EXPECT_EQ(
        source_report->pages_streamed + source_report->pages_answered - source_report->pages_resent,
        report.pages_total);
}

INSTANTIATE_TEST_SUITE_P(
    Kinds, Migrate,
    ::testing::Values(Case{uffd::MemoryKind::Anonymous, transport::Backend::IoUring, 1, false},
                      Case{uffd::MemoryKind::Anonymous, transport::Backend::Asio, 2, true},
                      Case{uffd::MemoryKind::Shmem, transport::Backend::IoUring, 1, true},
                      Case{uffd::MemoryKind::Hugetlb, transport::Backend::IoUring, 1, false}),
    [](const auto& info) {
        return std::string(uffdm::to_string(info.param.kind)) + "_" +
               std::string(transport::to_string(info.param.backend)) + "_bulk" +
               std::to_string(info.param.bulk) + (info.param.verify ? "_verify" : "");
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
    auto memory = GuestMemory::synthetic(spec);
    ASSERT_TRUE(memory);
    PageServerOptions serve;
    serve.listen = *transport::parse_endpoint("tcp:127.0.0.1:0");
    auto server = PageServer::open(*memory, serve);
    ASSERT_TRUE(server);
    std::optional<SourceStats> source_report;
    std::thread source([&] { source_report = (*server)->run(); });

    // The first destination joins, and stays connected without ever sending START.
    transport::asio::io_context io;
    std::optional<transport::Connection> idle;
    transport::asio::co_spawn(
        io,
        [&]() -> transport::asio::awaitable<void> {
            auto socket = co_await transport::connect_to((*server)->local_endpoint(), {});
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
    receive.source = (*server)->local_endpoint();
    auto destination = FaultServer::create(
        std::move(*uffd),
        {{mapping->data(), mapping->size(), 4096, uffd::MemoryKind::Anonymous, true}}, receive);
    ASSERT_TRUE(destination && (*destination)->start());
    DestinationStats report = (*destination)->wait();
    if (!report.ok) {
        (*server)->stop();  // it would go on serving the idle first destination
    }
    source.join();
    EXPECT_TRUE(report.ok) << report.error.message;
    ASSERT_TRUE(source_report.has_value());
    EXPECT_TRUE(source_report->ok) << source_report->error.message;
}

}  // namespace
}  // namespace uffdm::migration
