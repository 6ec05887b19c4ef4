// transport_bench.cpp — Data path throughput and urgent round trips against raw TCP floors.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>

#include "bench/bench_support.hpp"
#include "tests/support/tls_support.hpp"
#include "tests/support/transport_support.hpp"
#include "transport/data_path.hpp"

namespace uffdm::bench {
namespace {

using namespace transport;
using Clock = std::chrono::steady_clock;

constexpr auto kApp = static_cast<FrameType>(0x41);
constexpr std::size_t kBulkFrame = 256 << 10;             // a 64-page run
constexpr std::uint64_t kBulkBytesPerRun = 512ULL << 20;  // per iteration, over all connections
constexpr std::size_t kSourceBytes = 64 << 20;            // "guest memory" the frames come from
constexpr std::size_t kPageBytes = 4096;
constexpr std::size_t kRequestBytes = 24;  // what a fault request carries

Backend backend_of(std::int64_t arg) {
    return arg == 0 ? Backend::IoUring : Backend::Asio;
}

std::vector<std::byte> filled(std::size_t size) {
    std::vector<std::byte> out(size);
    for (std::size_t i = 0; i < size; ++i) {
        out[i] = static_cast<std::byte>(i * 131 + 7);
    }
    return out;
}

// Two connected loopback TCP sockets, blocking, TCP_NODELAY: the raw floor's connection.
std::pair<int, int> raw_tcp_pair() {
    int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    ::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    ::listen(listener, 1);
    ::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len);
    int client = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ::connect(client, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    int server = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    ::close(listener);
    int one = 1;
    ::setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    ::setsockopt(server, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return {client, server};
}

bool read_exactly(int fd, std::byte* data, std::size_t size) {
    while (size > 0) {
        ssize_t n = ::recv(fd, data, size, 0);
        if (n <= 0) {
            return false;
        }
        data += n;
        size -= static_cast<std::size_t>(n);
    }
    return true;
}

bool write_exactly(int fd, const std::byte* data, std::size_t size) {
    while (size > 0) {
        ssize_t n = ::send(fd, data, size, MSG_NOSIGNAL);
        if (n <= 0) {
            return false;
        }
        data += n;
        size -= static_cast<std::size_t>(n);
    }
    return true;
}

// ---- floors -------------------------------------------------------------------------------

// One stream, one sending and one receiving thread, blocking send/recv of 1 MiB buffers: what
// the kernel's loopback TCP moves without any framing.
void BM_RawTcpThroughput(benchmark::State& state) {
    auto [client, server] = raw_tcp_pair();
    auto source = filled(kSourceBytes);
    std::vector<std::byte> sink(1 << 20);
    for (auto _ : state) {
        auto start = Clock::now();
        std::thread receiver([&, fd = server] {
            std::uint64_t got = 0;
            while (got < kBulkBytesPerRun) {
                ssize_t n = ::recv(fd, sink.data(), sink.size(), 0);
                if (n <= 0) {
                    return;
                }
                got += static_cast<std::uint64_t>(n);
            }
        });
        std::uint64_t sent = 0;
        while (sent < kBulkBytesPerRun) {
            std::size_t at = sent % kSourceBytes;
            std::size_t n = std::min<std::size_t>(1 << 20, kSourceBytes - at);
            write_exactly(client, source.data() + at, n);
            sent += n;
        }
        receiver.join();
        double seconds = std::chrono::duration<double>(Clock::now() - start).count();
        state.SetIterationTime(seconds);
        Floors::instance().set("raw_tcp_bytes_per_s",
                               static_cast<double>(kBulkBytesPerRun) / seconds, state.iterations());
    }
    state.SetBytesProcessed(static_cast<std::int64_t>(kBulkBytesPerRun) * state.iterations());
    ::close(client);
    ::close(server);
}

// A request of kRequestBytes, answered by one 4 KiB page, on blocking sockets between two
// threads: the least a remote page fetch can cost on this connection type.
void BM_RawTcpPingPong4K(benchmark::State& state) {
    auto [client, server] = raw_tcp_pair();
    std::thread peer([fd = server] {
        std::vector<std::byte> request(kRequestBytes);
        auto page = filled(kPageBytes);
        while (read_exactly(fd, request.data(), request.size())) {
            write_exactly(fd, page.data(), page.size());
        }
    });
    std::vector<std::byte> request(kRequestBytes);
    std::vector<std::byte> page(kPageBytes);
    std::vector<double> samples;
    for (auto _ : state) {
        auto start = Clock::now();
        write_exactly(client, request.data(), request.size());
        read_exactly(client, page.data(), page.size());
        double ns = std::chrono::duration<double, std::nano>(Clock::now() - start).count();
        samples.push_back(ns);
        state.SetIterationTime(ns / 1e9);
    }
    ::shutdown(client, SHUT_WR);
    peer.join();
    ::close(client);
    ::close(server);
    Latency latency = report_latency(state, samples);
    Floors::instance().set("raw_rtt_p50_ns", latency.p50_ns, state.iterations());
    Floors::instance().set("raw_rtt_p99_ns", latency.p99_ns, state.iterations());
}

// ---- the data path ------------------------------------------------------------------------

class Loop {
  public:
    explicit Loop(Backend backend) {
        DataPathOptions options;
        options.backend = backend;
        path_ = std::move(*DataPath::create(options));
        thread_ = std::thread([this] { path_->run(); });
    }
    ~Loop() {
        path_->stop();
        thread_.join();
    }
    DataPath& operator*() { return *path_; }
    DataPath* operator->() { return path_.get(); }

  private:
    std::unique_ptr<DataPath> path_;
    std::thread thread_;
};

// Streams kBulkFrame frames borrowed from "guest memory" while it has quota.
class Streamer final : public ChannelHandler {
  public:
    explicit Streamer(std::span<const std::byte> source) : source_(source) {}
    void grant(std::uint64_t frames) { quota_.fetch_add(frames); }
    void on_frame(ChannelId, const FrameView&) override {}
    std::optional<OutgoingFrame> next_frame(ChannelId) override {
        if (quota_.load(std::memory_order_relaxed) == 0) {
            return std::nullopt;
        }
        quota_.fetch_sub(1, std::memory_order_relaxed);
        OutgoingFrame frame{.type = kApp};
        frame.borrowed[0] = source_.subspan(cursor_, kBulkFrame);
        cursor_ = (cursor_ + kBulkFrame) % source_.size();
        return frame;
    }
    void on_closed(ChannelId, const Failure&) override {}

  private:
    std::span<const std::byte> source_;
    std::size_t cursor_ = 0;
    std::atomic<std::uint64_t> quota_{0};
};

// Counts bytes received and wakes the benchmark thread when a target is reached.
class Sink final : public ChannelHandler {
  public:
    void on_frame(ChannelId, const FrameView& frame) override {
        std::uint64_t now = bytes_.fetch_add(frame.payload.size()) + frame.payload.size();
        if (now >= target_.load()) {
            std::lock_guard lock(mutex_);
            done_.notify_all();
        }
    }
    void on_closed(ChannelId, const Failure&) override {}
    void expect(std::uint64_t more) { target_.store(bytes_.load() + more); }
    void wait() {
        std::unique_lock lock(mutex_);
        done_.wait(lock, [&] { return bytes_.load() >= target_.load(); });
    }

  private:
    std::atomic<std::uint64_t> bytes_{0};
    std::atomic<std::uint64_t> target_{~0ULL};
    std::mutex mutex_;
    std::condition_variable done_;
};

// Background stream over N connections: one sending and one receiving data path, as the
// source and destination run them; with tls=1 every connection is mutual TLS 1.3.
void BM_BulkThroughput(benchmark::State& state) {
    Backend backend = backend_of(state.range(0));
    auto connections = static_cast<std::size_t>(state.range(1));
    bool tls = state.range(2) != 0;
    std::optional<test::TestPki> pki;
    std::shared_ptr<TlsContext> server_tls;
    std::shared_ptr<TlsContext> client_tls;
    if (tls) {
        pki.emplace();
        if (!pki->available()) {
            state.SkipWithError(pki->why().c_str());
            return;
        }
        server_tls =
            *TlsContext::create(TlsContext::Side::Server, {.certificate = pki->pem("server"),
                                                           .private_key = pki->key("server"),
                                                           .trusted_ca = pki->pem("ca"),
                                                           .server_name = ""});
        client_tls =
            *TlsContext::create(TlsContext::Side::Client, {.certificate = pki->pem("client"),
                                                           .private_key = pki->key("client"),
                                                           .trusted_ca = pki->pem("ca"),
                                                           .server_name = "localhost"});
    }
    auto source = filled(kSourceBytes);
    // Handlers first: they must outlive the loops' channels.
    std::vector<std::unique_ptr<Streamer>> streamers;
    Sink sink;
    std::vector<std::unique_ptr<test::JoinedPair>> pairs;
    Loop sender(backend);
    Loop receiver(backend);
    std::vector<ChannelId> out;
    for (std::size_t i = 0; i < connections; ++i) {
        pairs.push_back(test::joined_pair("tcp:127.0.0.1:0", nullptr, server_tls, client_tls));
        if (!pairs.back()->error.empty()) {
            state.SkipWithError(pairs.back()->error.c_str());
            return;
        }
        streamers.push_back(std::make_unique<Streamer>(source));
        out.push_back(sender->add(std::move(*pairs.back()->client), *streamers.back()));
        receiver->add(std::move(*pairs.back()->server), sink);
    }
    std::uint64_t frames = kBulkBytesPerRun / kBulkFrame;
    std::vector<double> rates;
    for (auto _ : state) {
        auto start = Clock::now();
        sink.expect(frames * kBulkFrame);
        for (std::size_t i = 0; i < connections; ++i) {
            streamers[i]->grant(frames / connections + (i < frames % connections ? 1 : 0));
            sender->want_send(out[i]);
        }
        sink.wait();
        double seconds = std::chrono::duration<double>(Clock::now() - start).count();
        state.SetIterationTime(seconds);
        rates.push_back(static_cast<double>(frames * kBulkFrame) / seconds);
    }
    add_ratio(state, "x_raw", percentile(rates, 50), "raw_tcp_bytes_per_s");
    state.SetBytesProcessed(static_cast<std::int64_t>(frames * kBulkFrame) * state.iterations());
    state.SetLabel(sender->describe());
}

// The requester side of an urgent round trip, driven from its loop: each answer sends the next
// request at once, so only the data path and the wire are measured.
class Requester final : public ChannelHandler {
  public:
    void on_frame(ChannelId, const FrameView& frame) override {
        if (frame.payload.size() != kPageBytes) {
            return;  // bulk frames on a shared connection
        }
        auto ns = std::chrono::duration<double, std::nano>(Clock::now() - sent_at_).count();
        std::lock_guard lock(mutex_);
        samples_.push_back(ns);
        if (samples_.size() >= wanted_) {
            done_.notify_all();
            return;
        }
        pending_ = true;
    }
    std::optional<OutgoingFrame> next_frame(ChannelId) override {
        std::lock_guard lock(mutex_);
        if (!pending_) {
            return std::nullopt;
        }
        pending_ = false;
        OutgoingFrame frame{.type = kApp};
        std::array<std::byte, kRequestBytes> request{};
        (void)frame.set_inline(request);
        sent_at_ = Clock::now();
        return frame;
    }
    void on_closed(ChannelId, const Failure&) override {}

    std::vector<double> run(DataPath& path, ChannelId channel, std::size_t count) {
        {
            std::lock_guard lock(mutex_);
            samples_.clear();
            wanted_ = count;
            pending_ = true;
        }
        path.want_send(channel);
        std::unique_lock lock(mutex_);
        done_.wait(lock, [&] { return samples_.size() >= wanted_; });
        return samples_;
    }

  private:
    std::mutex mutex_;
    std::condition_variable done_;
    std::vector<double> samples_;
    std::size_t wanted_ = 0;
    bool pending_ = false;
    Clock::time_point sent_at_;
};

// Answers each request with one 4 KiB page; with `bulk` set it also streams bulk frames on the
// same connection, and answers queue behind them (the shape a single-connection design has).
class Responder final : public ChannelHandler {
  public:
    Responder(std::span<const std::byte> page, std::span<const std::byte> bulk)
        : page_(page), bulk_(bulk) {}
    void on_frame(ChannelId, const FrameView& frame) override {
        if (frame.payload.size() == kRequestBytes) {
            ++answers_;
        }
    }
    std::optional<OutgoingFrame> next_frame(ChannelId) override {
        OutgoingFrame frame{.type = kApp};
        if (answers_ > 0) {
            --answers_;
            frame.borrowed[0] = page_;
            return frame;
        }
        if (!bulk_.empty() && streaming_) {
            frame.borrowed[0] = bulk_;
            return frame;
        }
        return std::nullopt;
    }
    void on_closed(ChannelId, const Failure&) override {}
    std::atomic<bool> streaming_{true};

  private:
    std::span<const std::byte> page_;
    std::span<const std::byte> bulk_;
    std::size_t answers_ = 0;
};

// Urgent round trip: a 24-byte request answered by a 4 KiB page.
//   load 0: idle;
//   load 1: the bulk stream saturating separate connections (the urgent channel design);
//   load 2: the bulk stream on the same connection as the requests (no urgent channel).
void BM_UrgentRoundTrip(benchmark::State& state) {
    Backend backend = backend_of(state.range(0));
    int load = static_cast<int>(state.range(1));
    auto page = filled(kPageBytes);
    auto source = filled(kSourceBytes);
    Requester requester;
    Responder responder(page, load == 2 ? std::span<const std::byte>(source).first(kBulkFrame)
                                        : std::span<const std::byte>{});
    Streamer streamer(source);
    Sink sink;
    auto urgent = test::joined_pair();
    auto bulk = test::joined_pair();
    if (!urgent->error.empty() || !bulk->error.empty()) {
        state.SkipWithError("loopback pair failed");
        return;
    }
    Loop client(backend);
    Loop server(backend);
    // Bulk gets loops of its own, as on both migration sides: the urgent loops never carry it.
    Loop bulk_sender(backend);
    Loop bulk_receiver(backend);
    ChannelId request_channel = client->add(std::move(*urgent->client), requester);
    ChannelId answer_channel = server->add(std::move(*urgent->server), responder);
    ChannelId stream_channel = bulk_sender->add(std::move(*bulk->client), streamer);
    bulk_receiver->add(std::move(*bulk->server), sink);
    if (load == 1) {
        streamer.grant(~0ULL >> 1);
        bulk_sender->want_send(stream_channel);
    } else if (load == 2) {
        server->want_send(answer_channel);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));  // let the stream saturate
    std::vector<double> all;
    constexpr std::size_t kBatch = 1000;
    for (auto _ : state) {
        auto samples = requester.run(*client, request_channel, kBatch);
        double total = 0;
        for (double ns : samples) {
            total += ns;
        }
        state.SetIterationTime(total / 1e9);
        all.insert(all.end(), samples.begin(), samples.end());
    }
    responder.streaming_ = false;
    streamer.grant(0);
    Latency latency = report_latency(state, all);
    add_ratio(state, "p50_x_raw", latency.p50_ns, "raw_rtt_p50_ns");
    add_ratio(state, "p99_x_raw", latency.p99_ns, "raw_rtt_p99_ns");
    std::string key = std::string(to_string(backend)) + "_idle_p99_ns";
    if (load == 0) {
        Floors::instance().set(key, latency.p99_ns, state.iterations());
    } else {
        add_ratio(state, "p99_x_idle", latency.p99_ns, key);
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(all.size()));
}

BENCHMARK(BM_RawTcpThroughput)->UseManualTime()->Iterations(3)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_BulkThroughput)
    ->ArgNames({"asio", "connections", "tls"})
    ->ArgsProduct({{0, 1}, {1, 2, 4}, {0}})
    ->UseManualTime()
    ->Iterations(3)
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_BulkThroughput)
    ->ArgNames({"asio", "connections", "tls"})
    ->ArgsProduct({{0, 1}, {1, 2}, {1}})
    ->UseManualTime()
    ->Iterations(3)
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_RawTcpPingPong4K)->UseManualTime()->Iterations(20000);
BENCHMARK(BM_UrgentRoundTrip)
    ->ArgNames({"asio", "load"})
    ->ArgsProduct({{0, 1}, {0, 1, 2}})
    ->UseManualTime()
    ->Iterations(10);

}  // namespace
}  // namespace uffdm::bench
