// guest_events_test.cpp — What the guest's process does to its memory mid-migration: discard,
// unmap, move. Real threads, real madvise/munmap/mremap on registered memory.
#include <gtest/gtest.h>
#include <sys/mman.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

#include "migration/fault_server.hpp"
#include "tests/support/loopback_source.hpp"
#include "tests/support/tcp_relay.hpp"
#include "tests/support/test_support.hpp"
#include "uffd/mapping.hpp"

namespace uffdm::migration {
namespace {

constexpr std::uint64_t kPage = 4096;

uffd::OpenOptions with_events(bool events) {
    uffd::OpenOptions options = test::test_open_options();
    if (events) {
        options.required = uffd::FeatureSet{uffd::Feature::EventRemove, uffd::Feature::EventUnmap,
                                            uffd::Feature::EventRemap};
    }
    return options;
}

// Runs `touch` on a thread of its own and waits for it within a bound. A thread left blocked on
// a page nobody will place cannot be joined or cancelled: the test process ends there, failed.
void within(std::chrono::seconds limit, const char* what, const std::function<void()>& touch) {
    std::mutex mutex;
    std::condition_variable done_changed;
    bool done = false;
    std::thread toucher([&] {
        touch();
        std::lock_guard lock(mutex);
        done = true;
        done_changed.notify_all();
    });
    std::unique_lock lock(mutex);
    if (!done_changed.wait_for(lock, limit, [&] { return done; })) {
        ADD_FAILURE() << what << ": still blocked after " << limit.count() << " s";
        std::fprintf(stderr, "%s: a guest thread stayed blocked; ending the test process\n", what);
        std::_Exit(1);
    }
    lock.unlock();
    toucher.join();
}

bool all_zero(std::span<const std::byte> page) {
    for (std::byte b : page) {
        if (b != std::byte{0}) {
            return false;
        }
    }
    return true;
}

// Guest memory mapped with mmap directly: mremap moves it, so no owner may unmap the old range.
struct RawGuest {
    RawGuest(uffd::MemoryKind kind, std::uint64_t length) : length(length) {
        int flags = MAP_PRIVATE | MAP_ANONYMOUS;
        if (kind == uffd::MemoryKind::Shmem) {
            flags = MAP_SHARED | MAP_ANONYMOUS;
        }
        void* p = ::mmap(nullptr, length, PROT_READ | PROT_WRITE, flags, -1, 0);
        data = p == MAP_FAILED ? nullptr : static_cast<std::byte*>(p);
    }
    ~RawGuest() {
        for (auto [at, len] : mapped) {
            ::munmap(at, len);
        }
        if (data != nullptr) {
            ::munmap(data, length);
        }
    }
    std::byte* data = nullptr;
    std::uint64_t length = 0;
    std::vector<std::pair<void*, std::size_t>> mapped;  // where parts were moved to
};

// A synthetic source on loopback and a destination serving a guest of its own (stream held
// unless told otherwise), started; through a relay when `through` is given. `error` says what
// could not be made.
struct Migration {
    Migration(const SyntheticSpec& spec, uffd::MemoryKind kind, bool events, bool held,
              bool read_zero = false, test::TcpRelay::Upstream through = {})
        : served(spec), guest(kind, spec.size) {
        if (!served.server || guest.data == nullptr) {
            error = served.server ? "cannot map the guest" : served.error;
            return;
        }
        transport::Endpoint source = served.server->local_endpoint();
        if (through) {
            relay = std::make_unique<test::TcpRelay>(source.port, std::move(through));
            source = *transport::parse_endpoint("tcp:127.0.0.1:" + std::to_string(relay->port()));
        }
        auto uffd = uffd::UserfaultFd::open(with_events(events));
        if (!uffd) {
            error = uffd.error().message();
            return;
        }
        FaultServerOptions receive;
        receive.source = source;
        receive.hold_stream = held;
        receive.discarded_pages_read_zero = read_zero;
        auto created = FaultServer::create(
            std::move(*uffd), {{guest.data, guest.length, kPage, kind, true}}, receive);
        if (!created || !(*created)->start()) {
            error = created ? "start failed" : created.error().detail;
            return;
        }
        destination = std::move(*created);
    }
    // Releases the stream, waits for the end of both sides.
    DestinationStats finish() {
        destination->hold_stream(false);
        DestinationStats report = destination->wait();
        served.thread.join();
        return report;
    }
    [[nodiscard]] std::span<const std::byte> page(std::uint64_t p) const {
        return {guest.data + p * kPage, kPage};
    }
    // Reads each page from a thread of its own (each a fault while the stream is held), bounded;
    // how many were not the source's.
    std::uint64_t touch(const SyntheticSpec& spec, const std::vector<std::uint64_t>& pages,
                        const char* what) const {
        std::uint64_t wrong = 0;
        within(std::chrono::seconds(30), what, [&] {
            for (std::uint64_t p : pages) {
                wrong += page_matches(spec, 0, p, page(p)) ? 0 : 1;
            }
        });
        return wrong;
    }

    LoopbackSource served;
    std::unique_ptr<test::TcpRelay> relay;
    RawGuest guest;
    std::unique_ptr<FaultServer> destination;
    std::string error;
};

// Every 16th of the first 256 pages: faulted in, then discarded with the rest of that range.
std::vector<std::uint64_t> first_touches() {
    std::vector<std::uint64_t> pages;
    for (std::uint64_t p = 0; p < 256; p += 16) {
        pages.push_back(p);
    }
    return pages;
}

struct Discard {
    uffd::MemoryKind kind;
    int advice;      // MADV_DONTNEED or MADV_REMOVE
    bool read_zero;  // FaultServerOptions::discarded_pages_read_zero
    bool events;     // UFFD_FEATURE_EVENT_REMOVE granted
};

class Discarded : public ::testing::TestWithParam<Discard> {};

// The stream held: only faulted pages arrive. 16 pages are faulted in, then the guest discards
// pages 0..255 (those 16 among them) and touches the first 8 again; pages 8..15 it never touches
// again. Refetching: all 16 read the source's content, touched or not, at the end. Zeros: the
// whole discarded range reads zeros, the rest the source's content.
TEST_P(Discarded, PagesDiscardedMidMigrationAreServedWhenTouchedAgain) {
    const Discard c = GetParam();
    SyntheticSpec spec{.size = 8ULL << 20, .seed = 21, .zero_percent = 0};
    Migration m(spec, c.kind, c.events, true, c.read_zero);
    ASSERT_TRUE(m.destination) << m.error;

    const std::vector<std::uint64_t> faulted = first_touches();
    std::atomic<std::uint64_t> wrong{m.touch(spec, faulted, "first touches")};
    ASSERT_EQ(wrong.load(), 0u);
    // A thread reads its page once the copy wakes it, a moment before the placer counts it.
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (m.destination->progress().pages_present < faulted.size() &&
           std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    ASSERT_EQ(m.destination->progress().pages_present, faulted.size());

    ASSERT_EQ(::madvise(m.guest.data, 256 * kPage, c.advice), 0) << std::strerror(errno);
    within(std::chrono::seconds(30), "touches after the discard", [&] {
        for (std::size_t i = 0; i < faulted.size() / 2; ++i) {
            std::span<const std::byte> page = m.page(faulted[i]);
            bool right = c.read_zero ? all_zero(page) : page_matches(spec, 0, faulted[i], page);
            wrong += right ? 0 : 1;
        }
    });
    EXPECT_EQ(wrong.load(), 0u) << (c.read_zero ? "zeros expected" : "the source's content");

    DestinationStats report = m.finish();
    ASSERT_TRUE(report.ok) << report.error.message;
    EXPECT_EQ(report.pages_discarded, c.events ? 256u : 0u);
    for (std::uint64_t p = 0; p < spec.size / kPage; ++p) {
        std::span<const std::byte> page = m.page(p);
        if (p < 256 && !c.events) {
            // Without the event nothing says which pages went: the faulted pages not touched
            // again were gone at the end, and read zeros like any discarded page after it.
            ASSERT_TRUE(page_matches(spec, 0, p, page) || all_zero(page)) << "page " << p;
        } else if (p < 256 && c.read_zero) {
            ASSERT_TRUE(all_zero(page)) << "discarded page " << p;
        } else {
            ASSERT_TRUE(page_matches(spec, 0, p, page)) << "page " << p;
        }
    }
}

INSTANTIATE_TEST_SUITE_P(
    Kinds, Discarded,
    ::testing::Values(Discard{uffd::MemoryKind::Anonymous, MADV_DONTNEED, false, true},
                      Discard{uffd::MemoryKind::Anonymous, MADV_DONTNEED, true, true},
                      Discard{uffd::MemoryKind::Shmem, MADV_REMOVE, false, true},
                      Discard{uffd::MemoryKind::Shmem, MADV_REMOVE, true, true},
                      Discard{uffd::MemoryKind::Shmem, MADV_DONTNEED, false, true},
                      // A handed-over userfaultfd without EVENT_REMOVE: a fault on a page
                      // marked present is still served.
                      Discard{uffd::MemoryKind::Anonymous, MADV_DONTNEED, false, false}),
    [](const auto& info) {
        const Discard& c = info.param;
        return std::string(uffdm::to_string(c.kind)) +
               (c.advice == MADV_DONTNEED ? "_dontneed" : "_remove") +
               (c.read_zero ? "_read_zero" : "_refetch") + (c.events ? "" : "_no_event");
    });

// Discards racing the stream: a guest thread discards and re-reads ranges, first with the
// stream held (every re-read a fault), then while the stream fills memory, up to half of it (a
// discard after the end reads zeros, as on any memory). Every read sees the source's content;
// the migration completes with every page right.
TEST(DiscardedRace, DiscardsDuringTheStreamNeverLeaveAStaleOrZeroPage) {
    SyntheticSpec spec{.size = 128ULL << 20, .seed = 23, .zero_percent = 0};
    Migration m(spec, uffd::MemoryKind::Anonymous, true, true);
    ASSERT_TRUE(m.destination) << m.error;
    std::uint64_t pages = spec.size / kPage;
    std::atomic<std::uint64_t> wrong{0};
    std::uint64_t rounds = 0;
    within(std::chrono::seconds(120), "discarding while streaming", [&] {
        for (; rounds < 2000; ++rounds) {
            if (rounds == 20) {
                m.destination->hold_stream(false);
            }
            if (rounds > 20 && m.destination->progress().pages_present > pages / 2) {
                break;
            }
            std::uint64_t first = (rounds * 977) % (pages - 64);
            for (std::uint64_t p = first; p < first + 64; p += 7) {  // in, then discarded
                wrong += page_matches(spec, 0, p, m.page(p)) ? 0 : 1;
            }
            (void)::madvise(m.guest.data + first * kPage, 64 * kPage, MADV_DONTNEED);
            for (std::uint64_t p = first; p < first + 64; p += 5) {
                wrong += page_matches(spec, 0, p, m.page(p)) ? 0 : 1;
            }
        }
    });
    DestinationStats report = m.finish();
    ASSERT_TRUE(report.ok) << report.error.message;
    EXPECT_EQ(wrong.load(), 0u);
    EXPECT_GE(report.pages_discarded, 20u * 64u) << rounds << " rounds";
    for (std::uint64_t p = 0; p < pages; ++p) {
        ASSERT_TRUE(page_matches(spec, 0, p, m.page(p))) << "page " << p;
    }
}

// The session breaks (a relay resets every connection while `cut` is set) and the guest
// discards pages while the destination reconnects: after the resume they are fetched again
// like every page asked for before the break, and the migration completes with each page right.
TEST(DiscardedAcrossABreak, PagesDiscardedWhileReconnectingAreFetchedAfterTheResume) {
    SyntheticSpec spec{.size = 8ULL << 20, .seed = 29, .zero_percent = 0};
    std::atomic<bool> cut{false};
    Migration m(spec, uffd::MemoryKind::Anonymous, true, true, false,
                [&](std::span<const std::byte> pending) {
                    return cut.load() ? test::TcpRelay::Verdict{.forward = 0, .reset = true}
                                      : test::TcpRelay::Verdict{.forward = pending.size()};
                });
    ASSERT_TRUE(m.destination) << m.error;
    const std::vector<std::uint64_t> faulted = first_touches();
    std::atomic<std::uint64_t> wrong{m.touch(spec, faulted, "first touches")};

    cut = true;
    // A touch of a missing page sends a REQUEST, which the relay answers with a reset; the
    // thread waits through the break.
    std::thread waiting([&] { wrong += page_matches(spec, 0, 1000, m.page(1000)) ? 0 : 1; });
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!m.destination->progress().paused && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    bool paused = m.destination->progress().paused;
    EXPECT_TRUE(paused) << "the session did not break";
    ASSERT_EQ(::madvise(m.guest.data, 256 * kPage, MADV_DONTNEED), 0) << std::strerror(errno);
    cut = false;
    within(std::chrono::seconds(30), "touches after the resume", [&] {
        waiting.join();
        for (std::uint64_t p : faulted) {
            wrong += page_matches(spec, 0, p, m.page(p)) ? 0 : 1;
        }
    });
    DestinationStats report = m.finish();
    ASSERT_TRUE(report.ok) << report.error.message;
    EXPECT_EQ(wrong.load(), 0u);
    EXPECT_EQ(report.pages_discarded, 256u);
    ASSERT_GE(report.pauses.size(), 1u);
    EXPECT_TRUE(report.pauses.back().resumed);
    for (std::uint64_t p = 0; p < spec.size / kPage; ++p) {
        ASSERT_TRUE(page_matches(spec, 0, p, m.page(p))) << "page " << p;
    }
}

// munmap of the second half mid-migration: those pages are no longer served or placed, the
// migration completes, the first half is right.
TEST(Unmapped, PartOfARegionUnmappedMidMigrationIsNoLongerServed) {
    SyntheticSpec spec{.size = 16ULL << 20, .seed = 25, .zero_percent = 0};
    Migration m(spec, uffd::MemoryKind::Anonymous, true, true);
    ASSERT_TRUE(m.destination) << m.error;
    std::uint64_t pages = spec.size / kPage;
    within(std::chrono::seconds(30), "touches", [&] {
        for (std::uint64_t p = 0; p < pages; p += 64) {
            EXPECT_TRUE(page_matches(spec, 0, p, m.page(p))) << p;
        }
    });
    ASSERT_EQ(::munmap(m.guest.data + spec.size / 2, spec.size / 2), 0);
    m.guest.length = spec.size / 2;  // what is left to unmap at the end
    DestinationStats report = m.finish();
    ASSERT_TRUE(report.ok) << report.error.message;
    EXPECT_EQ(report.pages_unmapped, pages / 2);
    EXPECT_EQ(report.pages_urgent + report.pages_background, pages / 2 + pages / 64 / 2)
        << "the faulted pages of the unmapped half were placed before it went";
    for (std::uint64_t p = 0; p < pages / 2; ++p) {
        ASSERT_TRUE(page_matches(spec, 0, p, m.page(p))) << "page " << p;
    }
}

// mremap moves the second half of a region elsewhere mid-migration: its pages are placed, and
// faults on them served, at the new address.
TEST(Remapped, PartOfARegionMovedMidMigrationIsServedAtItsNewAddress) {
    SyntheticSpec spec{.size = 16ULL << 20, .seed = 27, .zero_percent = 0};
    Migration m(spec, uffd::MemoryKind::Anonymous, true, true);
    ASSERT_TRUE(m.destination) << m.error;
    // Somewhere to move to, reserved so that nothing else lands there.
    void* target = ::mmap(nullptr, spec.size / 2, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(target, MAP_FAILED);
    m.guest.mapped.emplace_back(target, spec.size / 2);
    std::uint64_t pages = spec.size / kPage;
    within(std::chrono::seconds(30), "touches before the move", [&] {
        for (std::uint64_t p = 0; p < pages; p += 64) {
            EXPECT_TRUE(page_matches(spec, 0, p, m.page(p))) << p;
        }
    });
    void* moved = ::mremap(m.guest.data + spec.size / 2, spec.size / 2, spec.size / 2,
                           MREMAP_MAYMOVE | MREMAP_FIXED, target);
    ASSERT_EQ(moved, target) << std::strerror(errno);
    m.guest.length = spec.size / 2;  // the rest is at target now
    auto* second = static_cast<std::byte*>(target);
    auto at = [&](std::uint64_t p) -> std::span<const std::byte> {
        return {p < pages / 2 ? m.guest.data + p * kPage : second + (p - pages / 2) * kPage, kPage};
    };
    within(std::chrono::seconds(30), "touches after the move", [&] {
        for (std::uint64_t p = 32; p < pages; p += 64) {  // not faulted in before: missing
            EXPECT_TRUE(page_matches(spec, 0, p, at(p))) << p;
        }
    });
    DestinationStats report = m.finish();
    ASSERT_TRUE(report.ok) << report.error.message;
    EXPECT_EQ(report.pages_unmapped, 0u);
    EXPECT_EQ(report.pages_urgent + report.pages_background, pages);
    for (std::uint64_t p = 0; p < pages; ++p) {
        ASSERT_TRUE(page_matches(spec, 0, p, at(p))) << "page " << p;
    }
}

}  // namespace
}  // namespace uffdm::migration
