// hostile_source_test.cpp — A source that lies or dies: refused, reported, the guest never fooled.
#include <gtest/gtest.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <optional>
#include <thread>

#include "migration/fault_server.hpp"
#include "tests/support/fake_source.hpp"
#include "tests/support/test_support.hpp"
#include "uffd/mapping.hpp"

namespace uffdm::migration {
namespace {

using test::FakeSource;
using test::Misbehaviour;

constexpr std::uint64_t kPages = 64;
constexpr std::uint64_t kHonest = 4;

struct Case {
    Misbehaviour what;
    bool verify;
    Errc expected;
    const char* words;  // in the failure's detail
    const char* name;
    bool honest_first = true;  // the honest pages come before the misbehaviour
    bool accept_compression = true;
};

class HostileSource : public ::testing::TestWithParam<Case> {};

// In a child process: a destination against the fake source, one guest thread reading an honest
// page and one blocked on a page the source never sends honestly. The child exits 0 when the
// migration failed as expected and the blocked thread is still blocked.
TEST_P(HostileSource, IsRefusedWithTheReasonAndTheWaitingThreadStaysBlocked) {
    const Case c = GetParam();
    auto result = test::run_in_child([&](std::FILE* report) {
        wire::Layout layout{{{0, 4096, kPages * 4096}}};
        FakeSource source(layout, kHonest, c.what);
        std::atomic<int> honest_byte{-1};
        if (c.honest_first) {
            // The lie comes once the honest page is in the guest: on another connection it
            // could overtake it, and then nothing after the refusal is placed.
            source.misbehave_once([&] { return honest_byte.load() != -1; });
        }
        auto mapping = uffd::Mapping::anonymous(kPages * 4096);
        auto uffd = uffd::UserfaultFd::open(test::test_open_options());
        if (!mapping || !uffd) {
            std::fprintf(report, "setup failed");
            return 10;
        }
        FaultServerOptions options;
        options.source = *transport::parse_endpoint(source.endpoint());
        options.verify_hashes = c.verify;
        options.accept_compression = c.accept_compression;
        // A source that dies may be started again; this one is not, so the deadline ends it.
        options.reconnect_timeout = std::chrono::milliseconds(300);
        auto destination = FaultServer::create(
            std::move(*uffd),
            {{mapping->data(), mapping->size(), 4096, uffd::MemoryKind::Anonymous, true}}, options);
        if (!destination || !(*destination)->start()) {
            std::fprintf(report, "destination did not start");
            return 11;
        }
        std::atomic<pid_t> waiting_tid{0};
        std::atomic<pid_t> honest_tid{0};
        std::thread honest([&] {
            honest_tid = static_cast<pid_t>(::syscall(SYS_gettid));
            honest_byte = static_cast<int>(mapping->page(1)[100]);
        });
        std::thread waiting([&] {
            waiting_tid = static_cast<pid_t>(::syscall(SYS_gettid));
            volatile std::byte b = mapping->page(kHonest)[0];  // never arrives honestly
            (void)b;
            std::fprintf(report, "the waiting thread was released: it must stay blocked\n");
        });
        DestinationStats outcome = (*destination)->wait();
        // The honest page arrives before the lie; if it did not, its reader is blocked too.
        for (int i = 0; c.honest_first && i < 200 && honest_byte.load() == -1; ++i) {
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        honest.detach();
        int status = 0;
        if (outcome.ok) {
            std::fprintf(report, "the migration succeeded against a lying source\n");
            status = 1;
        } else if (outcome.error.code != c.expected ||
                   outcome.error.message.find(c.words) == std::string::npos) {
            std::fprintf(report, "wrong failure: %s (%s)\n", outcome.error.message.c_str(),
                         outcome.error.code.message().c_str());
            status = 2;
        }
        while (waiting_tid.load() == 0 || honest_tid.load() == 0) {
            std::this_thread::yield();
        }
        if (c.honest_first && honest_byte.load() != static_cast<int>(FakeSource::honest_byte(1))) {
            std::fprintf(report, "the honest page read %d\n", honest_byte.load());
            status = 3;
        }
        if (!c.honest_first && !test::wait_until_blocked_in_fault({honest_tid.load()}, 2000)) {
            std::fprintf(report, "a page that never came was read as %d\n", honest_byte.load());
            status = 3;
        }
        if (!test::wait_until_blocked_in_fault({waiting_tid.load()}, 2000)) {
            std::fprintf(report, "the waiting thread is not blocked in the fault\n");
            status = 4;
        }
        std::fprintf(report, "failure: %s\n", outcome.ok ? "none" : outcome.error.message.c_str());
        std::fflush(report);
        // The blocked thread would be poisoned (SIGBUS) by the destructor; this child just ends.
        ::_exit(status);
        return status;
    });
    EXPECT_TRUE(result.exited_with(0)) << result.describe();
}

INSTANTIATE_TEST_SUITE_P(
    Misbehaviours, HostileSource,
    ::testing::Values(
        Case{Misbehaviour::PageOutsideRegion, false, Errc::ProtocolViolation, "outside region 0",
             "PageOutsideRegion"},
        Case{Misbehaviour::ShortPage, false, Errc::ProtocolViolation, "short or wrong-size",
             "ShortPage"},
        Case{Misbehaviour::WrongHash, true, Errc::ProtocolViolation, "does not match its hash",
             "WrongHash"},
        Case{Misbehaviour::DiesMidRun, false, Errc::TimedOut, "the connection to the source broke",
             "DiesMidRun"},
        Case{Misbehaviour::SecondLayout, false, Errc::ProtocolViolation, "LAYOUT twice",
             "SecondLayout"},
        Case{Misbehaviour::PagesBeforeStart, false, Errc::ProtocolViolation,
             "the source sent PAGES before START", "PagesBeforeStart", false},
        Case{Misbehaviour::UnrequestedAnswer, false, Errc::ProtocolViolation,
             "answered a REQUEST never made: region 0 page 63", "UnrequestedAnswer"},
        Case{Misbehaviour::StreamOnUrgent, false, Errc::ProtocolViolation,
             "streamed pages on the urgent connection", "StreamOnUrgent"},
        Case{Misbehaviour::AnswerOnBulk, false, Errc::ProtocolViolation,
             "an answer to a REQUEST on a bulk connection", "AnswerOnBulk"},
        Case{Misbehaviour::FalseStreamEnd, false, Errc::ProtocolViolation,
             "STREAM_END says 5 pages were streamed on this bulk connection; 4 arrived",
             "FalseStreamEnd"},
        Case{Misbehaviour::PagesAfterStreamEnd, false, Errc::ProtocolViolation,
             "PAGES after the STREAM_END of that bulk connection", "PagesAfterStreamEnd"},
        // A live source: its rounds and switchover are checked as closely as its pages. The
        // two after a true switchover also show that a thread blocked on a missing page stays
        // blocked across it (the discard then keeps the ranges registered).
        Case{Misbehaviour::LiveFalseRoundEnd, false, Errc::ProtocolViolation,
             "ROUND_END says 5 pages were sent on this connection in round 0; 4 arrived",
             "LiveFalseRoundEnd"},
        Case{Misbehaviour::LiveSwitchoverBeforeRoundEnd, false, Errc::ProtocolViolation,
             "SWITCHOVER after 0 rounds while this destination acknowledged 0",
             "LiveSwitchoverBeforeRoundEnd"},
        Case{Misbehaviour::LiveSwitchoverMiscounted, false, Errc::ProtocolViolation,
             "SWITCHOVER says 2 pages are discarded but its DISCARDs name 1",
             "LiveSwitchoverMiscounted"},
        Case{Misbehaviour::LiveDiscardOutOfRange, false, Errc::ProtocolViolation,
             "DISCARD region 5 does not exist", "LiveDiscardOutOfRange"},
        Case{Misbehaviour::LiveDiscardAfterSwitchover, false, Errc::ProtocolViolation,
             "DISCARD after SWITCHOVER", "LiveDiscardAfterSwitchover"},
        Case{Misbehaviour::LiveRoundEndAfterSwitchover, false, Errc::ProtocolViolation,
             "ROUND_END from a source after SWITCHOVER", "LiveRoundEndAfterSwitchover"},
        Case{Misbehaviour::RoundEndFromPausedSource, false, Errc::ProtocolViolation,
             "whose LAYOUT said its guest is paused", "RoundEndFromPausedSource"},
        // Compressed runs: checked before anything of them is placed.
        Case{Misbehaviour::Lz4Corrupt, false, Errc::ProtocolViolation,
             "a corrupt lz4 block, or one that expands past the run's 4096 bytes", "Lz4Corrupt"},
        Case{Misbehaviour::Lz4ShortRun, false, Errc::ProtocolViolation,
             "expands to 2048 bytes; the descriptor says 4096", "Lz4ShortRun"},
        Case{Misbehaviour::ZstdBomb, false, Errc::ProtocolViolation,
             "the zstd frame states 8192 bytes, more than the run holds (4096)", "ZstdBomb"},
        Case{Misbehaviour::Lz4Unnegotiated, false, Errc::ProtocolViolation,
             "PAGES encoding lz4 was not negotiated", "Lz4Unnegotiated", true, false}),
    [](const auto& info) { return std::string(info.param.name); });

// A destination of kPages anonymous pages against the source at `endpoint`, started; the
// mapping is returned alongside because the destination's memory must outlive it.
struct StartedDestination {
    std::optional<uffd::Mapping> mapping;
    std::unique_ptr<FaultServer> server;
};

StartedDestination start_destination(const std::string& endpoint) {
    StartedDestination d;
    auto mapping = uffd::Mapping::anonymous(kPages * 4096);
    auto uffd = uffd::UserfaultFd::open(test::test_open_options());
    EXPECT_TRUE(mapping && uffd);
    if (!mapping || !uffd) {
        return d;
    }
    d.mapping.emplace(std::move(*mapping));
    FaultServerOptions options;
    options.source = *transport::parse_endpoint(endpoint);
    auto server = FaultServer::create(
        std::move(*uffd),
        {{d.mapping->data(), d.mapping->size(), 4096, uffd::MemoryKind::Anonymous, true}}, options);
    EXPECT_TRUE(server && (*server)->start());
    if (server) {
        d.server = std::move(*server);
    }
    return d;
}

TEST(HostileSourceLayout, ADifferentPageSizeIsRefusedWithBothLayoutsInTheMessage) {
    wire::Layout source_layout{{{0, 8192, kPages * 4096}}};
    FakeSource source(source_layout, 0, Misbehaviour::DiesMidRun);
    StartedDestination destination = start_destination(source.endpoint());
    ASSERT_TRUE(destination.server);
    DestinationStats outcome = destination.server->wait();
    ASSERT_FALSE(outcome.ok);
    const std::string& why = outcome.error.message;
    EXPECT_NE(why.find("the source has 1 region: #0 256 KiB of 8 KiB pages"), std::string::npos)
        << why;
    EXPECT_NE(why.find("this destination has 1 region: #0 256 KiB of 4 KiB pages"),
              std::string::npos)
        << why;
    EXPECT_FALSE(source.misbehaved());  // nothing was sent after the layout
}

TEST(HostileSourceLayout, NoSourceAtAllIsPeerLostNamingTheAddress) {
    StartedDestination destination = start_destination("tcp:127.0.0.1:1");
    ASSERT_TRUE(destination.server);
    DestinationStats outcome = destination.server->wait();
    ASSERT_FALSE(outcome.ok);
    EXPECT_EQ(outcome.error.code, Errc::PeerLost);
    EXPECT_NE(outcome.error.message.find("127.0.0.1:1"), std::string::npos)
        << outcome.error.message;
}

TEST(GuestRegions, UnalignedOrEmptyOrTooManyRegionsAreRefused) {
    auto mapping = uffd::Mapping::anonymous(64 * 4096);
    ASSERT_TRUE(mapping);
    auto make = [&](std::vector<GuestRegion> regions) {
        auto uffd = uffd::UserfaultFd::open(test::test_open_options());
        FaultServerOptions options;
        options.source = *transport::parse_endpoint("tcp:127.0.0.1:1");
        return FaultServer::create(std::move(*uffd), std::move(regions), options);
    };
    auto unaligned = make({{mapping->data() + 100, 4096, 4096, uffd::MemoryKind::Anonymous, true}});
    ASSERT_FALSE(unaligned);
    EXPECT_EQ(unaligned.error().code, Errc::Unaligned);
    auto empty = make({});
    ASSERT_FALSE(empty);
    EXPECT_EQ(empty.error().code, Errc::InvalidArgument);
    auto partial = make({{mapping->data(), 4096 + 1, 4096, uffd::MemoryKind::Anonymous, true}});
    EXPECT_FALSE(partial);
    std::vector<GuestRegion> many(65,
                                  {mapping->data(), 4096, 4096, uffd::MemoryKind::Anonymous, true});
    EXPECT_FALSE(make(many));
}

}  // namespace
}  // namespace uffdm::migration

namespace uffdm::migration {
namespace {

// The VMM's other choice: when the migration fails, the missing pages are poisoned at once, so
// the thread waiting on one gets a memory error (SIGBUS) instead of waiting for ever.
TEST(FailurePolicy, PoisonOnFailureGivesTheWaitingThreadAMemoryError) {
    auto result = test::run_in_child([&](std::FILE* report) {
        wire::Layout layout{{{0, 4096, kPages * 4096}}};
        FakeSource source(layout, kHonest, Misbehaviour::DiesMidRun);
        auto mapping = uffd::Mapping::anonymous(kPages * 4096);
        auto uffd = uffd::UserfaultFd::open(test::test_open_options());
        if (!mapping || !uffd || !uffd->granted().has(uffd::Feature::Poison)) {
            std::fprintf(report, "setup failed (or no UFFDIO_POISON)");
            return 10;
        }
        FaultServerOptions options;
        options.source = *transport::parse_endpoint(source.endpoint());
        options.reconnect_timeout = std::chrono::milliseconds(200);
        options.poison_on_failure = true;
        auto destination = FaultServer::create(
            std::move(*uffd),
            {{mapping->data(), mapping->size(), 4096, uffd::MemoryKind::Anonymous, true}}, options);
        if (!destination || !(*destination)->start()) {
            std::fprintf(report, "destination did not start");
            return 11;
        }
        std::signal(SIGBUS, SIG_DFL);
        std::thread waiting([&] {
            volatile std::byte b = mapping->page(kHonest)[0];  // never arrives
            (void)b;
            std::fprintf(report, "the waiting thread read a page that never arrived\n");
            std::fflush(report);
            ::_exit(3);
        });
        DestinationStats outcome = (*destination)->wait();
        std::fprintf(report, "failure: %s\n", outcome.error.message.c_str());
        std::fflush(report);
        waiting.join();  // SIGBUS ends the process first
        return 4;
    });
    EXPECT_TRUE(result.killed_by(SIGBUS)) << result.describe();
}

}  // namespace
}  // namespace uffdm::migration
