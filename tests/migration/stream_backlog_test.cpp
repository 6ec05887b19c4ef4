// stream_backlog_test.cpp — A bulk connection's chosen-but-unsent stream follows the socket's rate.
#include <gtest/gtest.h>

#include "migration/source_channels.hpp"

namespace uffdm::migration {
namespace {

constexpr std::uint64_t kFrame = 256U << 10;
constexpr std::uint64_t kWindow = 16 * kFrame;

// Frames queued and taken by a socket at `rate` bytes per second for `ms`, the backlog kept
// as full as it allows. Returns the most bytes it held at once after the first 100 ms.
std::uint64_t drive(StreamBacklog& backlog, double rate, int ms) {
    StreamBacklog::Clock::time_point now{};
    auto end = now + std::chrono::milliseconds(ms);
    std::uint64_t held = 0;
    std::uint64_t most = 0;
    while (now < end) {
        while (!backlog.full()) {
            backlog.queued(kFrame);
            held += kFrame;
        }
        if (now > StreamBacklog::Clock::time_point{} + std::chrono::milliseconds(100)) {
            most = std::max(most, held);
        }
        now += std::chrono::nanoseconds(static_cast<std::int64_t>(kFrame / rate * 1e9));
        backlog.taken(now);
        held -= kFrame;
    }
    return most;
}

TEST(StreamBacklog, HoldsAboutFourMillisecondsOfTheSocketsRateWithinItsBounds) {
    StreamBacklog fresh(kWindow);
    EXPECT_EQ(fresh.budget(), kWindow) << "nothing measured: the whole window";

    StreamBacklog gigabit(kWindow);  // 125 MB/s: 4 ms is 500 KB, so the 512 KiB floor
    EXPECT_LE(drive(gigabit, 125e6, 1000), 512U << 10);
    EXPECT_EQ(gigabit.budget(), 512U << 10);

    StreamBacklog four(kWindow);  // 4 Gbit/s: 2 MB, about 8 frames
    EXPECT_LE(drive(four, 500e6, 1000), 2e6 + kFrame);
    EXPECT_NEAR(static_cast<double>(four.budget()), 2e6, 0.2e6);

    StreamBacklog loopback(kWindow);  // faster than the window: the window
    drive(loopback, 6e9, 500);
    EXPECT_EQ(loopback.budget(), kWindow);
}

TEST(StreamBacklog, SaysWhenAFullBacklogMakesRoom) {
    StreamBacklog backlog(2 * kFrame);
    backlog.queued(kFrame);
    EXPECT_FALSE(backlog.full());
    backlog.queued(kFrame);
    EXPECT_TRUE(backlog.full());
    EXPECT_TRUE(backlog.taken(StreamBacklog::Clock::now())) << "room again: wake the stream";
    EXPECT_FALSE(backlog.taken(StreamBacklog::Clock::now())) << "was not full";
    EXPECT_FALSE(backlog.taken(StreamBacklog::Clock::now())) << "nothing queued";
}

}  // namespace
}  // namespace uffdm::migration
