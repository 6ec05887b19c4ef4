// basics_test.cpp — UniqueFd, EventFd, Mapping, feature names and message decoding.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstring>

#include "uffd/event_fd.hpp"
#include "uffd/fault_reader.hpp"
#include "uffd/features.hpp"
#include "uffd/mapping.hpp"
#include "uffd/unique_fd.hpp"

namespace uffdm::uffd {
namespace {

bool fd_is_open(int fd) {
    return ::fcntl(fd, F_GETFD) != -1;
}

TEST(UniqueFd, ClosesOnDestructionAndMoveTransfersOwnership) {
    int raw = ::eventfd(0, EFD_CLOEXEC);
    ASSERT_GE(raw, 0);
    {
        UniqueFd a(raw);
        UniqueFd b(std::move(a));
        EXPECT_FALSE(a.valid());
        EXPECT_EQ(b.get(), raw);
        EXPECT_TRUE(fd_is_open(raw));
    }
    EXPECT_FALSE(fd_is_open(raw));
}

TEST(UniqueFd, ReleaseGivesUpOwnership) {
    int raw = ::eventfd(0, EFD_CLOEXEC);
    {
        UniqueFd a(raw);
        EXPECT_EQ(a.release(), raw);
    }
    EXPECT_TRUE(fd_is_open(raw));
    ::close(raw);
}

TEST(EventFd, SignalThenConsumeReturnsTheSumAndThenZero) {
    auto ev = EventFd::create();
    ASSERT_TRUE(ev);
    ASSERT_TRUE(ev->signal(2));
    ASSERT_TRUE(ev->signal(3));
    EXPECT_EQ(*ev->consume(), 5u);
    EXPECT_EQ(*ev->consume(), 0u);
}

TEST(EventFd, WaitBlocksUntilAnotherThreadSignals) {
    auto ev = EventFd::create();
    ASSERT_TRUE(ev);
    std::thread signaller([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        (void)ev->signal();
    });
    auto got = ev->wait();
    signaller.join();
    ASSERT_TRUE(got);
    EXPECT_EQ(*got, 1u);
}

TEST(Mapping, AnonymousIsZeroFilledAndWritable) {
    auto m = Mapping::anonymous(4 * base_page_size());
    ASSERT_TRUE(m);
    EXPECT_EQ(m->kind(), MemoryKind::Anonymous);
    EXPECT_EQ(m->page_count(), 4u);
    EXPECT_EQ(static_cast<int>(m->data()[100]), 0);
    m->data()[100] = std::byte{7};
    EXPECT_EQ(m->data()[100], std::byte{7});
}

TEST(Mapping, ShmemAliasSeesTheSamePages) {
    auto m = Mapping::shmem(2 * base_page_size());
    ASSERT_TRUE(m);
    auto alias = m->alias();
    ASSERT_TRUE(alias);
    EXPECT_NE(alias->data(), m->data());
    alias->data()[base_page_size() + 5] = std::byte{42};
    EXPECT_EQ(m->data()[base_page_size() + 5], std::byte{42});
}

TEST(Mapping, AnonymousHasNoAlias) {
    auto m = Mapping::anonymous(base_page_size());
    ASSERT_TRUE(m);
    EXPECT_EQ(m->alias().error(), Errc::Unsupported);
}

TEST(Mapping, RejectsZeroAndUnalignedLengths) {
    EXPECT_EQ(Mapping::anonymous(0).error(), Errc::InvalidArgument);
    EXPECT_EQ(Mapping::anonymous(base_page_size() + 1).error(), Errc::Unaligned);
    EXPECT_EQ(Mapping::shmem(100).error(), Errc::Unaligned);
    EXPECT_EQ(Mapping::hugetlb(base_page_size()).error(), Errc::Unaligned);
    EXPECT_EQ(Mapping::create(MemoryKind::Invalid, base_page_size()).error(),
              Errc::InvalidArgument);
}

TEST(Mapping, HugetlbUsesTwoMegabytePagesWhenReservable) {
    auto m = Mapping::hugetlb(kHugePageSize);
    if (!m) {
        GTEST_SKIP() << "no free 2 MiB huge pages (vm.nr_hugepages): " << m.error().message();
    }
    EXPECT_EQ(m->page_size(), kHugePageSize);
    m->data()[kHugePageSize - 1] = std::byte{1};
    EXPECT_EQ(m->data()[kHugePageSize - 1], std::byte{1});
}

TEST(Mapping, MoveLeavesTheSourceEmpty) {
    auto m = Mapping::anonymous(base_page_size());
    ASSERT_TRUE(m);
    std::byte* data = m->data();
    Mapping moved = std::move(*m);
    EXPECT_EQ(moved.data(), data);
    EXPECT_EQ(m->data(), nullptr);
    EXPECT_EQ(m->alias().error(), Errc::Closed);
}

TEST(Features, NamesFollowTheKernelBitOrder) {
    FeatureSet set{Feature::Move, Feature::MissingShmem, Feature::ThreadId};
    EXPECT_EQ(set.names(), (std::vector<std::string>{"MISSING_SHMEM", "THREAD_ID", "MOVE"}));
    EXPECT_EQ(FeatureSet(1ULL << 40).names(), (std::vector<std::string>{"bit40"}));
    EXPECT_EQ(known_features().bits(), 0x1ffffULL);
}

TEST(Features, SetOperations) {
    FeatureSet a{Feature::Poison, Feature::Move};
    EXPECT_TRUE(a.has(Feature::Poison));
    EXPECT_FALSE(a.has(Feature::WpAsync));
    EXPECT_TRUE(a.contains(FeatureSet{Feature::Move}));
    EXPECT_FALSE(a.contains(FeatureSet{Feature::Move, Feature::Sigbus}));
    EXPECT_EQ(a.without(FeatureSet{Feature::Move}), FeatureSet{Feature::Poison});
}

TEST(Features, IoctlNamesFromAMask) {
    IoctlSet set((1ULL << _UFFDIO_COPY) | (1ULL << _UFFDIO_MOVE) | (1ULL << 20));
    EXPECT_TRUE(set.has(Ioctl::Copy));
    EXPECT_FALSE(set.has(Ioctl::Poison));
    EXPECT_EQ(set.names(), (std::vector<std::string>{"COPY", "MOVE", "bit20"}));
}

uffd_msg message(std::uint8_t event) {
    uffd_msg msg;
    std::memset(&msg, 0, sizeof msg);
    msg.event = event;
    return msg;
}

TEST(Decode, PageFaultFlagsAndThreadId) {
    uffd_msg msg = message(UFFD_EVENT_PAGEFAULT);
    msg.arg.pagefault.address = 0x7f0000001234;
    msg.arg.pagefault.flags = UFFD_PAGEFAULT_FLAG_WRITE | UFFD_PAGEFAULT_FLAG_MINOR;
    msg.arg.pagefault.feat.ptid = 4242;
    auto event = decode(msg);
    auto* fault = std::get_if<PageFault>(&event);
    ASSERT_NE(fault, nullptr);
    EXPECT_EQ(fault->address, 0x7f0000001234u);
    EXPECT_EQ(fault->page(4096), 0x7f0000001000u);
    EXPECT_TRUE(fault->write);
    EXPECT_TRUE(fault->minor);
    EXPECT_FALSE(fault->write_protect);
    EXPECT_EQ(fault->thread_id, 4242u);
}

TEST(Decode, NonFaultEvents) {
    uffd_msg remove = message(UFFD_EVENT_REMOVE);
    remove.arg.remove.start = 0x1000;
    remove.arg.remove.end = 0x3000;
    auto r = decode(remove);
    ASSERT_TRUE(std::holds_alternative<RemoveEvent>(r));
    EXPECT_EQ(std::get<RemoveEvent>(r).start, 0x1000u);
    EXPECT_EQ(std::get<RemoveEvent>(r).end, 0x3000u);

    uffd_msg unmap = message(UFFD_EVENT_UNMAP);
    unmap.arg.remove.start = 0x5000;
    unmap.arg.remove.end = 0x6000;
    auto u = decode(unmap);
    ASSERT_TRUE(std::holds_alternative<UnmapEvent>(u));
    EXPECT_EQ(std::get<UnmapEvent>(u).start, 0x5000u);
    EXPECT_EQ(std::get<UnmapEvent>(u).end, 0x6000u);

    uffd_msg remap = message(UFFD_EVENT_REMAP);
    remap.arg.remap.from = 0x7000;
    remap.arg.remap.to = 0x9000;
    remap.arg.remap.len = 0x3000;
    auto m = std::get<RemapEvent>(decode(remap));
    EXPECT_EQ(m.from, 0x7000u);
    EXPECT_EQ(m.to, 0x9000u);
    EXPECT_EQ(m.length, 0x3000u);
}

TEST(Decode, ForkEventOwnsTheNewDescriptor) {
    int raw = ::eventfd(0, EFD_CLOEXEC);
    uffd_msg fork = message(UFFD_EVENT_FORK);
    fork.arg.fork.ufd = static_cast<std::uint32_t>(raw);
    {
        auto event = decode(fork);
        EXPECT_EQ(std::get<ForkEvent>(event).child_uffd.get(), raw);
    }
    EXPECT_FALSE(fd_is_open(raw));
}

TEST(Decode, UnknownEventIsReportedNotDropped) {
    auto event = decode(message(0x99));
    ASSERT_TRUE(std::holds_alternative<UnknownEvent>(event));
    EXPECT_EQ(std::get<UnknownEvent>(event).event, 0x99);
}

}  // namespace
}  // namespace uffdm::uffd
