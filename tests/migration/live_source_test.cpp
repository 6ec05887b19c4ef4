// live_source_test.cpp — A source whose guest keeps writing: rounds, switchover, breaks, refusals.
// Source and destination run in this process over real TCP (through a relay where a break is
// wanted); the source's guest is a mapping a writer thread stamps. Every case that completes
// ends with the destination's memory compared, byte for byte, with the source's after the pause.
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <optional>
#include <random>
#include <thread>

#include "migration/fault_server.hpp"
#include "migration/page_server.hpp"
#include "tests/support/tcp_relay.hpp"
#include "tests/support/test_support.hpp"
#include "uffd/mapping.hpp"

namespace uffdm::migration {
namespace {

constexpr std::uint64_t kPageSize = 4096;

// Writes stamps into a hot set of the guest's pages until paused. Named for the TSan
// suppression (scripts/tsan.supp): it races the source's reads by design.
void live_guest_writer(std::byte* guest, std::uint64_t pages, std::atomic<bool>& stop,
                       std::atomic<std::uint64_t>& writes) {
    std::minstd_rand rng(7);
    std::uint64_t version = 0;
    while (!stop.load(std::memory_order_relaxed)) {
        std::uint64_t page = (rng() % (pages / 16)) * 16;  // every 16th page: a 6 % hot set
        ++version;
        std::memcpy(guest + page * kPageSize + 64, &version, sizeof version);
        writes.fetch_add(1, std::memory_order_relaxed);
        if (version % 64 == 0) {
            std::this_thread::sleep_for(std::chrono::microseconds(200));
        }
    }
}

// As live_guest_writer, and each write is also set in the VMM's own dirty log, after it.
void live_guest_writer_with_log(const uffd::Mapping& guest, std::uint64_t pages,
                                std::vector<std::atomic<std::uint64_t>>& log,
                                std::atomic<bool>& stop) {
    std::minstd_rand rng(3);
    for (std::uint64_t version = 1; !stop.load(); ++version) {
        std::uint64_t page = (rng() % (pages / 8)) * 8;
        std::memcpy(guest.page(page) + 8, &version, sizeof version);
        log[page / 64].fetch_or(std::uint64_t{1} << (page % 64));
        std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
}

// The source: a guest of `pages` pages (distinct content, some zero), a writer on it, and a
// live page server on a thread of its own.
struct LiveSource {
    LiveSource(std::uint64_t pages, std::uint32_t max_rounds,
               std::chrono::milliseconds reconnect_timeout = std::chrono::seconds(5))
        : mapping(uffd::Mapping::anonymous(pages * kPageSize)) {
        if (!mapping) {
            error = "cannot map the guest";
            return;
        }
        for (std::uint64_t p = 0; p < pages; ++p) {
            if (p % 5 != 0) {
                std::memset(mapping->page(p), static_cast<int>(p % 251) + 1, kPageSize);
            }
        }
        auto external = GuestMemory::external(
            {std::span<const std::byte>(mapping->data(), mapping->size())}, kPageSize);
        if (!external) {
            error = external.error().detail;
            return;
        }
        memory.emplace(std::move(*external));
        PageServerOptions serve;
        serve.listen = *transport::parse_endpoint("tcp:127.0.0.1:0");
        serve.reconnect_timeout = reconnect_timeout;
        serve.live = {.enabled = true,
                      .max_rounds = max_rounds,
                      .downtime_budget = std::chrono::milliseconds(50),
                      .kinds = {uffd::MemoryKind::Anonymous},
                      .dirty_log = {},
                      .pause_guest = [this] { pause(); },
                      .resume_guest = [this] { resumed.fetch_add(1); },
                      .on_round = {}};
        auto opened = PageServer::open(*memory, serve);
        if (!opened) {
            error = opened.error().detail;
            return;
        }
        server = std::move(*opened);
        writer = std::thread(
            [this, pages] { live_guest_writer(mapping->data(), pages, stop_writing, writes); });
        thread = std::thread([this] { report = server->run(); });
    }
    ~LiveSource() {
        if (thread.joinable()) {
            server->stop();
            thread.join();
        }
        pause();
    }
    void pause() {
        stop_writing.store(true);
        if (writer.joinable()) {
            writer.join();
        }
        paused.fetch_add(1);
    }
    [[nodiscard]] std::uint16_t port() const { return server->local_endpoint().port; }

    std::expected<uffd::Mapping, std::error_code> mapping;
    std::optional<GuestMemory> memory;
    std::unique_ptr<PageServer> server;
    std::optional<SourceStats> report;
    std::atomic<bool> stop_writing{false};
    std::atomic<std::uint64_t> writes{0};
    std::atomic<int> paused{0};
    std::atomic<int> resumed{0};
    std::thread writer;
    std::thread thread;
    std::string error;
};

struct Received {
    DestinationStats stats;
    bool runnable = false;
};

// A destination of the same shape at `port`: waits until its guest may run, then until the end.
Received receive_live(std::uint16_t port, const uffd::Mapping& mapping,
                      std::uint16_t max_version = transport::kMaxVersion,
                      std::size_t bulk_channels = 2) {
    Received received;
    received.stats.error.message = "the destination could not start";
    auto uffd = uffd::UserfaultFd::open(test::test_open_options());
    if (!uffd) {
        return received;
    }
    FaultServerOptions options;
    options.source = *transport::parse_endpoint("tcp:127.0.0.1:" + std::to_string(port));
    options.reconnect_timeout = std::chrono::seconds(5);
    options.bulk_channels = bulk_channels;
    options.max_version = max_version;
    auto destination = FaultServer::create(
        std::move(*uffd),
        {{mapping.data(), mapping.size(), kPageSize, uffd::MemoryKind::Anonymous, true}}, options);
    if (!destination || !(*destination)->start()) {
        return received;
    }
    received.runnable = (*destination)->wait_runnable(std::chrono::seconds(60));
    received.stats = (*destination)->wait();
    return received;
}

// Pages whose bytes differ between the two mappings.
std::uint64_t differing_pages(const uffd::Mapping& a, const uffd::Mapping& b) {
    std::uint64_t differ = 0;
    for (std::uint64_t p = 0; p < a.size() / kPageSize; ++p) {
        differ += std::memcmp(a.page(p), b.page(p), kPageSize) != 0 ? 1 : 0;
    }
    return differ;
}

// The relay's view of what the destination sends: whole frames forwarded, the first of `type`
// replaced by a reset of that connection (the destination then makes a new session).
struct BreakAt {
    wire::MessageType type;
    std::atomic<int> broken{0};
    std::atomic<bool> refuse_after{false};  // every later connection is reset too

    test::TcpRelay::Verdict operator()(std::span<const std::byte> pending) {
        if (refuse_after.load() && broken.load() > 0) {
            return {.forward = 0, .reset = true};
        }
        std::size_t at = 0;
        while (pending.size() - at >= transport::kHeaderSize) {
            std::uint32_t length = 0;
            std::memcpy(&length, pending.data() + at + 8, sizeof length);
            std::size_t whole = transport::kHeaderSize + length;
            if (pending.size() - at < whole) {
                break;
            }
            if (static_cast<wire::MessageType>(pending[at + 6]) == type && broken.load() == 0) {
                ++broken;
                return {.forward = at, .reset = true};
            }
            at += whole;
        }
        return {.forward = at};
    }
};

TEST(LiveSource, EndsBitForBitWithTheSourceAsItsWriterLeftIt) {
    constexpr std::uint64_t kPages = 8192;
    LiveSource source(kPages, 5);
    ASSERT_TRUE(source.server) << source.error;
    auto mapping = uffd::Mapping::anonymous(kPages * kPageSize);
    ASSERT_TRUE(mapping);
    Received received = receive_live(source.port(), *mapping);
    source.thread.join();
    ASSERT_TRUE(received.stats.ok) << received.stats.error.message;
    EXPECT_TRUE(received.runnable);
    ASSERT_TRUE(source.report && source.report->ok) << source.report->error.message;
    EXPECT_GT(source.writes.load(), 0U);
    EXPECT_EQ(source.paused.load(), 1) << "the guest pauses once, at the switchover";
    EXPECT_EQ(source.resumed.load(), 0);
    EXPECT_TRUE(received.stats.live_source);
    EXPECT_EQ(received.stats.precopy_rounds, source.report->rounds.size());
    EXPECT_EQ(received.stats.pages_discarded_at_switchover, source.report->pages_discarded);
    EXPECT_FALSE(source.report->guest_runnable_here);
    EXPECT_EQ(differing_pages(*source.mapping, *mapping), 0U);
}

// A message of the destination's is lost with its session, which the relay resets in its place.
// ROUND_DONE: the new session ends the round again (ROUND_END of the round already acknowledged
// is legal once more) and the rounds go on. RUNNING: the destination's guest runs, the source
// has not heard so; the new session's RESUME says the switchover was applied, and postcopy goes
// on from there. Either way one pause, one guest pause, and the pages bit for bit.
struct LostMessage {
    wire::MessageType type;
    std::uint32_t max_rounds;
    const char* name;
};

class LiveSourceLosing : public ::testing::TestWithParam<LostMessage> {};

TEST_P(LiveSourceLosing, TheMessageIsMendedByTheNextSession) {
    constexpr std::uint64_t kPages = 8192;
    LiveSource source(kPages, GetParam().max_rounds);
    ASSERT_TRUE(source.server) << source.error;
    BreakAt breaker{.type = GetParam().type};
    test::TcpRelay relay(source.port(), std::ref(breaker));
    ASSERT_NE(relay.port(), 0);
    auto mapping = uffd::Mapping::anonymous(kPages * kPageSize);
    ASSERT_TRUE(mapping);
    Received received = receive_live(relay.port(), *mapping);
    source.thread.join();
    EXPECT_EQ(breaker.broken.load(), 1);
    ASSERT_TRUE(received.stats.ok) << received.stats.error.message;
    ASSERT_TRUE(source.report && source.report->ok) << source.report->error.message;
    EXPECT_GE(source.report->pauses, 1U);
    EXPECT_EQ(source.paused.load(), 1);
    EXPECT_EQ(differing_pages(*source.mapping, *mapping), 0U);
}

INSTANTIATE_TEST_SUITE_P(Lost, LiveSourceLosing,
                         ::testing::Values(LostMessage{wire::MessageType::RoundDone, 4,
                                                       "RoundDone"},
                                           LostMessage{wire::MessageType::Running, 3, "Running"}),
                         [](const auto& info) { return std::string(info.param.name); });

// The rule: once SWITCHOVER may have reached a destination, the source never runs the guest
// again. Here RUNNING is lost and the destination can never reach the source again: the source
// fails at its deadline, with its guest paused, not runnable, and the VMM not told to resume.
TEST(LiveSource, AfterSwitchoverASourceThatLosesTheDestinationNeverResumesItsGuest) {
    constexpr std::uint64_t kPages = 4096;
    LiveSource source(kPages, 2, std::chrono::milliseconds(1500));
    ASSERT_TRUE(source.server) << source.error;
    BreakAt breaker{.type = wire::MessageType::Running};
    breaker.refuse_after.store(true);
    test::TcpRelay relay(source.port(), std::ref(breaker));
    ASSERT_NE(relay.port(), 0);
    auto mapping = uffd::Mapping::anonymous(kPages * kPageSize);
    ASSERT_TRUE(mapping);
    std::thread destination([&] { (void)receive_live(relay.port(), *mapping); });
    source.thread.join();
    ASSERT_TRUE(source.report.has_value());
    EXPECT_FALSE(source.report->ok);
    EXPECT_FALSE(source.report->guest_runnable_here) << source.report->error.message;
    EXPECT_EQ(source.resumed.load(), 0);
    EXPECT_EQ(source.paused.load(), 1);
    destination.join();
}

// Before the switchover the guest never stopped running here: a destination that goes away
// (it ends the session on purpose) fails the migration and leaves the guest as it was.
TEST(LiveSource, ADestinationThatGoesAwayDuringPrecopyLeavesTheGuestRunningHere) {
    constexpr std::uint64_t kPages = 32768;
    LiveSource source(kPages, 10);
    ASSERT_TRUE(source.server) << source.error;
    auto mapping = uffd::Mapping::anonymous(kPages * kPageSize);
    ASSERT_TRUE(mapping);
    auto uffd = uffd::UserfaultFd::open(test::test_open_options());
    ASSERT_TRUE(uffd);
    FaultServerOptions options;
    options.source = *transport::parse_endpoint("tcp:127.0.0.1:" + std::to_string(source.port()));
    auto destination = FaultServer::create(
        std::move(*uffd),
        {{mapping->data(), mapping->size(), kPageSize, uffd::MemoryKind::Anonymous, true}},
        options);
    ASSERT_TRUE(destination && (*destination)->start());
    for (int i = 0; i < 5000 && (*destination)->progress().pages_present == 0; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    (*destination)->stop();  // during round 0
    (void)(*destination)->wait();
    source.thread.join();
    ASSERT_TRUE(source.report.has_value());
    EXPECT_FALSE(source.report->ok);
    EXPECT_TRUE(source.report->guest_runnable_here) << source.report->error.message;
    EXPECT_EQ(source.paused.load(), 0) << "the guest was never paused";
    EXPECT_EQ(source.resumed.load(), 0) << "nothing to resume";
    EXPECT_FALSE(source.stop_writing.load()) << "the writer still runs";
}

// A VMM with its own dirty log (KVM's) hands it over instead of the kernel's tracking, and asks
// for the switchover itself: here the "log" is a bitmap the writer sets, and the switchover is
// asked for as soon as round 0 is over. The result is still bit for bit.
TEST(LiveSource, AVmmsOwnDirtyLogAndItsSwitchoverRequestAreUsed) {
    constexpr std::uint64_t kPages = 4096;
    auto guest = uffd::Mapping::anonymous(kPages * kPageSize);
    ASSERT_TRUE(guest);
    std::vector<std::atomic<std::uint64_t>> log(kPages / 64);
    std::atomic<bool> stop{false};
    std::atomic<int> log_calls{0};
    std::thread writer([&] { live_guest_writer_with_log(*guest, kPages, log, stop); });
    auto memory = GuestMemory::external({std::span<const std::byte>(guest->data(), guest->size())},
                                        kPageSize);
    ASSERT_TRUE(memory);
    std::unique_ptr<PageServer> server;
    PageServerOptions serve;
    serve.listen = *transport::parse_endpoint("tcp:127.0.0.1:0");
    serve.live.enabled = true;
    serve.live.max_rounds = 50;
    serve.live.downtime_budget = std::chrono::milliseconds(0);  // never converged by itself
    serve.live.pause_guest = [&] {
        stop.store(true);
        writer.join();
    };
    serve.live.dirty_log = [&](std::uint32_t region, std::span<std::uint64_t> bits) {
        EXPECT_EQ(region, 0U);
        for (std::size_t w = 0; w < bits.size(); ++w) {
            bits[w] = log[w].exchange(0);
        }
        log_calls.fetch_add(1);
        return true;
    };
    serve.live.on_round = [&](const RoundReport&) { server->switchover_now(); };
    auto opened = PageServer::open(*memory, serve);
    ASSERT_TRUE(opened) << opened.error().detail;
    server = std::move(*opened);
    std::optional<SourceStats> report;
    std::thread serving([&] { report = server->run(); });
    auto mapping = uffd::Mapping::anonymous(kPages * kPageSize);
    ASSERT_TRUE(mapping);
    Received received = receive_live(server->local_endpoint().port, *mapping);
    serving.join();
    if (writer.joinable()) {
        stop.store(true);
        writer.join();
    }
    ASSERT_TRUE(received.stats.ok) << received.stats.error.message;
    ASSERT_TRUE(report && report->ok) << report->error.message;
    EXPECT_EQ(report->switchover_reason, "asked");
    EXPECT_GE(log_calls.load(), 2) << "the log is read after the round and at the pause";
    EXPECT_GT(report->pages_discarded, 0U) << "the writer wrote during round 0";
    EXPECT_EQ(differing_pages(*guest, *mapping), 0U);
}

// A destination built before version 2 would run its guest at once: refused by name, before
// any page moves.
TEST(LiveSource, AVersionOneDestinationIsRefusedByName) {
    constexpr std::uint64_t kPages = 1024;
    LiveSource source(kPages, 3);
    ASSERT_TRUE(source.server) << source.error;
    auto mapping = uffd::Mapping::anonymous(kPages * kPageSize);
    ASSERT_TRUE(mapping);
    Received received = receive_live(source.port(), *mapping, 1);
    EXPECT_FALSE(received.stats.ok);
    EXPECT_FALSE(received.runnable);
    EXPECT_EQ(received.stats.error.code, Errc::Unsupported) << received.stats.error.message;
    EXPECT_NE(received.stats.error.message.find("the destination speaks version 1"),
              std::string::npos)
        << received.stats.error.message;
    EXPECT_EQ(received.stats.pages_background + received.stats.pages_urgent, 0U);
    EXPECT_EQ(source.paused.load(), 0);
}

}  // namespace
}  // namespace uffdm::migration
