// floors.cpp — The same-run floors the benchmark runner compares a migration against.
//
//   uffdm_floors warm   --bytes N                 write N bytes of fresh memory once, then free it
//   uffdm_floors warm-huge --bytes N              the same from the 2 MiB hugetlbfs pool
//   uffdm_floors local  [--faults N] [--memcpy-mib M]   also UFFDIO_COPY into fresh memory
//   uffdm_floors touch  --bytes N [--held M]       first touch of N fresh bytes, M filled first
//   uffdm_floors serve  --listen HOST:PORT        prints "listening on tcp:HOST:PORT"
//   uffdm_floors client --connect HOST:PORT [--round-trips N] [--stream-mib M] [--place-mib P]
//                       [--marked-probe N]
//
// --marked-probe: what the wire does to an answer while a stream fills it. N round trips of a
// 24-byte request and a 4 KiB answer, 200 us apart, three ways: marked like the urgent
// connection (transport::TrafficMarking's defaults) with nothing else on the link; the same
// beside a stream marked like a bulk connection (SO_PRIORITY, DSCP, TCP_NOTSENT_LOWAT) that
// fills it; and both unmarked. The server marks its side the same way (the answers and the
// stream leave through the same egress queue there).
//
// --place-mib: the background stream's work on the destination without the protocol, P MiB
// received in 256 KiB runs and placed into fresh registered anonymous memory, three ways:
//   serial    one thread receives a run, then places it with UFFDIO_COPY (today's bulk loop);
//   pipeline  one thread receives into a ring of runs, another places from it (UFFDIO_COPY):
//             the bound of a receive-and-place pipeline on this machine;
//   move      as pipeline, but each run is received into page-aligned anonymous buffers and
//             moved into place (UFFDIO_MOVE, no second copy); a moved buffer's pages are gone,
//             so the next receive into it faults in fresh ones: the refill is counted.
// and into a shmem (memfd) guest, one thread, two ways:
//   shmem_copy      receive into the ring, UFFDIO_COPY into the registered (MISSING) mapping;
//   shmem_continue  receive straight into a second, unregistered mapping of the same memfd (the
//                   page cache: one copy in all), then UFFDIO_CONTINUE maps the run in the
//                   registered (MINOR) one;
//   shmem_splice    the same with the bytes spliced from the socket through a pipe into the
//                   memfd (the kernel copies once, from the socket buffers to the page cache,
//                   with no page zeroed first), then UFFDIO_CONTINUE.
//
// local, client: one JSON object on stdout. serve and client are separate processes so that
// they can sit in two network namespaces across a veth link, as the migration's two sides do.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "transport/traffic_class.hpp"
#include "uffd/event_fd.hpp"
#include "uffd/fault_reader.hpp"
#include "uffd/mapping.hpp"
#include "uffd/userfault_fd.hpp"

namespace {

using Clock = std::chrono::steady_clock;

constexpr std::size_t kRequestBytes = 24;  // a REQUEST frame: 16-byte header + 8 bytes
constexpr std::size_t kPageBytes = 4096;
constexpr std::size_t kChunk = 1U << 20;

// kPingMarked and kStreamMarked: the server marks its socket urgent or bulk first.
enum Mode : std::uint64_t { kPing = 1, kStream = 2, kQuit = 3, kPingMarked = 4, kStreamMarked = 5 };

[[noreturn]] void die(const std::string& why) {
    std::fprintf(stderr, "uffdm_floors: %s\n", why.c_str());
    std::exit(1);
}

double since_us(Clock::time_point start) {
    return std::chrono::duration<double, std::micro>(Clock::now() - start).count();
}

nlohmann::json summary_us(std::vector<double> samples) {
    std::sort(samples.begin(), samples.end());
    auto at = [&](double q) {
        return samples[static_cast<std::size_t>(q * static_cast<double>(samples.size() - 1))];
    };
    double sum = 0;
    for (double s : samples) {
        sum += s;
    }
    return {{"count", samples.size()}, {"mean", sum / static_cast<double>(samples.size())},
            {"p50", at(0.5)},          {"p90", at(0.9)},
            {"p99", at(0.99)},         {"p99.9", at(0.999)},
            {"max", samples.back()}};
}

// Fresh anonymous memory, written once: on a VM whose host backs guest RAM on first touch, a
// page never used since boot costs a hypervisor fault, which no migration figure should carry.
void warm(std::uint64_t bytes, bool huge) {
    std::uint64_t done = 0;
    auto start = Clock::now();
    std::vector<std::pair<void*, std::uint64_t>> held;  // each GiB stays mapped: a fresh one
    while (done < bytes) {
        std::uint64_t step = std::min<std::uint64_t>(bytes - done, 1ULL << 30);
        int flags = MAP_PRIVATE | MAP_ANONYMOUS | (huge ? MAP_HUGETLB : 0);
        void* p = ::mmap(nullptr, step, PROT_READ | PROT_WRITE, flags, -1, 0);
        if (p == MAP_FAILED) {
            die("warm: mmap: " + std::string(std::strerror(errno)));
        }
        std::memset(p, 1, step);
        done += step;
        std::fprintf(stderr, "\rwarming memory: %llu of %llu MiB",
                     static_cast<unsigned long long>(done >> 20),
                     static_cast<unsigned long long>(bytes >> 20));
        held.emplace_back(p, step);
    }
    std::fprintf(stderr, " (%.1f s)\n", since_us(start) / 1e6);
    for (auto [p, step] : held) {
        ::munmap(p, step);
    }
}

// Fresh anonymous memory made present by writing each page once, in bytes per second: the bound
// on placing a guest of this size into memory nobody touched yet. `held` bytes are filled first
// and stay mapped meanwhile (the source's copy of the guest, on a one-host run), so that the
// timed pages come from where the destination's would. On a virtual machine whose freed memory
// goes back to the host (free page reporting), each of them is a fault in the host as well.
double first_touch(std::uint64_t bytes, std::uint64_t held) {
    auto map = [](std::uint64_t size) {
        void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) {
            die("touch: mmap: " + std::string(std::strerror(errno)));
        }
        return static_cast<char*>(p);
    };
    char* source = held > 0 ? map(held) : nullptr;
    if (source != nullptr) {
        std::memset(source, 1, held);
    }
    char* fresh = map(bytes);
    auto start = Clock::now();
    for (std::uint64_t at = 0; at < bytes; at += 4096) {
        fresh[at] = 1;
    }
    double seconds = since_us(start) / 1e6;
    ::munmap(fresh, bytes);
    if (source != nullptr) {
        ::munmap(source, held);
    }
    return static_cast<double>(bytes) / seconds;
}

// A thread touches a missing page of a registered mapping; a reader thread places it with one
// UFFDIO_COPY; the time around the touch is one local fault round trip.
nlohmann::json local_fault_round_trip(std::size_t faults) {
    auto fd = uffdm::uffd::UserfaultFd::open({});
    if (!fd) {
        die("userfaultfd: " + fd.error().message());
    }
    auto mapping = uffdm::uffd::Mapping::create(uffdm::uffd::MemoryKind::Anonymous,
                                                faults * uffdm::uffd::base_page_size());
    if (!mapping) {
        die("mapping: " + mapping.error().message());
    }
    auto registration = fd->register_mapping(*mapping, uffdm::uffd::RegisterModes::missing_only());
    if (!registration) {
        die("register: " + registration.error().message());
    }
    auto stop = uffdm::uffd::EventFd::create();
    std::vector<std::byte> page(uffdm::uffd::base_page_size(), std::byte{0x5a});
    std::thread reader([&] {
        uffdm::uffd::FaultReader faults_in(*fd, *stop);
        for (;;) {
            auto batch = faults_in.next();
            if (!batch || batch->stopped) {
                return;
            }
            for (auto& event : batch->events) {
                if (auto* fault = std::get_if<uffdm::uffd::PageFault>(&event)) {
                    std::uint64_t at = fault->page(page.size());
                    if (!fd->copy(at, page.data(), page.size())) {
                        (void)fd->wake(at, page.size());
                    }
                }
            }
        }
    });
    std::vector<double> samples;
    samples.reserve(faults);
    for (std::size_t i = 0; i < faults; ++i) {
        volatile std::byte* p = mapping->page(i);
        auto start = Clock::now();
        (void)p[0];
        samples.push_back(since_us(start));
    }
    (void)stop->signal();
    reader.join();
    return summary_us(std::move(samples));
}

// UFFDIO_COPY of 256 KiB runs (a bulk frame's worth) into fresh registered memory: what the
// destination does with every page of the background stream.
double placement_gbps(std::size_t mib) {
    auto fd = uffdm::uffd::UserfaultFd::open({});
    if (!fd) {
        die("userfaultfd: " + fd.error().message());
    }
    constexpr std::size_t kRun = 256U << 10;
    std::vector<std::byte> run(kRun, std::byte{0x33});
    std::vector<double> rates;
    for (int i = 0; i < 3; ++i) {
        auto mapping = uffdm::uffd::Mapping::create(uffdm::uffd::MemoryKind::Anonymous, mib << 20);
        if (!mapping) {
            die("mapping: " + mapping.error().message());
        }
        auto registration =
            fd->register_mapping(*mapping, uffdm::uffd::RegisterModes::missing_only());
        if (!registration) {
            die("register: " + registration.error().message());
        }
        auto base = reinterpret_cast<std::uint64_t>(mapping->data());
        auto start = Clock::now();
        for (std::size_t at = 0; at < mapping->size(); at += kRun) {
            if (!fd->copy(base + at, run.data(), kRun)) {
                die("UFFDIO_COPY failed");
            }
        }
        rates.push_back(static_cast<double>(mapping->size()) / (since_us(start) / 1e6) / 1e9);
    }
    std::sort(rates.begin(), rates.end());
    return rates[rates.size() / 2];
}

double memcpy_gbps(std::size_t mib) {
    std::size_t bytes = mib << 20;
    std::vector<char> from(bytes, 1);
    std::vector<char> to(bytes, 2);
    std::vector<double> rates;
    for (int i = 0; i < 5; ++i) {
        auto start = Clock::now();
        std::memcpy(to.data(), from.data(), bytes);
        double seconds = since_us(start) / 1e6;
        rates.push_back(static_cast<double>(bytes) / seconds / 1e9);
        std::swap(from, to);
    }
    std::sort(rates.begin(), rates.end());
    return rates[rates.size() / 2];
}

void send_all(int fd, const void* data, std::size_t size) {
    const char* p = static_cast<const char*>(data);
    while (size > 0) {
        ssize_t n = ::send(fd, p, size, MSG_NOSIGNAL);
        if (n <= 0) {
            die("send: " + std::string(n < 0 ? std::strerror(errno) : "closed"));
        }
        p += n;
        size -= static_cast<std::size_t>(n);
    }
}

bool recv_all(int fd, void* data, std::size_t size) {
    char* p = static_cast<char*>(data);
    while (size > 0) {
        ssize_t n = ::recv(fd, p, size, 0);
        if (n <= 0) {
            return false;
        }
        p += n;
        size -= static_cast<std::size_t>(n);
    }
    return true;
}

void no_delay(int fd) {
    int one = 1;
    (void)::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

sockaddr_in parse_address(const std::string& text) {
    auto colon = text.rfind(':');
    std::string host = text.substr(0, colon);
    if (host.rfind("tcp:", 0) == 0) {
        host = host.substr(4);
    }
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<std::uint16_t>(std::stoi(text.substr(colon + 1))));
    if (colon == std::string::npos || ::inet_pton(AF_INET, host.c_str(), &address.sin_addr) != 1) {
        die("address '" + text + "' is not [tcp:]IPV4:PORT");
    }
    return address;
}

// One connection: {u64 mode, u64 argument}, then a ping-pong or a stream.
void serve_one(int fd, std::uint64_t mode, std::uint64_t argument) {
    static const std::vector<char> data(kChunk, 'x');
    if (mode == kPingMarked || mode == kStreamMarked) {
        (void)uffdm::transport::mark_connection(fd, mode == kPingMarked, {});
    }
    if (mode == kPing || mode == kPingMarked) {
        char request[kRequestBytes];
        for (std::uint64_t i = 0; i < argument && recv_all(fd, request, sizeof request); ++i) {
            send_all(fd, data.data(), kPageBytes);
        }
    } else if (mode == kStream || mode == kStreamMarked) {
        // The client may close a stream early (the probe's stream ends with the probe).
        for (std::uint64_t sent = 0; sent < argument;) {
            ssize_t n = ::send(fd, data.data(), std::min<std::uint64_t>(kChunk, argument - sent),
                               MSG_NOSIGNAL);
            if (n <= 0) {
                break;
            }
            sent += static_cast<std::uint64_t>(n);
        }
    }
    ::close(fd);
}

// Serves each connection on its own thread (a probe runs beside a stream) until a QUIT.
void serve(const std::string& listen_at) {
    sockaddr_in address = parse_address(listen_at);
    int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    (void)::setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof address) < 0 ||
        ::listen(listener, 4) < 0) {
        die("listen on " + listen_at + ": " + std::strerror(errno));
    }
    socklen_t length = sizeof address;
    ::getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length);
    char host[INET_ADDRSTRLEN];
    ::inet_ntop(AF_INET, &address.sin_addr, host, sizeof host);
    std::printf("listening on tcp:%s:%u\n", host, ntohs(address.sin_port));
    std::fflush(stdout);
    std::vector<std::thread> connections;
    for (;;) {
        int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd < 0) {
            die("accept: " + std::string(std::strerror(errno)));
        }
        no_delay(fd);
        std::uint64_t command[2];
        if (!recv_all(fd, command, sizeof command)) {
            ::close(fd);
            continue;
        }
        if (command[0] == kQuit) {
            ::close(fd);
            break;
        }
        connections.emplace_back(serve_one, fd, command[0], command[1]);
    }
    for (auto& connection : connections) {
        connection.join();
    }
    ::close(listener);
}

int connect_to(const sockaddr_in& address, std::uint64_t mode, std::uint64_t argument) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) < 0) {
        die("connect: " + std::string(std::strerror(errno)));
    }
    no_delay(fd);
    std::uint64_t command[2] = {mode, argument};
    send_all(fd, command, sizeof command);
    return fd;
}

enum class PlaceMode { Serial, Pipeline, Move, ShmemCopy, ShmemContinue, ShmemSplice };

// Bytes per second received and placed (see the top of the file).
double receive_and_place(const sockaddr_in& address, std::uint64_t bytes, PlaceMode mode) {
    constexpr std::size_t kRun = 256U << 10;
    constexpr std::size_t kSlots = 16;
    using uffdm::uffd::Feature;
    uffdm::uffd::OpenOptions open;
    open.optional = uffdm::uffd::FeatureSet{Feature::Move, Feature::MinorShmem};
    auto fd = uffdm::uffd::UserfaultFd::open(open);
    if (!fd) {
        die("userfaultfd: " + fd.error().message());
    }
    if (mode == PlaceMode::Move && !fd->granted().has(Feature::Move)) {
        return 0;  // no UFFDIO_MOVE on this kernel
    }
    const bool shmem = mode == PlaceMode::ShmemCopy || mode == PlaceMode::ShmemContinue ||
                       mode == PlaceMode::ShmemSplice;
    auto mapping = uffdm::uffd::Mapping::create(
        shmem ? uffdm::uffd::MemoryKind::Shmem : uffdm::uffd::MemoryKind::Anonymous, bytes);
    if (!mapping) {
        die("mapping: " + mapping.error().message());
    }
    auto registration = fd->register_mapping(
        *mapping, mode == PlaceMode::ShmemContinue || mode == PlaceMode::ShmemSplice
                      ? uffdm::uffd::RegisterModes{.minor = true}
                      : uffdm::uffd::RegisterModes::missing_only());
    if (!registration) {
        die("register: " + registration.error().message());
    }
    std::optional<uffdm::uffd::Mapping> cache;  // ShmemContinue: the unregistered second view
    int pipe[2] = {-1, -1};                     // ShmemSplice
    if (mode == PlaceMode::ShmemSplice) {
        if (::pipe2(pipe, O_CLOEXEC) < 0) {
            die("pipe: " + std::string(std::strerror(errno)));
        }
        ::fcntl(pipe[1], F_SETPIPE_SZ, static_cast<int>(kRun));
    }
    if (mode == PlaceMode::ShmemContinue) {
        auto alias = mapping->alias();
        if (!alias) {
            die("alias: " + alias.error().message());
        }
        cache.emplace(std::move(*alias));
    }
    auto base = reinterpret_cast<std::uint64_t>(mapping->data());
    // The ring: anonymous memory, page-aligned (what MOVE needs), written once first.
    auto* ring = static_cast<std::byte*>(
        ::mmap(nullptr, kRun * kSlots, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    if (ring == MAP_FAILED) {
        die("mmap: " + std::string(std::strerror(errno)));
    }
    std::memset(ring, 1, kRun * kSlots);
    int conn = connect_to(address, kStream, bytes);
    std::uint64_t runs = bytes / kRun;
    auto place = [&](std::uint64_t run) {
        std::byte* slot = ring + (run % kSlots) * kRun;
        std::uint64_t dst = base + run * kRun;
        auto placed = mode == PlaceMode::Move
                          ? fd->move(dst, reinterpret_cast<std::uint64_t>(slot), kRun)
                      : mode == PlaceMode::ShmemContinue || mode == PlaceMode::ShmemSplice
                          ? fd->continue_minor(dst, kRun)
                          : fd->copy(dst, slot, kRun);
        if (!placed || *placed != kRun) {
            die("placing a run failed");
        }
    };
    auto receive = [&](std::uint64_t run) {
        std::byte* into = cache ? cache->data() + run * kRun : ring + (run % kSlots) * kRun;
        if (mode == PlaceMode::ShmemSplice) {
            // Socket to pipe (the skb pages, no copy), pipe to the memfd (the one copy).
            std::size_t left = kRun;
            auto offset = static_cast<loff_t>(run * kRun);
            while (left > 0) {
                ssize_t in = ::splice(conn, nullptr, pipe[1], nullptr, left, SPLICE_F_MOVE);
                if (in <= 0) {
                    die("splicing from the socket: " + std::string(std::strerror(errno)));
                }
                for (ssize_t out = 0; out < in;) {
                    ssize_t n = ::splice(pipe[0], nullptr, mapping->file(), &offset,
                                         static_cast<std::size_t>(in - out), SPLICE_F_MOVE);
                    if (n <= 0) {
                        die("splicing into the memfd: " + std::string(std::strerror(errno)));
                    }
                    out += n;
                }
                left -= static_cast<std::size_t>(in);
            }
            return;
        }
        if (!recv_all(conn, into, kRun)) {
            die("the floor server closed during the stream");
        }
    };
    auto start = Clock::now();
    if (mode != PlaceMode::Pipeline && mode != PlaceMode::Move) {
        for (std::uint64_t run = 0; run < runs; ++run) {
            receive(run);
            place(run);
        }
    } else {
        std::atomic<std::uint64_t> received{0};
        std::atomic<std::uint64_t> placed{0};
        std::thread placer([&] {
            for (std::uint64_t run = 0; run < runs; ++run) {
                for (std::uint64_t seen = received.load(); seen <= run; seen = received.load()) {
                    received.wait(seen);
                }
                place(run);
                placed.store(run + 1);
                placed.notify_one();
            }
        });
        for (std::uint64_t run = 0; run < runs; ++run) {
            for (std::uint64_t done = placed.load(); run - done >= kSlots; done = placed.load()) {
                placed.wait(done);  // the ring is full: back-pressure
            }
            receive(run);
            received.store(run + 1);
            received.notify_one();
        }
        placer.join();
    }
    double seconds = since_us(start) / 1e6;
    ::close(conn);
    if (pipe[0] >= 0) {
        ::close(pipe[0]);
        ::close(pipe[1]);
    }
    ::munmap(ring, kRun * kSlots);
    return static_cast<double>(runs * kRun) / seconds;
}

// N paced round trips on a connection marked urgent (or not), alone or beside a stream marked
// bulk (or not) that a second thread drains until the probe is done.
nlohmann::json probe_round_trips(const sockaddr_in& address, std::size_t round_trips, bool marked,
                                 bool beside_stream) {
    uffdm::transport::TrafficMarking marking;
    marking.enabled = marked;
    int stream = -1;
    std::atomic<bool> probing{true};
    std::thread drain;
    if (beside_stream) {
        stream = connect_to(address, marked ? kStreamMarked : kStream, ~std::uint64_t{0} >> 1);
        (void)uffdm::transport::mark_connection(stream, false, marking);
        drain = std::thread([stream, &probing] {
            std::vector<char> sink(kChunk);
            while (probing.load(std::memory_order_relaxed) &&
                   ::recv(stream, sink.data(), sink.size(), 0) > 0) {
            }
        });
        std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the link fills
    }
    int fd = connect_to(address, marked ? kPingMarked : kPing, round_trips);
    (void)uffdm::transport::mark_connection(fd, true, marking);
    std::vector<char> page(kPageBytes);
    std::vector<double> samples;
    char request[kRequestBytes] = {};
    for (std::size_t i = 0; i < round_trips; ++i) {
        auto start = Clock::now();
        send_all(fd, request, sizeof request);
        if (!recv_all(fd, page.data(), kPageBytes)) {
            die("the floor server closed during the probe");
        }
        samples.push_back(since_us(start));
        std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    ::close(fd);
    if (beside_stream) {
        probing = false;
        ::shutdown(stream, SHUT_RDWR);
        drain.join();
        ::close(stream);
    }
    return summary_us(std::move(samples));
}

nlohmann::json client(const std::string& at, std::size_t round_trips, std::size_t stream_mib,
                      std::size_t place_mib, std::size_t marked_probe) {
    sockaddr_in address = parse_address(at);
    nlohmann::json out;
    int fd = connect_to(address, kPing, round_trips);
    std::vector<char> buffer(kChunk);
    std::vector<double> samples;
    char request[kRequestBytes] = {};
    for (std::size_t i = 0; i < round_trips; ++i) {
        auto start = Clock::now();
        send_all(fd, request, sizeof request);
        if (!recv_all(fd, buffer.data(), kPageBytes)) {
            die("the floor server closed during the ping-pong");
        }
        samples.push_back(since_us(start));
    }
    ::close(fd);
    out["tcp_rtt_us"] = summary_us(std::move(samples));

    std::uint64_t bytes = std::uint64_t{stream_mib} << 20;
    fd = connect_to(address, kStream, bytes);
    auto start = Clock::now();
    std::uint64_t received = 0;
    while (received < bytes) {
        ssize_t n = ::recv(fd, buffer.data(), buffer.size(), 0);
        if (n <= 0) {
            die("the floor server closed during the stream");
        }
        received += static_cast<std::uint64_t>(n);
    }
    double seconds = since_us(start) / 1e6;
    ::close(fd);
    out["tcp_stream_bytes"] = bytes;
    out["tcp_throughput_bytes_per_s"] = static_cast<double>(bytes) / seconds;
    if (place_mib > 0) {
        std::uint64_t place_bytes = std::uint64_t{place_mib} << 20;
        for (auto [name, way] : {std::pair{"serial", PlaceMode::Serial},
                                 {"pipeline", PlaceMode::Pipeline},
                                 {"move", PlaceMode::Move},
                                 {"shmem_copy", PlaceMode::ShmemCopy},
                                 {"shmem_continue", PlaceMode::ShmemContinue},
                                 {"shmem_splice", PlaceMode::ShmemSplice}}) {
            out["receive_place_" + std::string(name) + "_bytes_per_s"] =
                receive_and_place(address, place_bytes, way);
        }
    }
    if (marked_probe > 0) {
        out["marked_rtt_us"] = probe_round_trips(address, marked_probe, true, false);
        out["marked_rtt_beside_stream_us"] = probe_round_trips(address, marked_probe, true, true);
        out["unmarked_rtt_beside_stream_us"] =
            probe_round_trips(address, marked_probe, false, true);
    }
    ::close(connect_to(address, kQuit, 0));
    return out;
}

std::uint64_t number(int argc, char** argv, const char* flag, std::uint64_t fallback) {
    for (int i = 2; i + 1 < argc; ++i) {
        if (std::strcmp(argv[i], flag) == 0) {
            return std::stoull(argv[i + 1]);
        }
    }
    return fallback;
}

std::string text(int argc, char** argv, const char* flag) {
    for (int i = 2; i + 1 < argc; ++i) {
        if (std::strcmp(argv[i], flag) == 0) {
            return argv[i + 1];
        }
    }
    die(std::string(argv[1]) + " needs " + flag);
}

}  // namespace

int main(int argc, char** argv) {
    std::string mode = argc > 1 ? argv[1] : "";
    if (mode == "warm") {
        warm(number(argc, argv, "--bytes", 1ULL << 30), false);
    } else if (mode == "warm-huge") {
        // The hugetlbfs pool: its pages never go back to the host once written, so once is enough.
        warm(number(argc, argv, "--bytes", 1ULL << 30) & ~((2ULL << 20) - 1), true);
    } else if (mode == "local") {
        nlohmann::json out;
        out["local_fault_rtt_us"] = local_fault_round_trip(number(argc, argv, "--faults", 20000));
        out["memcpy_bytes_per_s"] = memcpy_gbps(number(argc, argv, "--memcpy-mib", 256)) * 1e9;
        out["placement_bytes_per_s"] =
            placement_gbps(number(argc, argv, "--memcpy-mib", 256)) * 1e9;
        std::printf("%s\n", out.dump().c_str());
    } else if (mode == "touch") {
        nlohmann::json out;
        std::uint64_t bytes = number(argc, argv, "--bytes", 1ULL << 30);
        out["first_touch_bytes"] = bytes;
        out["first_touch_bytes_per_s"] = first_touch(bytes, number(argc, argv, "--held", 0));
        std::printf("%s\n", out.dump().c_str());
    } else if (mode == "serve") {
        serve(text(argc, argv, "--listen"));
    } else if (mode == "client") {
        auto out =
            client(text(argc, argv, "--connect"), number(argc, argv, "--round-trips", 20000),
                   number(argc, argv, "--stream-mib", 2048), number(argc, argv, "--place-mib", 0),
                   number(argc, argv, "--marked-probe", 0));
        std::printf("%s\n", out.dump().c_str());
    } else {
        std::fprintf(stderr,
                     "usage: uffdm_floors warm --bytes N | local [--faults N] [--memcpy-mib M] | "
                     "serve --listen HOST:PORT | client --connect HOST:PORT [--round-trips N] "
                     "[--stream-mib M] [--place-mib P] [--marked-probe N]\n");
        return 2;
    }
    return 0;
}
