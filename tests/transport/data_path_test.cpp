// data_path_test.cpp — Both data path backends over real sockets: order, memory, ends, deadlines.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <numeric>
#include <thread>

#include "tests/support/data_path_support.hpp"
#include "tests/support/transport_support.hpp"
#include "transport/control.hpp"
#include "transport/data_path.hpp"

namespace uffdm::transport {
namespace {

using namespace std::chrono_literals;
using test::kApp;
using test::pattern;
using test::Recorder;
using test::Running;

class DataPathTest : public ::testing::TestWithParam<Backend> {
  protected:
    DataPathOptions options() const {
        DataPathOptions o;
        o.backend = GetParam();
        return o;
    }
};

TEST_P(DataPathTest, RunsOnTheBackendAskedFor) {
    Running path(options());
    EXPECT_EQ(path->backend(), GetParam());
    EXPECT_FALSE(path->describe().empty());
}

TEST_P(DataPathTest, FramesArriveWholeAndInOrderAndEachIsReportedSentOnce) {
    auto pair = test::joined_pair();
    ASSERT_TRUE(pair->error.empty()) << pair->error;
    Recorder sender;
    Recorder receiver;
    Running a(options());
    Running b(options());
    constexpr int kFrames = 300;
    std::vector<std::vector<std::byte>> payloads;
    for (int i = 0; i < kFrames; ++i) {
        // Sizes from 0 to ~200 KiB, so that gather writes end mid-frame and frames wrap the ring.
        payloads.push_back(pattern(static_cast<std::size_t>(i * 677) % (200 << 10), i));
    }
    for (int i = 0; i < kFrames; ++i) {
        std::array<std::byte, 4> index{};
        std::memcpy(index.data(), &i, 4);
        sender.queue(payloads[static_cast<std::size_t>(i)], static_cast<std::uint64_t>(i), index);
    }
    ChannelId out = a->add(std::move(*pair->client), sender);
    b->add(std::move(*pair->server), receiver);
    a->want_send(out);
    ASSERT_TRUE(receiver.wait([](Recorder& r) { return r.received_.size() == kFrames; }));
    ASSERT_TRUE(sender.wait([](Recorder& r) { return r.sent_.size() == kFrames; }));
    std::lock_guard lock(receiver.mutex_);
    for (int i = 0; i < kFrames; ++i) {
        const auto& got = receiver.received_[static_cast<std::size_t>(i)];
        ASSERT_EQ(got.type, kApp);
        ASSERT_EQ(got.payload.size(), 4 + payloads[static_cast<std::size_t>(i)].size());
        int index = 0;
        std::memcpy(&index, got.payload.data(), 4);
        ASSERT_EQ(index, i);
        ASSERT_TRUE(std::equal(got.payload.begin() + 4, got.payload.end(),
                               payloads[static_cast<std::size_t>(i)].begin()))
            << "frame " << i;
    }
    std::vector<std::uint64_t> expected(kFrames);
    std::iota(expected.begin(), expected.end(), 0);
    std::lock_guard sent_lock(sender.mutex_);
    EXPECT_EQ(sender.sent_, expected);
}

TEST_P(DataPathTest, FramesReadDuringTheHandshakeAreDeliveredFirst) {
    // The peer's first frame can arrive in the same read as ACCEPT; the handshake's decoder then
    // holds it, and the data path must take it over rather than lose it.
    auto pair = test::joined_pair();
    ASSERT_TRUE(pair->error.empty()) << pair->error;
    auto early = encode_frame(kApp, pattern(100, 7));
    auto late = encode_frame(kApp, pattern(50, 8));
    auto both = early;
    both.insert(both.end(), late.begin(), late.end());
    int raw = pair->server->socket().release();
    ASSERT_EQ(::send(raw, both.data(), both.size(), 0), static_cast<ssize_t>(both.size()));
    // The client reads through its handshake decoder, as it would right after ACCEPT: both
    // frames land in the decoder in one read, and read_frame returns the first.
    pair->io.restart();
    asio::co_spawn(
        pair->io,
        [&]() -> asio::awaitable<void> {
            auto f = co_await pair->client->read_frame();
            EXPECT_TRUE(f);
            if (f) {
                EXPECT_EQ(f->payload.size(), 100u);
            }
        },
        asio::detached);
    pair->io.run_for(2s);
    Recorder receiver;
    Running path(options());
    path->add(std::move(*pair->client), receiver);
    ASSERT_TRUE(receiver.wait([](Recorder& r) { return r.received_.size() == 1; }));
    std::lock_guard lock(receiver.mutex_);
    EXPECT_EQ(receiver.received_[0].payload, pattern(50, 8));
    ::close(raw);
}

TEST_P(DataPathTest, OrderlyCloseSendsEverythingThenGoodbyeAndBothSidesEndCleanly) {
    std::string path = "/tmp/uffdm-dp-" + std::to_string(::getpid());
    auto pair = test::joined_pair("unix:" + path);
    ::unlink(path.c_str());
    ASSERT_TRUE(pair->error.empty()) << pair->error;
    Recorder sender;
    Recorder receiver;
    Running a(options());
    Running b(options());
    auto data = pattern(64 << 10, 3);
    for (int i = 0; i < 50; ++i) {
        sender.queue(data, static_cast<std::uint64_t>(i));
    }
    ChannelId out = a->add(std::move(*pair->client), sender);
    b->add(std::move(*pair->server), receiver);
    a->close(out);
    ASSERT_TRUE(sender.wait([](Recorder& r) { return r.closed_.has_value(); }));
    ASSERT_TRUE(receiver.wait([](Recorder& r) { return r.closed_.has_value(); }));
    EXPECT_FALSE(sender.closed_->code) << sender.closed_->detail;
    EXPECT_FALSE(receiver.closed_->code) << receiver.closed_->detail;
    // close() may come before the loop took any frame, or after it took some: whatever it
    // took is sent whole and in order before GOODBYE, and nothing more is taken.
    std::scoped_lock lock(sender.mutex_, receiver.mutex_);
    EXPECT_EQ(receiver.received_.size(), sender.taken_);
    ASSERT_EQ(sender.sent_.size(), sender.taken_);
    for (std::size_t i = 0; i < sender.sent_.size(); ++i) {
        EXPECT_EQ(sender.sent_[i], i);
        EXPECT_EQ(receiver.received_[i].payload, data) << "frame " << i;
    }
}

TEST_P(DataPathTest, CloseAfterFramesFlushesThemFirst) {
    auto pair = test::joined_pair();
    ASSERT_TRUE(pair->error.empty()) << pair->error;
    Recorder sender;
    Recorder receiver;
    Running a(options());
    Running b(options());
    auto data = pattern(64 << 10, 3);
    for (int i = 0; i < 50; ++i) {
        sender.queue(data, static_cast<std::uint64_t>(i));
    }
    ChannelId out = a->add(std::move(*pair->client), sender);
    b->add(std::move(*pair->server), receiver);
    ASSERT_TRUE(sender.wait([](Recorder& r) { return r.taken_ == 50; }));
    a->close(out);
    ASSERT_TRUE(receiver.wait([](Recorder& r) { return r.closed_.has_value(); }));
    EXPECT_FALSE(receiver.closed_->code) << receiver.closed_->detail;
    EXPECT_EQ(receiver.received_.size(), 50u);
}

TEST_P(DataPathTest, SlowReceiverPushesBackAndTheSenderHoldsAtMostItsWindow) {
    auto pair = test::joined_pair();
    ASSERT_TRUE(pair->error.empty()) << pair->error;
    DataPathOptions small = options();
    small.send_window_frames = 4;
    small.receive_ring_bytes = 4U << 20;
    Recorder sender;
    Recorder receiver;
    Running a(small);
    Running b(options());
    receiver.frame_delay_ = 2ms;
    auto data = pattern(1 << 20, 5);
    constexpr int kFrames = 60;  // 60 MiB: far more than socket buffers and the ring hold
    for (int i = 0; i < kFrames; ++i) {
        sender.queue(data, static_cast<std::uint64_t>(i));
    }
    ChannelId out = a->add(std::move(*pair->client), sender);
    b->add(std::move(*pair->server), receiver);
    a->want_send(out);
    ASSERT_TRUE(receiver.wait([](Recorder& r) { return r.received_.size() == kFrames; }, 30s));
    // The receiver is slower than the link: the window fills and never overflows.
    std::lock_guard lock(sender.mutex_);
    EXPECT_EQ(sender.max_outstanding_, 4u);
}

// A handler that keeps frames past on_frame (a placement thread working from the ring): the kept
// payloads stay intact in the ring while later frames arrive, a ring full of them stops reading
// (the sender is pushed back, nothing is lost or written over), and releases from another
// thread, in any order, let the stream go on.
TEST_P(DataPathTest, KeptFramesStayIntactInTheRingUntilReleasedAndAFullRingPushesBack) {
    auto pair = test::joined_pair();
    ASSERT_TRUE(pair->error.empty()) << pair->error;
    DataPathOptions small = options();
    small.receive_ring_bytes = 4U << 20;
    small.max_payload = 1U << 20;
    Recorder sender;
    Recorder receiver;
    receiver.keep_ = true;
    Running a(options());
    Running b(small);
    constexpr int kFrames = 40;  // 40 x 700 KiB: the 4 MiB ring holds 5 of them
    std::vector<std::vector<std::byte>> payloads;
    for (int i = 0; i < kFrames; ++i) {
        payloads.push_back(pattern(700 << 10, static_cast<unsigned>(i) + 100));
        sender.queue(payloads.back(), static_cast<std::uint64_t>(i));
    }
    ChannelId out = a->add(std::move(*pair->client), sender);
    ChannelId in = b->add(std::move(*pair->server), receiver);
    a->want_send(out);
    auto intact = [&](std::size_t from, std::size_t to) {
        std::lock_guard lock(receiver.mutex_);
        for (std::size_t i = from; i < to; ++i) {
            const auto& kept = receiver.kept_[i].payload;
            if (!std::equal(kept.begin(), kept.end(), payloads[i].begin(), payloads[i].end())) {
                ADD_FAILURE() << "kept frame " << i << " was written over in the ring";
                return false;
            }
        }
        return true;
    };
    auto ticket = [&](std::size_t i) {
        std::lock_guard lock(receiver.mutex_);
        return receiver.kept_[i].ticket;
    };
    auto received = [&] {
        std::lock_guard lock(receiver.mutex_);
        return receiver.received_.size();
    };
    // Nothing released: the ring fills with kept frames and reading stops.
    ASSERT_TRUE(receiver.wait([](Recorder& r) { return r.received_.size() >= 5; }));
    std::size_t before = 0;
    for (int i = 0; i < 100 && received() != before; ++i) {  // settled: 100 ms without a frame
        before = received();
        std::this_thread::sleep_for(100ms);
    }
    ASSERT_EQ(received(), 5U) << "a 4 MiB ring holds five kept 700 KiB frames, no more";
    ASSERT_TRUE(intact(0, 5));
    // Released newest first: the oldest still holds the ring where it is, so nothing moves.
    for (std::size_t i = 4; i >= 1; --i) {
        b->release(in, ticket(i));
    }
    std::this_thread::sleep_for(300ms);
    EXPECT_EQ(received(), 5U) << "the oldest kept frame no longer held its ring space";
    ASSERT_TRUE(intact(0, 1));
    b->release(in, ticket(0));
    // From here each frame is checked and released by this thread as it comes.
    for (std::size_t next = 5; next < kFrames; ++next) {
        ASSERT_TRUE(receiver.wait([&](Recorder& r) { return r.received_.size() > next; }))
            << next << " frames arrived";
        ASSERT_TRUE(intact(next, next + 1));
        b->release(in, ticket(next));
    }
    std::lock_guard lock(receiver.mutex_);
    for (std::size_t i = 0; i < kFrames; ++i) {
        ASSERT_TRUE(std::equal(receiver.received_[i].payload.begin(),
                               receiver.received_[i].payload.end(), payloads[i].begin(),
                               payloads[i].end()))
            << "frame " << i;
    }
    EXPECT_FALSE(receiver.closed_) << receiver.closed_->detail;
}

TEST_P(DataPathTest, MalformedFrameEndsTheChannelAndThePeerIsToldWhy) {
    auto pair = test::joined_pair();
    ASSERT_TRUE(pair->error.empty()) << pair->error;
    int raw = pair->client->socket().release();
    Recorder receiver;
    Running path(options());
    path->add(std::move(*pair->server), receiver);
    auto good = encode_frame(kApp, pattern(10, 1));
    auto bad = encode_frame(kApp, pattern(10, 2));
    bad[7] = std::byte{0x80};  // reserved flag bits
    auto after = encode_frame(kApp, pattern(10, 3));
    std::vector<std::byte> all = good;
    all.insert(all.end(), bad.begin(), bad.end());
    all.insert(all.end(), after.begin(), after.end());
    ASSERT_EQ(::send(raw, all.data(), all.size(), MSG_NOSIGNAL), static_cast<ssize_t>(all.size()));
    ASSERT_TRUE(receiver.wait([](Recorder& r) { return r.closed_.has_value(); }));
    EXPECT_EQ(receiver.closed_->code, Errc::ProtocolViolation);
    EXPECT_NE(receiver.closed_->detail.find("reserved"), std::string::npos)
        << receiver.closed_->detail;
    EXPECT_EQ(receiver.received_.size(), 1u);  // the good one; nothing past the bad one
    // The peer reads an ERROR frame naming the problem, then EOF.
    std::vector<std::byte> reply(1024);
    timeval tv{.tv_sec = 5, .tv_usec = 0};
    ::setsockopt(raw, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ssize_t n = ::recv(raw, reply.data(), reply.size(), MSG_WAITALL);
    ASSERT_GT(n, static_cast<ssize_t>(kHeaderSize));
    FrameDecoder decoder;
    decoder.feed(std::span(reply.data(), static_cast<std::size_t>(n)));
    auto frame = decoder.next();
    ASSERT_TRUE(frame && frame->has_value());
    EXPECT_EQ((*frame)->header.type, FrameType::Error);
    auto error = decode_error((*frame)->payload);
    ASSERT_TRUE(error);
    EXPECT_EQ(error->code, ErrorCode::BadFrame);
    ::close(raw);
}

TEST_P(DataPathTest, HandshakeFrameAfterJoiningIsAProtocolViolation) {
    auto pair = test::joined_pair();
    ASSERT_TRUE(pair->error.empty()) << pair->error;
    int raw = pair->client->socket().release();
    Recorder receiver;
    Running path(options());
    path->add(std::move(*pair->server), receiver);
    auto hello = frame_of(FrameType::Hello, Hello{.role = Role::Urgent, .auth = AuthMode::None});
    ASSERT_EQ(::send(raw, hello.data(), hello.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(hello.size()));
    ASSERT_TRUE(receiver.wait([](Recorder& r) { return r.closed_.has_value(); }));
    EXPECT_EQ(receiver.closed_->code, Errc::ProtocolViolation);
    ::close(raw);
}

TEST_P(DataPathTest, PeerClosingInsideAFrameIsPeerLost) {
    auto pair = test::joined_pair();
    ASSERT_TRUE(pair->error.empty()) << pair->error;
    int raw = pair->client->socket().release();
    Recorder receiver;
    Running path(options());
    path->add(std::move(*pair->server), receiver);
    auto frame = encode_frame(kApp, pattern(5000, 1));
    ASSERT_EQ(::send(raw, frame.data(), 3000, MSG_NOSIGNAL), 3000);
    ::close(raw);
    ASSERT_TRUE(receiver.wait([](Recorder& r) { return r.closed_.has_value(); }));
    EXPECT_EQ(receiver.closed_->code, Errc::PeerLost);
    EXPECT_NE(receiver.closed_->detail.find("inside a frame"), std::string::npos)
        << receiver.closed_->detail;
    EXPECT_TRUE(receiver.received_.empty());
}

TEST_P(DataPathTest, ResetByPeerIsPeerLost) {
    auto pair = test::joined_pair();
    ASSERT_TRUE(pair->error.empty()) << pair->error;
    int raw = pair->client->socket().release();
    Recorder receiver;
    Running path(options());
    path->add(std::move(*pair->server), receiver);
    linger hard{.l_onoff = 1, .l_linger = 0};
    ::setsockopt(raw, SOL_SOCKET, SO_LINGER, &hard, sizeof hard);
    ::close(raw);  // RST
    ASSERT_TRUE(receiver.wait([](Recorder& r) { return r.closed_.has_value(); }));
    EXPECT_EQ(receiver.closed_->code, Errc::PeerLost);
}

TEST_P(DataPathTest, PeerThatStopsReadingIsFoundByTheStallTimeout) {
    auto pair = test::joined_pair();
    ASSERT_TRUE(pair->error.empty()) << pair->error;
    int raw = pair->client->socket().release();  // never read
    DataPathOptions o = options();
    o.liveness.stall_timeout = 300ms;
    o.liveness.idle_timeout = 0ms;
    Recorder sender;
    Running path(o);
    auto data = pattern(1 << 20, 9);
    for (int i = 0; i < 64; ++i) {
        sender.queue(data, static_cast<std::uint64_t>(i));
    }
    auto start = std::chrono::steady_clock::now();
    ChannelId id = path->add(std::move(*pair->server), sender);
    path->want_send(id);
    ASSERT_TRUE(sender.wait([](Recorder& r) { return r.closed_.has_value(); }));
    EXPECT_EQ(sender.closed_->code, Errc::PeerLost);
    EXPECT_NE(sender.closed_->detail.find("stopped reading"), std::string::npos)
        << sender.closed_->detail;
    EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
    ::close(raw);
}

TEST_P(DataPathTest, SilentPeerIsFoundByTheIdleTimeout) {
    auto pair = test::joined_pair();
    ASSERT_TRUE(pair->error.empty()) << pair->error;
    int raw = pair->client->socket().release();  // connected, says nothing, answers no PING
    DataPathOptions o = options();
    o.liveness.idle_timeout = 300ms;
    o.liveness.heartbeat_interval = 100ms;
    Recorder receiver;
    Running path(o);
    path->add(std::move(*pair->server), receiver);
    ASSERT_TRUE(receiver.wait([](Recorder& r) { return r.closed_.has_value(); }));
    EXPECT_EQ(receiver.closed_->code, Errc::PeerLost);
    EXPECT_NE(receiver.closed_->detail.find("nothing received"), std::string::npos)
        << receiver.closed_->detail;
    ::close(raw);
}

TEST_P(DataPathTest, HeartbeatsKeepAnIdleHealthyChannelOpen) {
    auto pair = test::joined_pair();
    ASSERT_TRUE(pair->error.empty()) << pair->error;
    DataPathOptions o = options();
    o.liveness.idle_timeout = 400ms;
    o.liveness.heartbeat_interval = 50ms;
    Recorder left;
    Recorder right;
    Running a(o);
    Running b(o);
    a->add(std::move(*pair->client), left);
    b->add(std::move(*pair->server), right);
    // Decided by the heartbeats themselves, not by a sleep: at most two PINGs go per interval
    // (one a side), so 32 of them span at least 16 intervals = two idle timeouts.
    auto pings = [&] { return a->stats().pings_sent + b->stats().pings_sent; };
    auto closed = [](Recorder& r) {
        std::lock_guard lock(r.mutex_);
        return r.closed_.has_value();
    };
    auto give_up = std::chrono::steady_clock::now() + 30s;
    while (pings() < 32 && !closed(left) && !closed(right) &&
           std::chrono::steady_clock::now() < give_up) {
        std::this_thread::sleep_for(10ms);
    }
    EXPECT_GE(pings(), 32u) << "the heartbeats stopped";
    {
        std::lock_guard lock(left.mutex_);
        EXPECT_FALSE(left.closed_.has_value()) << left.closed_->detail;
    }
    {
        std::lock_guard lock(right.mutex_);
        EXPECT_FALSE(right.closed_.has_value()) << right.closed_->detail;
    }
}

TEST_P(DataPathTest, AbortTellsThePeerWhyAndEndsBothSides) {
    auto pair = test::joined_pair();
    ASSERT_TRUE(pair->error.empty()) << pair->error;
    Recorder left;
    Recorder right;
    Running a(options());
    Running b(options());
    ChannelId id = a->add(std::move(*pair->client), left);
    b->add(std::move(*pair->server), right);
    a->abort(id, failure(Errc::ProtocolViolation, "page 7 is outside region 0"));
    ASSERT_TRUE(left.wait([](Recorder& r) { return r.closed_.has_value(); }));
    ASSERT_TRUE(right.wait([](Recorder& r) { return r.closed_.has_value(); }));
    EXPECT_EQ(left.closed_->code, Errc::ProtocolViolation);
    EXPECT_EQ(right.closed_->code, Errc::PeerAborted) << "an ERROR is the peer's decision";
    EXPECT_NE(right.closed_->detail.find("page 7 is outside region 0"), std::string::npos)
        << right.closed_->detail;
}

TEST_P(DataPathTest, StopEndsEveryChannelWithClosed) {
    auto pair = test::joined_pair();
    ASSERT_TRUE(pair->error.empty()) << pair->error;
    Recorder left;
    {
        Running a(options());
        a->add(std::move(*pair->client), left);
        std::this_thread::sleep_for(50ms);
    }
    ASSERT_TRUE(left.closed_.has_value());
    EXPECT_EQ(left.closed_->code, Errc::Closed);
}

TEST_P(DataPathTest, PayloadLargerThanAllowedIsRefusedBeforeSending) {
    auto pair = test::joined_pair();
    ASSERT_TRUE(pair->error.empty()) << pair->error;
    Recorder sender;
    Running a(options());
    auto data = pattern(kMaxPayload + 1, 1);
    sender.queue(data, 1);
    ChannelId id = a->add(std::move(*pair->client), sender);
    a->want_send(id);
    ASSERT_TRUE(sender.wait([](Recorder& r) { return r.closed_.has_value(); }));
    EXPECT_EQ(sender.closed_->code, Errc::InvalidArgument);
    EXPECT_TRUE(sender.sent_.empty());
}

INSTANTIATE_TEST_SUITE_P(Backends, DataPathTest, ::testing::Values(Backend::IoUring, Backend::Asio),
                         [](const auto& info) {
                             return std::string(to_string(info.param)) == "io_uring"
                                        ? std::string("IoUring")
                                        : std::string("Asio");
                         });

TEST(DataPathChoice, EnvironmentForcesTheAsioBackendForAuto) {
    ::setenv("UFFDM_DATA_PATH", "asio", 1);
    auto forced = DataPath::create({});
    ::unsetenv("UFFDM_DATA_PATH");
    ASSERT_TRUE(forced);
    EXPECT_EQ((*forced)->backend(), Backend::Asio);
    auto chosen = DataPath::create({});
    ASSERT_TRUE(chosen);
    EXPECT_EQ((*chosen)->backend(), Backend::IoUring);  // this kernel has io_uring
}

TEST(DataPathChoice, ImpossibleOptionsAreRefused) {
    DataPathOptions o;
    o.send_window_frames = 0;
    EXPECT_FALSE(DataPath::create(o));
    o = {};
    o.max_payload = kMaxPayload + 1;
    EXPECT_FALSE(DataPath::create(o));
}

}  // namespace
}  // namespace uffdm::transport
