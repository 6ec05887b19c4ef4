// dirty_tracker_test.cpp — Written pages found and re-armed by PAGEMAP_SCAN: user threads, the
// kernel's own writes, pages never touched, and no privilege at all.
#include "uffd/dirty_tracker.hpp"

#include <gtest/gtest.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cstring>
#include <thread>

#include "tests/support/test_support.hpp"

namespace uffdm::uffd {
namespace {

class Tracking : public ::testing::TestWithParam<MemoryKind> {
  protected:
    void SetUp() override {
        if (auto ok = DirtyTracker::supported(GetParam()); !ok) {
            GTEST_SKIP() << "no asynchronous write-protection here: " << ok.error().message();
        }
        // 16 pages: 32 MiB of hugetlbfs, half the pool, so that other tests running beside
        // this one still get huge pages.
        auto m = Mapping::create(GetParam(), 16 * page_size());
        if (!m) {
            GTEST_SKIP() << "cannot map " << to_string(GetParam()) << ": " << m.error().message();
        }
        mapping_.emplace(std::move(*m));
    }
    [[nodiscard]] std::uint64_t page_size() const {
        return GetParam() == MemoryKind::Hugetlb ? kHugePageSize : 4096;
    }
    [[nodiscard]] std::byte* page(std::uint64_t p) const {
        return mapping_->data() + p * page_size();
    }
    [[nodiscard]] WrittenRange pages(std::uint64_t first, std::uint64_t count) const {
        auto base = reinterpret_cast<std::uint64_t>(mapping_->data());
        return {base + first * page_size(), base + (first + count) * page_size()};
    }
    std::optional<Mapping> mapping_;
};

TEST_P(Tracking, ReportsExactlyThePagesWrittenSinceTheLastLookAndNothingTwice) {
    for (std::uint64_t p = 0; p < 8; ++p) {  // half populated before tracking starts
        std::memset(page(p), 1, page_size());
    }
    auto tracker = DirtyTracker::start(reinterpret_cast<std::uint64_t>(mapping_->data()),
                                       mapping_->size(), GetParam());
    ASSERT_TRUE(tracker) << tracker.error().message();
    auto none = tracker->collect();
    ASSERT_TRUE(none) << none.error().message();
    EXPECT_TRUE(none->empty()) << none->size() << " ranges written before any write";

    // Another thread writes pages 1-3, 10, 12 (never touched before) and 15.
    std::thread writer([&] {
        for (std::uint64_t p : {1, 2, 3, 10, 12, 15}) {
            page(p)[7] = std::byte{42};
        }
    });
    writer.join();
    auto first = tracker->collect();
    ASSERT_TRUE(first) << first.error().message();
    EXPECT_EQ(*first,
              (std::vector<WrittenRange>{pages(1, 3), pages(10, 1), pages(12, 1), pages(15, 1)}));
    auto again = tracker->collect();
    ASSERT_TRUE(again);
    EXPECT_TRUE(again->empty()) << "collected pages were protected again";

    page(10)[0] = std::byte{1};
    auto second = tracker->collect();
    ASSERT_TRUE(second);
    EXPECT_EQ(*second, (std::vector<WrittenRange>{pages(10, 1)}));
    // Reads are not writes.
    volatile std::byte seen = page(6)[0];
    (void)seen;
    auto after_read = tracker->collect();
    ASSERT_TRUE(after_read);
    EXPECT_TRUE(after_read->empty());
}

// The kernel writing on the process's behalf (copy_to_user in read(2)) is a write like any other,
// tracked with a user-mode-only userfaultfd: the protection is lifted by the kernel, no handler.
TEST_P(Tracking, TracksTheKernelsOwnWritesIntoTheRange) {
    auto tracker = DirtyTracker::start(reinterpret_cast<std::uint64_t>(mapping_->data()),
                                       mapping_->size(), GetParam());
    ASSERT_TRUE(tracker) << tracker.error().message();
    int pipe_fds[2];
    ASSERT_EQ(::pipe(pipe_fds), 0);
    ASSERT_EQ(::write(pipe_fds[1], "kernel", 6), 6);
    EXPECT_EQ(::read(pipe_fds[0], page(13), 6), 6) << std::strerror(errno);
    ::close(pipe_fds[0]);
    ::close(pipe_fds[1]);
    EXPECT_EQ(std::memcmp(page(13), "kernel", 6), 0);
    auto written = tracker->collect();
    ASSERT_TRUE(written) << written.error().message();
    EXPECT_EQ(*written, (std::vector<WrittenRange>{pages(13, 1)}));
}

INSTANTIATE_TEST_SUITE_P(Kinds, Tracking,
                         ::testing::Values(MemoryKind::Anonymous, MemoryKind::Shmem,
                                           MemoryKind::Hugetlb),
                         [](const auto& info) { return std::string(to_string(info.param)); });

// More written ranges than one PAGEMAP_SCAN call returns (512): the walk goes on where it
// stopped, and every one is reported once.
TEST(DirtyTracker, ReportsMoreRangesThanOneScanHolds) {
    if (!DirtyTracker::supported(MemoryKind::Anonymous)) {
        GTEST_SKIP() << "no asynchronous write-protection here";
    }
    auto mapping = Mapping::anonymous(4096 * 4096);
    ASSERT_TRUE(mapping);
    auto base = reinterpret_cast<std::uint64_t>(mapping->data());
    auto tracker = DirtyTracker::start(base, mapping->size(), MemoryKind::Anonymous);
    ASSERT_TRUE(tracker) << tracker.error().message();
    std::vector<WrittenRange> expected;
    for (std::uint64_t p = 0; p < 4096; p += 2) {
        mapping->data()[p * 4096] = std::byte{1};
        expected.push_back({base + p * 4096, base + (p + 1) * 4096});
    }
    auto written = tracker->collect();
    ASSERT_TRUE(written) << written.error().message();
    EXPECT_EQ(written->size(), 2048u);
    EXPECT_EQ(*written, expected);
}

// The source's guest tracker needs no privilege: as nobody, with no capability at all.
TEST(DirtyTracker, WorksForAProcessWithNoPrivilege) {
    if (::geteuid() != 0) {
        GTEST_SKIP() << "becoming nobody needs root first";
    }
    if (!DirtyTracker::supported(MemoryKind::Anonymous)) {
        GTEST_SKIP() << "no asynchronous write-protection here";
    }
    auto result = test::run_in_child([](std::FILE* report) {
        if (!test::become_nobody({})) {
            std::fprintf(report, "become_nobody: %s", std::strerror(errno));
            return 2;
        }
        // Changing uid made this process non-dumpable, which hands /proc/self to root; a
        // process started as nobody is dumpable.
        ::prctl(PR_SET_DUMPABLE, 1);
        auto mapping = Mapping::anonymous(16 * 4096);
        if (!mapping) {
            std::fprintf(report, "mmap failed");
            return 3;
        }
        auto base = reinterpret_cast<std::uint64_t>(mapping->data());
        auto tracker = DirtyTracker::start(base, mapping->size(), MemoryKind::Anonymous);
        if (!tracker) {
            std::fprintf(report, "start: %s", tracker.error().message().c_str());
            return 4;
        }
        mapping->data()[5 * 4096] = std::byte{1};
        auto written = tracker->collect();
        if (!written || *written != std::vector<WrittenRange>{{base + 5 * 4096, base + 6 * 4096}}) {
            std::fprintf(report, "collect: %s",
                         written ? "wrong pages" : written.error().message().c_str());
            return 5;
        }
        return 0;
    });
    EXPECT_TRUE(result.exited_with(0)) << result.describe();
}

}  // namespace
}  // namespace uffdm::uffd
