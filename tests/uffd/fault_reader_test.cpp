// fault_reader_test.cpp — Batched draining, non-fault events, stopping, and kernel-mode faults.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <optional>
#include <set>
#include <thread>

#include "tests/support/test_support.hpp"
#include "uffd/fault_reader.hpp"
#include "uffd/mapping.hpp"

namespace uffdm::uffd {
namespace {

UserfaultFd open_with(FeatureSet required, bool user_mode_only = false) {
    OpenOptions options = test::test_open_options();
    options.required = required;
    options.user_mode_only = user_mode_only;
    if (user_mode_only) {
        options.route = OpenRoute::Syscall;
    }
    auto fd = UserfaultFd::open(options);
    EXPECT_TRUE(fd) << fd.error().message();
    return std::move(*fd);
}

TEST(FaultReader, DrainsManyQueuedFaultsInOneRead) {
    constexpr std::size_t kThreads = 8;
    auto mapping = Mapping::anonymous(kThreads * base_page_size());
    ASSERT_TRUE(mapping);
    UserfaultFd fd = open_with({});
    auto reg = fd.register_mapping(*mapping, RegisterModes::missing_only());
    ASSERT_TRUE(reg);

    std::vector<std::thread> guests;
    std::vector<std::atomic<pid_t>> tids(kThreads);
    for (std::size_t i = 0; i < kThreads; ++i) {
        guests.emplace_back([&, i] {
            tids[i] = ::gettid();
            volatile std::byte b = mapping->page(i)[0];
            (void)b;
        });
    }
    std::vector<pid_t> waiting;
    for (auto& tid : tids) {
        while (tid == 0) {
            std::this_thread::yield();
        }
        waiting.push_back(tid);
    }
    ASSERT_TRUE(test::wait_until_blocked_in_fault(waiting));

    auto stop = EventFd::create();
    FaultReader reader(fd, *stop);
    auto batch = reader.next(5000);
    ASSERT_TRUE(batch);
    EXPECT_EQ(batch->events.size(), kThreads);
    EXPECT_EQ(reader.reads(), 1u);
    std::set<std::uint64_t> pages;
    for (auto& event : batch->events) {
        pages.insert(std::get<PageFault>(event).page(base_page_size()));
    }
    EXPECT_EQ(pages.size(), kThreads);  // one message per distinct page
    EXPECT_TRUE(fd.zeropage(mapping->address(), mapping->size()));
    for (auto& g : guests) {
        g.join();
    }
}

TEST(FaultReader, StopsWhenTheEventFdIsSignalled) {
    UserfaultFd fd = open_with({});
    auto stop = EventFd::create();
    FaultReader reader(fd, *stop);
    std::thread stopper([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        (void)stop->signal();
    });
    auto batch = reader.next();
    stopper.join();
    ASSERT_TRUE(batch);
    EXPECT_TRUE(batch->stopped);
    EXPECT_TRUE(batch->events.empty());
    // It stays stopped: every later call returns at once.
    EXPECT_TRUE(reader.next()->stopped);
}

TEST(FaultReader, TimesOutWithNoEvents) {
    UserfaultFd fd = open_with({});
    auto stop = EventFd::create();
    FaultReader reader(fd, *stop);
    auto batch = reader.next(10);
    ASSERT_TRUE(batch);
    EXPECT_TRUE(batch->timed_out);
}

TEST(FaultReader, MovedFromUserfaultFdIsClosed) {
    UserfaultFd fd = open_with({});
    UserfaultFd taken = std::move(fd);
    auto stop = EventFd::create();
    FaultReader reader(fd, *stop);
    EXPECT_EQ(reader.next(0).error(), Errc::Closed);
}

TEST(FaultReader, ReportsUnmapAndRemap) {
    UserfaultFd fd = open_with(FeatureSet{Feature::EventUnmap, Feature::EventRemap});
    // Map by hand: the events refer to ranges that no longer belong to a Mapping.
    std::size_t len = 4 * base_page_size();
    void* p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(p, MAP_FAILED);
    auto start = reinterpret_cast<std::uint64_t>(p);
    auto reg = fd.register_range(start, len, RegisterModes::missing_only());
    ASSERT_TRUE(reg);
    auto stop = EventFd::create();
    FaultReader reader(fd, *stop);

    // A reserved destination, so MREMAP_FIXED replaces nothing of anybody else's.
    void* target = ::mmap(nullptr, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(target, MAP_FAILED);
    void* moved = nullptr;
    std::thread remapper([&] {
        // Both calls wait until the reader has read their event.
        moved = ::mremap(p, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, target);
        ::munmap(moved, base_page_size());
        ::munmap(static_cast<char*>(moved) + base_page_size(), len - base_page_size());
    });
    // mremap reports REMAP (and, on this kernel, an UNMAP of the old range); each munmap of a
    // registered range reports UNMAP. Read until the last munmap has been seen.
    std::vector<RemapEvent> remaps;
    std::vector<UnmapEvent> unmaps;
    auto target_start = reinterpret_cast<std::uint64_t>(target);
    auto finished = [&] { return !unmaps.empty() && unmaps.back().end == target_start + len; };
    for (int i = 0; i < 10 && !finished(); ++i) {
        auto batch = reader.next(5000);
        ASSERT_TRUE(batch);
        for (auto& e : batch->events) {
            if (auto* remap = std::get_if<RemapEvent>(&e)) {
                remaps.push_back(*remap);
            } else if (auto* unmap = std::get_if<UnmapEvent>(&e)) {
                unmaps.push_back(*unmap);
            }
        }
    }
    remapper.join();
    ASSERT_EQ(moved, target);
    ASSERT_EQ(remaps.size(), 1u);
    EXPECT_EQ(remaps[0].from, start);
    EXPECT_EQ(remaps[0].to, target_start);
    EXPECT_EQ(remaps[0].length, len);
    ASSERT_GE(unmaps.size(), 2u);
    const UnmapEvent& first_page = unmaps[unmaps.size() - 2];
    EXPECT_EQ(first_page.start, target_start);
    EXPECT_EQ(first_page.end, target_start + base_page_size());
    EXPECT_EQ(unmaps.back().start, target_start + base_page_size());
}

TEST(FaultReader, ReportsForkWithTheChildsUserfaultFd) {
    UserfaultFd fd = open_with(FeatureSet{Feature::EventFork});
    auto mapping = Mapping::anonymous(base_page_size());
    ASSERT_TRUE(mapping);
    auto reg = fd.register_mapping(*mapping, RegisterModes::missing_only());
    ASSERT_TRUE(reg);
    auto stop = EventFd::create();
    FaultReader reader(fd, *stop);
    pid_t child = -1;
    std::thread forker([&] {
        child = ::fork();  // waits until the reader has read the FORK event
        if (child == 0) {
            ::_exit(0);
        }
    });
    auto batch = reader.next(5000);
    ASSERT_TRUE(batch);
    forker.join();
    ASSERT_EQ(batch->events.size(), 1u);
    auto* forked = std::get_if<ForkEvent>(&batch->events[0]);
    ASSERT_NE(forked, nullptr);
    EXPECT_TRUE(forked->child_uffd.valid());
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    EXPECT_TRUE(WIFEXITED(status));
}

TEST(KernelFaults, ReadIntoGuestMemoryIsServedByAFullUserfaultFd) {
    UserfaultFd fd = open_with({});
    ASSERT_FALSE(fd.user_mode_only());
    auto mapping = Mapping::anonymous(2 * base_page_size());
    ASSERT_TRUE(mapping);
    auto reg = fd.register_mapping(*mapping, RegisterModes::missing_only());
    ASSERT_TRUE(reg);
    test::FaultServerThread server(fd, test::fill_page_with(0xee, base_page_size()));
    std::vector<unsigned char> data(100, 0x12);
    EXPECT_EQ(test::kernel_read_into(mapping->page(1), data), 100);
    EXPECT_EQ(static_cast<unsigned char>(mapping->page(1)[0]), 0x12);    // what read(2) wrote
    EXPECT_EQ(static_cast<unsigned char>(mapping->page(1)[100]), 0xee);  // the placed page
    ASSERT_EQ(server.faults().size(), 1u);
    EXPECT_TRUE(server.faults()[0].write);
}

TEST(KernelFaults, UserModeOnlyUserfaultFdCannotServeThemAndReadFailsWithEfault) {
    UserfaultFd fd = open_with({}, /*user_mode_only=*/true);
    ASSERT_TRUE(fd.user_mode_only());
    auto mapping = Mapping::anonymous(base_page_size());
    ASSERT_TRUE(mapping);
    auto reg = fd.register_mapping(*mapping, RegisterModes::missing_only());
    ASSERT_TRUE(reg);
    test::FaultServerThread server(fd, test::fill_page_with(0xee, base_page_size()));
    std::vector<unsigned char> data(100, 0x12);
    EXPECT_EQ(test::kernel_read_into(mapping->page(0), data), -1);
    EXPECT_EQ(errno, EFAULT);
    EXPECT_TRUE(server.faults().empty());
    // The same page touched from user mode is still served.
    EXPECT_EQ(static_cast<unsigned char>(mapping->page(0)[7]), 0xee);
}

}  // namespace
}  // namespace uffdm::uffd
