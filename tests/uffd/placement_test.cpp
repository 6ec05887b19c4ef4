// placement_test.cpp — COPY, ZEROPAGE, CONTINUE, MOVE, POISON, WAKE and WRITEPROTECT on real
// faults.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstring>
#include <optional>
#include <thread>

#include "tests/support/test_support.hpp"
#include "uffd/mapping.hpp"
#include "uffd/userfault_fd.hpp"

namespace uffdm::uffd {
namespace {

// A registered mapping of one memory kind, and a userfaultfd for it.
class PlacementTest : public ::testing::TestWithParam<MemoryKind> {
  protected:
    static constexpr std::size_t kPages = 4;

    void SetUp() override {
        auto mapping = Mapping::create(GetParam(), kPages * page_size_for(GetParam()));
        if (!mapping) {
            GTEST_SKIP() << to_string(GetParam())
                         << " memory unavailable: " << mapping.error().message();
        }
        mapping_.emplace(std::move(*mapping));
        auto fd = UserfaultFd::open(test::test_open_options());
        ASSERT_TRUE(fd) << fd.error().message();
        uffd_.emplace(std::move(*fd));
    }

    static std::size_t page_size_for(MemoryKind kind) {
        return kind == MemoryKind::Hugetlb ? kHugePageSize : base_page_size();
    }
    std::size_t page() const { return mapping_->page_size(); }
    std::uint64_t address(std::size_t index) const { return mapping_->address() + index * page(); }
    void register_missing() {
        auto reg = uffd_->register_mapping(*mapping_, RegisterModes::missing_only());
        ASSERT_TRUE(reg) << reg.error().message();
        registration_.emplace(std::move(*reg));
    }
    void prefill(std::size_t index, unsigned char byte) {
        auto content = test::page_of(byte, page());
        ASSERT_EQ(*uffd_->copy(address(index), content.data(), page()), page());
    }
    unsigned char byte_at(std::size_t index, std::size_t offset = 0) const {
        return static_cast<unsigned char>(mapping_->page(index)[offset]);
    }

    // Declaration order is shutdown order: registration, then the fd, then the memory.
    std::optional<Mapping> mapping_;
    std::optional<UserfaultFd> uffd_;
    std::optional<Registration> registration_;
};

TEST_P(PlacementTest, CopyResolvesAReadFaultFromAnotherThread) {
    register_missing();
    test::FaultServerThread server(*uffd_, test::fill_page_with(0xab, page()));
    std::atomic<pid_t> tid{0};
    unsigned char seen = 0;
    std::thread guest([&] {
        tid = ::gettid();
        seen = byte_at(2, 17);
    });
    guest.join();
    EXPECT_EQ(seen, 0xab);
    auto faults = server.faults();
    ASSERT_EQ(faults.size(), 1u);
    EXPECT_EQ(faults[0].page(page()), address(2));
    EXPECT_FALSE(faults[0].write);
    EXPECT_EQ(static_cast<pid_t>(faults[0].thread_id), tid.load());
    EXPECT_EQ(server.error(), "");
}

TEST_P(PlacementTest, WriteFaultIsFlaggedAndTheWriteLandsOnThePlacedPage) {
    register_missing();
    test::FaultServerThread server(*uffd_, test::fill_page_with(0x11, page()));
    std::thread guest([&] { mapping_->page(1)[5] = std::byte{0x77}; });
    guest.join();
    EXPECT_EQ(byte_at(1, 5), 0x77);
    EXPECT_EQ(byte_at(1, 6), 0x11);
    ASSERT_EQ(server.faults().size(), 1u);
    EXPECT_TRUE(server.faults()[0].write);
}

TEST_P(PlacementTest, CopyIntoPresentPageReportsAlreadyPresent) {
    register_missing();
    prefill(0, 0x01);
    auto again = test::page_of(0x02, page());
    EXPECT_EQ(uffd_->copy(address(0), again.data(), page()).error(), Errc::AlreadyPresent);
    EXPECT_EQ(byte_at(0), 0x01);  // never overwritten
}

TEST_P(PlacementTest, PresentPageInsideARunGivesAShortCountAndLosesNothing) {
    register_missing();
    prefill(1, 0x01);
    std::vector<unsigned char> run(3 * page(), 0x09);
    auto placed = uffd_->copy(address(0), run.data(), run.size());
    ASSERT_TRUE(placed) << placed.error().message();
    EXPECT_EQ(*placed, page());  // page 0 placed, page 1 stopped it
    EXPECT_EQ(uffd_->copy(address(1), run.data() + page(), 2 * page()).error(),
              Errc::AlreadyPresent);
    EXPECT_EQ(*uffd_->copy(address(2), run.data() + 2 * page(), page()), page());
    EXPECT_EQ(byte_at(0), 0x09);
    EXPECT_EQ(byte_at(1), 0x01);
    EXPECT_EQ(byte_at(2), 0x09);
}

TEST_P(PlacementTest, PlacingIntoAnUnregisteredRangeIsNotRegistered) {
    auto content = test::page_of(0x01, page());
    EXPECT_EQ(uffd_->copy(address(0), content.data(), page()).error(), Errc::NotRegistered);
}

TEST_P(PlacementTest, RangeCrossingTheRegistrationEndIsNotRegistered) {
    auto reg = uffd_->register_range(address(0), 2 * page(), RegisterModes::missing_only());
    ASSERT_TRUE(reg) << reg.error().message();
    std::vector<unsigned char> run(2 * page(), 0x03);
    EXPECT_EQ(uffd_->copy(address(1), run.data(), run.size()).error(), Errc::NotRegistered);
}

TEST_P(PlacementTest, UnalignedOrEmptyRangesAreRejectedBeforeTheKernel) {
    register_missing();
    auto content = test::page_of(0x01, page());
    EXPECT_EQ(uffd_->copy(address(0) + 1, content.data(), base_page_size()).error(),
              Errc::Unaligned);
    EXPECT_EQ(uffd_->copy(address(0), content.data(), 100).error(), Errc::Unaligned);
    EXPECT_EQ(uffd_->copy(address(0), content.data(), 0).error(), Errc::InvalidArgument);
    EXPECT_EQ(uffd_->copy(address(0), nullptr, page()).error(), Errc::InvalidArgument);
    EXPECT_EQ(uffd_->zeropage(~0ULL & ~(base_page_size() - 1), 2 * base_page_size()).error(),
              Errc::InvalidArgument);  // wraps around
    EXPECT_EQ(uffd_->wake(address(0) + 3, page()).error(), Errc::Unaligned);
}

TEST_P(PlacementTest, DontWakeLeavesTheThreadBlockedUntilWake) {
    register_missing();
    auto content = test::page_of(0x44, page());
    test::FaultServerThread server(*uffd_, [&](const UserfaultFd& fd, const PageFault& fault) {
        (void)fd.copy(fault.page(page()), content.data(), page(), {.dont_wake = true});
    });
    std::atomic<pid_t> tid{0};
    std::atomic<bool> done{false};
    std::thread guest([&] {
        tid = ::gettid();
        volatile std::byte touched = mapping_->page(3)[0];
        (void)touched;
        done = true;
    });
    while (tid == 0) {
        std::this_thread::yield();
    }
    // Wait for the server to have placed the page; the guest must still be asleep.
    for (int i = 0; i < 5000 && server.faults().empty(); ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    ASSERT_EQ(server.faults().size(), 1u);
    EXPECT_TRUE(test::wait_until_blocked_in_fault({tid.load()}, 200));
    EXPECT_FALSE(done.load());
    ASSERT_TRUE(uffd_->wake(address(3), page()));
    guest.join();
    EXPECT_TRUE(done.load());
    EXPECT_EQ(byte_at(3), 0x44);
}

INSTANTIATE_TEST_SUITE_P(MemoryKinds, PlacementTest,
                         ::testing::Values(MemoryKind::Anonymous, MemoryKind::Shmem,
                                           MemoryKind::Hugetlb),
                         [](const auto& info) { return std::string(to_string(info.param)); });

TEST(PlacementHugetlb, FourKilobyteAlignedButNotHugePageAlignedIsRefused) {
    auto mapping = Mapping::hugetlb(2 * kHugePageSize);
    if (!mapping) {
        GTEST_SKIP() << "no huge pages: " << mapping.error().message();
    }
    auto fd = UserfaultFd::open(test::test_open_options());
    ASSERT_TRUE(fd);
    auto reg = fd->register_mapping(*mapping, RegisterModes::missing_only());
    ASSERT_TRUE(reg) << reg.error().message();
    auto content = test::page_of(0x01, kHugePageSize);
    auto placed = fd->copy(mapping->address() + base_page_size(), content.data(), kHugePageSize);
    ASSERT_FALSE(placed);
    EXPECT_EQ(placed.error(), std::errc::invalid_argument);
}

class AnonymousPlacement : public PlacementTest {};

TEST_P(AnonymousPlacement, ZeropageResolvesAFaultWithZeros) {
    register_missing();
    test::FaultServerThread server(*uffd_, [&](const UserfaultFd& fd, const PageFault& fault) {
        (void)fd.zeropage(fault.page(page()), page());
    });
    unsigned char seen = 0xff;
    std::thread guest([&] { seen = byte_at(1, 99); });
    guest.join();
    EXPECT_EQ(seen, 0);
    EXPECT_EQ(uffd_->zeropage(address(1), page()).error(), Errc::AlreadyPresent);
}

TEST_P(AnonymousPlacement, MoveTakesThePagesOfAnotherMapping) {
    register_missing();
    auto source = Mapping::anonymous(kPages * page());
    ASSERT_TRUE(source);
    std::memset(source->data(), 0x66, source->size());
    test::FaultServerThread server(*uffd_, [&](const UserfaultFd& fd, const PageFault& fault) {
        std::uint64_t offset = fault.page(page()) - mapping_->address();
        auto moved = fd.move(fault.page(page()), source->address() + offset, page());
        if (!moved) {
            ADD_FAILURE() << "move: " << moved.error().message();
        }
    });
    unsigned char seen = 0;
    std::thread guest([&] { seen = byte_at(2, 1); });
    guest.join();
    EXPECT_EQ(seen, 0x66);
    // The source page is gone from the source: it reads as a fresh zero page now.
    EXPECT_EQ(static_cast<int>(source->page(2)[1]), 0);
    EXPECT_EQ(static_cast<int>(source->page(1)[1]), 0x66);
}

TEST_P(AnonymousPlacement, MoveRejectsAnUnalignedSource) {
    register_missing();
    EXPECT_EQ(uffd_->move(address(0), address(1) + 8, page()).error(), Errc::Unaligned);
}

TEST_P(AnonymousPlacement, PoisonedPageRaisesSigbusInsteadOfHanging) {
    auto child = test::run_in_child([&](std::FILE* report) {
        // A userfaultfd belongs to the address space that created it: the child needs its own.
        auto fd = UserfaultFd::open(test::test_open_options());
        if (!fd) {
            std::fputs("open failed", report);
            return 3;
        }
        auto reg = fd->register_mapping(*mapping_, RegisterModes::missing_only());
        if (!reg) {
            std::fputs("register failed", report);
            return 4;
        }
        auto poisoned = fd->poison(address(1), page());
        if (!poisoned || *poisoned != page()) {
            std::fputs("poison failed", report);
            return 1;
        }
        std::fputs("touching", report);
        std::fflush(report);
        // Sanitizers catch SIGBUS to print a report; the default action is what is tested.
        std::signal(SIGBUS, SIG_DFL);
        volatile std::byte b = mapping_->page(1)[0];
        (void)b;
        return 2;  // not reached: SIGBUS
    });
    EXPECT_TRUE(child.killed_by(SIGBUS)) << child.describe();
}

TEST_P(AnonymousPlacement, WriteProtectedPageFaultsOnWriteUntilUnprotected) {
    auto reg = uffd_->register_mapping(*mapping_, {.missing = true, .write_protect = true});
    ASSERT_TRUE(reg) << reg.error().message();
    auto content = test::page_of(0x21, page());
    ASSERT_EQ(*uffd_->copy(address(0), content.data(), page(), {.write_protect = true}), page());
    test::FaultServerThread server(*uffd_, [&](const UserfaultFd& fd, const PageFault& fault) {
        if (fault.write_protect) {
            (void)fd.writeprotect(fault.page(page()), page(), false);
        }
    });
    EXPECT_EQ(byte_at(0), 0x21);  // reads do not fault on a write-protected page
    std::thread guest([&] { mapping_->page(0)[0] = std::byte{0x22}; });
    guest.join();
    EXPECT_EQ(byte_at(0), 0x22);
    ASSERT_EQ(server.faults().size(), 1u);
    EXPECT_TRUE(server.faults()[0].write_protect);
    EXPECT_TRUE(server.faults()[0].write);
}

// A userfaultfd that reports REMOVE events with the mapping registered and page 0 placed, and
// a thread whose discard of page 0 waits until its REMOVE is read.
class DiscardWaiting {
  public:
    ~DiscardWaiting() {
        registration.reset();
        fd.reset();  // closing the descriptor lets a discard still waiting go on
        if (remover_.joinable()) {
            remover_.join();
        }
    }
    // Returns once the discarding thread waits in the kernel for its event to be read.
    void start(Mapping& mapping) {
        OpenOptions options = test::test_open_options();
        options.required = FeatureSet{Feature::EventRemove};
        auto opened = UserfaultFd::open(options);
        ASSERT_TRUE(opened);
        fd.emplace(std::move(*opened));
        auto reg = fd->register_mapping(mapping, RegisterModes::missing_only());
        ASSERT_TRUE(reg);
        registration.emplace(std::move(*reg));
        content = test::page_of(0x31, mapping.page_size());
        ASSERT_TRUE(fd->copy(mapping.address(), content.data(), mapping.page_size()));
        std::atomic<pid_t> tid{0};
        remover_ = std::thread([&tid, &mapping] {
            tid = ::gettid();
            ::madvise(mapping.page(0), mapping.page_size(), MADV_DONTNEED);
        });
        while (tid == 0) {
            std::this_thread::yield();
        }
        ASSERT_TRUE(test::wait_until_blocked_in({tid.load()}, "userfaultfd_event_wait_completion"));
    }
    // Reads the one event (the REMOVE of page 0), and the discarding thread returns.
    std::optional<RemoveEvent> read_remove() {
        auto stop = EventFd::create();
        FaultReader reader(*fd, *stop);
        auto batch = reader.next(5000);
        if (!batch || batch->events.size() != 1) {
            return std::nullopt;  // (the destructor lets the thread go)
        }
        remover_.join();
        auto* removed = std::get_if<RemoveEvent>(&batch->events[0]);
        return removed ? std::optional(*removed) : std::nullopt;
    }

    std::optional<UserfaultFd> fd;
    std::optional<Registration> registration;
    std::vector<unsigned char> content;

  private:
    std::thread remover_;
};

TEST_P(AnonymousPlacement, PendingRemoveEventMakesPlacementRetryLater) {
    DiscardWaiting discard;
    ASSERT_NO_FATAL_FAILURE(discard.start(*mapping_));
    EXPECT_EQ(discard.fd->copy(address(1), discard.content.data(), page()).error(),
              Errc::RetryLater);
    auto removed = discard.read_remove();
    ASSERT_TRUE(removed);
    EXPECT_EQ(removed->start, address(0));
    EXPECT_EQ(removed->end, address(1));
    EXPECT_EQ(*discard.fd->copy(address(1), discard.content.data(), page()), page());
}

// A discard that saw the range registered queues its REMOVE after dropping the mmap lock, so
// it can come after the range is unregistered: event_in_flight sees it from the unregistering
// on (before the event is read, and even before it is queued), and no longer once it is read.
TEST_P(AnonymousPlacement, DiscardInFlightIsSeenAfterTheRangeIsUnregistered) {
    DiscardWaiting discard;
    ASSERT_NO_FATAL_FAILURE(discard.start(*mapping_));
    ASSERT_TRUE(discard.registration->unregister());  // the discard's event stays pending
    EXPECT_TRUE(*discard.fd->event_in_flight(address(0), page()));
    EXPECT_TRUE(*discard.fd->event_in_flight(address(1), page()));  // any range answers it
    ASSERT_TRUE(discard.read_remove());
    EXPECT_FALSE(*discard.fd->event_in_flight(address(0), page()));
    EXPECT_EQ(discard.fd->event_in_flight(address(0) + 1, page()).error(), Errc::Unaligned);
}

INSTANTIATE_TEST_SUITE_P(Anonymous, AnonymousPlacement, ::testing::Values(MemoryKind::Anonymous),
                         [](const auto& info) { return std::string(to_string(info.param)); });

class FilePlacement : public PlacementTest {};

TEST_P(FilePlacement, ContinueMapsPageCacheContentOnAMinorFault) {
    auto alias = mapping_->alias();
    ASSERT_TRUE(alias);
    // Populate the page cache through the alias before registering: the primary mapping's
    // page tables stay empty, so touching it is a MINOR fault.
    std::memset(alias->page(2), 0x5c, page());
    auto reg = uffd_->register_mapping(*mapping_, {.minor = true});
    ASSERT_TRUE(reg) << reg.error().message();
    test::FaultServerThread server(*uffd_, [&](const UserfaultFd& fd, const PageFault& fault) {
        auto mapped = fd.continue_minor(fault.page(page()), page());
        if (!mapped) {
            ADD_FAILURE() << "continue: " << mapped.error().message();
        }
    });
    unsigned char seen = 0;
    std::thread guest([&] { seen = byte_at(2, 3); });
    guest.join();
    EXPECT_EQ(seen, 0x5c);
    ASSERT_EQ(server.faults().size(), 1u);
    EXPECT_TRUE(server.faults()[0].minor);
    EXPECT_EQ(uffd_->continue_minor(address(2), page()).error(), Errc::AlreadyPresent);
}

TEST_P(FilePlacement, MinorFaultWithNothingInThePageCacheCannotContinue) {
    auto reg = uffd_->register_mapping(*mapping_, {.minor = true});
    ASSERT_TRUE(reg) << reg.error().message();
    // No page cache page at index 1: CONTINUE has nothing to map (the kernel says EFAULT).
    auto mapped = uffd_->continue_minor(address(1), page());
    ASSERT_FALSE(mapped);
    EXPECT_EQ(mapped.error(), std::errc::bad_address) << mapped.error().message();
}

INSTANTIATE_TEST_SUITE_P(FileBacked, FilePlacement,
                         ::testing::Values(MemoryKind::Shmem, MemoryKind::Hugetlb),
                         [](const auto& info) { return std::string(to_string(info.param)); });

}  // namespace
}  // namespace uffdm::uffd
