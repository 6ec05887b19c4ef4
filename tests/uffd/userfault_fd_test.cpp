// userfault_fd_test.cpp — Opening, the API handshake, registration and their bad input.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <optional>

#include "tests/support/test_support.hpp"
#include "uffd/mapping.hpp"
#include "uffd/userfault_fd.hpp"

namespace uffdm::uffd {
namespace {

TEST(UserfaultFdOpen, ThroughTheDeviceNodeReportsTheRouteAndGrantedFeatures) {
    OpenOptions options = test::test_open_options();
    options.route = OpenRoute::Device;
    options.required = FeatureSet{Feature::ThreadId};
    auto fd = UserfaultFd::open(options);
    ASSERT_TRUE(fd) << fd.error().message();
    EXPECT_EQ(fd->route(), OpenRoute::Device);
    EXPECT_TRUE(fd->granted().has(Feature::ThreadId));
    EXPECT_TRUE(fd->offered().contains(fd->granted()));
    // Only what was asked for is granted, even though the kernel offers more.
    EXPECT_FALSE(fd->granted().has(Feature::EventRemove));
    EXPECT_TRUE(fd->api_ioctls().has(Ioctl::Register));
}

TEST(UserfaultFdOpen, ThroughTheSyscall) {
    OpenOptions options = test::test_open_options();
    options.route = OpenRoute::Syscall;
    auto fd = UserfaultFd::open(options);
    ASSERT_TRUE(fd) << fd.error().message();
    EXPECT_EQ(fd->route(), OpenRoute::Syscall);
}

TEST(UserfaultFdOpen, MissingDeviceNodeFailsOnTheDeviceRouteAndFallsBackOnAuto) {
    OpenOptions options = test::test_open_options();
    options.device_path = "/nonexistent/userfaultfd";
    options.route = OpenRoute::Device;
    EXPECT_EQ(UserfaultFd::open(options).error(), std::errc::no_such_file_or_directory);
    options.route = OpenRoute::Auto;
    auto fd = UserfaultFd::open(options);
    ASSERT_TRUE(fd);
    EXPECT_EQ(fd->route(), OpenRoute::Syscall);
}

TEST(UserfaultFdOpen, RequiredFeatureTheKernelLacksIsUnsupported) {
    OpenOptions options;
    options.required = FeatureSet(1ULL << 40);  // no kernel has this bit
    EXPECT_EQ(UserfaultFd::open(options).error(), Errc::Unsupported);
}

TEST(UserfaultFdOpen, OptionalFeatureTheKernelLacksIsLeftOut) {
    OpenOptions options;
    options.optional = FeatureSet(1ULL << 40) | FeatureSet{Feature::ThreadId};
    auto fd = UserfaultFd::open(options);
    ASSERT_TRUE(fd);
    EXPECT_TRUE(fd->granted().has(Feature::ThreadId));
    EXPECT_EQ(fd->granted().bits() & (1ULL << 40), 0u);
}

TEST(UserfaultFdOpen, UserModeOnlyIsRecorded) {
    OpenOptions options;
    options.user_mode_only = true;
    options.route = OpenRoute::Syscall;
    auto fd = UserfaultFd::open(options);
    ASSERT_TRUE(fd);
    EXPECT_TRUE(fd->user_mode_only());
}

TEST(UserfaultFdOpen, EventForkIsDroppedWithoutPtraceWhenOptional) {
    auto child = test::run_in_child([](std::FILE* report) {
        if (!test::become_nobody({})) {
            std::fputs("become_nobody failed", report);
            return 1;
        }
        OpenOptions options;
        options.route = OpenRoute::Syscall;
        options.user_mode_only = true;
        options.optional = FeatureSet{Feature::EventFork, Feature::ThreadId};
        auto fd = UserfaultFd::open(options);
        if (!fd) {
            std::fprintf(report, "open: %s", fd.error().message().c_str());
            return 2;
        }
        if (fd->granted().has(Feature::EventFork) || !fd->granted().has(Feature::ThreadId)) {
            std::fputs("wrong grant", report);
            return 3;
        }
        options.required = FeatureSet{Feature::EventFork};
        auto required = UserfaultFd::open(options);
        if (required || required.error() != Errc::PermissionDenied) {
            std::fputs("required EVENT_FORK was not refused with PermissionDenied", report);
            return 4;
        }
        return 0;
    });
    EXPECT_TRUE(child.exited_with(0)) << child.describe();
}

TEST(UserfaultFdAdopt, HandshakesAReceivedDescriptor) {
    OpenOptions options;
    auto raw = ::syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    ASSERT_GE(raw, 0);
    auto fd = UserfaultFd::adopt(UniqueFd(static_cast<int>(raw)), FeatureSet{Feature::ThreadId},
                                 FeatureSet{Feature::Move});
    ASSERT_TRUE(fd) << fd.error().message();
    EXPECT_TRUE(fd->granted().has(Feature::ThreadId));
    EXPECT_EQ(UserfaultFd::adopt(UniqueFd(), {}, {}).error(), Errc::Closed);
}

class Registered : public ::testing::Test {
  protected:
    void SetUp() override {
        auto fd = UserfaultFd::open(test::test_open_options());
        ASSERT_TRUE(fd);
        uffd_.emplace(std::move(*fd));
        auto m = Mapping::anonymous(4 * base_page_size());
        ASSERT_TRUE(m);
        mapping_.emplace(std::move(*m));
    }
    std::optional<UserfaultFd> uffd_;
    std::optional<Mapping> mapping_;
};

TEST_F(Registered, MissingModeReportsTheIoctlsItAllows) {
    auto reg = uffd_->register_mapping(*mapping_, RegisterModes::missing_only());
    ASSERT_TRUE(reg) << reg.error().message();
    EXPECT_TRUE(reg->ioctls().has(Ioctl::Copy));
    EXPECT_TRUE(reg->ioctls().has(Ioctl::Zeropage));
    EXPECT_TRUE(reg->ioctls().has(Ioctl::Wake));
    EXPECT_EQ(reg->start(), mapping_->address());
    EXPECT_TRUE(reg->contains(mapping_->address() + base_page_size(), base_page_size()));
    EXPECT_FALSE(reg->contains(mapping_->address() + mapping_->size(), 1));
}

TEST_F(Registered, DestroyingTheRegistrationMakesTouchesNormalAgain) {
    {
        auto reg = uffd_->register_mapping(*mapping_, RegisterModes::missing_only());
        ASSERT_TRUE(reg);
    }
    // Unregistered: the kernel fills the page itself; no reader is needed.
    EXPECT_EQ(static_cast<int>(mapping_->data()[0]), 0);
}

TEST_F(Registered, ExplicitUnregisterTwiceReportsClosed) {
    auto reg = uffd_->register_mapping(*mapping_, RegisterModes::missing_only());
    ASSERT_TRUE(reg);
    EXPECT_TRUE(reg->unregister());
    EXPECT_EQ(reg->unregister().error(), Errc::Closed);
}

TEST_F(Registered, MinorModeOnAnonymousMemoryIsUnsupported) {
    EXPECT_EQ(uffd_->register_mapping(*mapping_, {.minor = true}).error(), Errc::Unsupported);
}

TEST_F(Registered, UnalignedStartOrLengthIsRejected) {
    EXPECT_EQ(uffd_
                  ->register_range(mapping_->address() + 1, base_page_size(),
                                   RegisterModes::missing_only())
                  .error(),
              Errc::Unaligned);
    EXPECT_EQ(uffd_
                  ->register_range(mapping_->address(), base_page_size() + 7,
                                   RegisterModes::missing_only())
                  .error(),
              Errc::Unaligned);
}

TEST_F(Registered, ZeroLengthOrNoModeIsInvalid) {
    EXPECT_EQ(uffd_->register_range(mapping_->address(), 0, RegisterModes::missing_only()).error(),
              Errc::InvalidArgument);
    EXPECT_EQ(uffd_->register_range(mapping_->address(), base_page_size(), {}).error(),
              Errc::InvalidArgument);
}

TEST_F(Registered, UnmappedRangeIsNotMapped) {
    // Reserve and free an address range so that nothing is mapped there.
    void* hole = ::mmap(nullptr, base_page_size(), PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(hole, MAP_FAILED);
    ::munmap(hole, base_page_size());
    EXPECT_EQ(uffd_
                  ->register_range(reinterpret_cast<std::uint64_t>(hole), base_page_size(),
                                   RegisterModes::missing_only())
                  .error(),
              Errc::NotMapped);
}

TEST_F(Registered, MovedFromUserfaultFdReportsClosed) {
    UserfaultFd taken = std::move(*uffd_);
    EXPECT_EQ(uffd_->register_mapping(*mapping_, RegisterModes::missing_only()).error(),
              Errc::Closed);
    auto page = std::vector<unsigned char>(base_page_size());
    EXPECT_EQ(uffd_->copy(mapping_->address(), page.data(), base_page_size()).error(),
              Errc::Closed);
    EXPECT_EQ(uffd_->wake(mapping_->address(), base_page_size()).error(), Errc::Closed);
}

TEST_F(Registered, RegistrationSurvivesMovingTheUserfaultFd) {
    auto reg = uffd_->register_mapping(*mapping_, RegisterModes::missing_only());
    ASSERT_TRUE(reg);
    UserfaultFd moved = std::move(*uffd_);
    auto page = test::page_of(0x5a, base_page_size());
    EXPECT_EQ(*moved.copy(mapping_->address(), page.data(), base_page_size()), base_page_size());
    EXPECT_EQ(static_cast<unsigned char>(mapping_->data()[0]), 0x5a);
}

}  // namespace
}  // namespace uffdm::uffd
