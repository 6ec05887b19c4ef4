// demo_command.cpp — uffd-migrate demo: a real migration between two processes on this host.
#include <uffdm/uffdm.hpp>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>
#include <utility>

#include "cli/commands.hpp"
#include "cli/common_options.hpp"
#include "cli/delay_relay.hpp"
#include "cli/live_guest.hpp"
#include "cli/netns.hpp"
#include "cli/progress.hpp"
#include "cli/signals.hpp"
#include "cli/sizes.hpp"
#include "cli/workload.hpp"

namespace uffdm::cli {

namespace {

struct DemoArguments {
    std::string size = "1G";
    unsigned vcpus = 2;
    std::string workload = "random";
    std::size_t bulk_channels = 1;
    int placement_threads = -1;
    std::string memory = "anonymous";
    bool netns = false;
    std::string link;  // a rate-limited link between the namespaces (implies --netns)
    std::chrono::microseconds rtt{0};  // added round trip (a delay relay)
    bool verify = false;
    bool hold_stream = false;
    std::uint64_t seed = 42;
    std::uint32_t zero_percent = 50;
    std::uint64_t touches = 5000;
    DataPathBackend data_path = DataPathBackend::Auto;
    Timeouts timeouts;
    std::chrono::milliseconds reconnect_timeout{30000};
    std::string json;
    // --precopy: the source's guest runs (writers) during precopy rounds.
    bool precopy = false;
    std::uint32_t max_rounds = 10;
    WriterSpec writers;
    // Passed to the source (serve): the stream's encoding and cap.
    std::string compress = "off";
    bool compress_answers = false;
    int compress_threads = -1;
    SyntheticGuest::Content content = SyntheticGuest::Content::Random;
    TrafficMarking marking;  // both sides
    std::string max_bandwidth;
};

// The source: this program's `serve`, as a child process (in namespace A with --netns).
class SourceProcess {
  public:
    SourceProcess() = default;
    SourceProcess(const SourceProcess&) = delete;
    SourceProcess& operator=(const SourceProcess&) = delete;
    ~SourceProcess() {
        if (pid_ > 0) {
            ::kill(pid_, SIGTERM);
            (void)exit_status(std::chrono::seconds(5));
        }
        if (out_ >= 0) {
            ::close(out_);
        }
    }

    std::expected<void, std::string> start(const std::vector<std::string>& argv) {
        int out[2];
        if (::pipe2(out, O_CLOEXEC) < 0) {
            return std::unexpected(std::string("pipe: ") + std::strerror(errno));
        }
        std::vector<char*> args;
        for (const auto& a : argv) {
            args.push_back(const_cast<char*>(a.c_str()));
        }
        args.push_back(nullptr);
        pid_ = ::fork();
        if (pid_ < 0) {
            return std::unexpected(std::string("fork: ") + std::strerror(errno));
        }
        if (pid_ == 0) {
            ::dup2(out[1], STDOUT_FILENO);
            int null = ::open("/dev/null", O_RDONLY);
            ::dup2(null, STDIN_FILENO);
            ::execvp(args[0], args.data());
            std::fprintf(stderr, "uffd-migrate demo: cannot run %s: %s\n", args[0],
                         std::strerror(errno));
            ::_exit(127);
        }
        ::close(out[1]);
        out_ = out[0];
        return {};
    }

    // The endpoint from the source's first line, "listening on ENDPOINT".
    std::expected<std::string, std::string> endpoint(std::chrono::seconds limit) {
        std::string line;
        auto deadline = std::chrono::steady_clock::now() + limit;
        while (line.empty() || line.back() != '\n') {
            auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                deadline - std::chrono::steady_clock::now());
            pollfd ready{.fd = out_, .events = POLLIN, .revents = 0};
            char c = 0;
            if (left.count() <= 0 || ::poll(&ready, 1, static_cast<int>(left.count())) <= 0 ||
                ::read(out_, &c, 1) != 1) {
                return std::unexpected("the source did not start (see its message above)");
            }
            line += c;
        }
        const std::string prefix = "listening on ";
        if (line.rfind(prefix, 0) != 0) {
            return std::unexpected("the source said: " + line);
        }
        return line.substr(prefix.size(), line.size() - prefix.size() - 1);
    }

    // Waits (bounded) for the source to exit; its exit status, or -1.
    int exit_status(std::chrono::seconds limit) {
        auto deadline = std::chrono::steady_clock::now() + limit;
        while (pid_ > 0) {
            int status = 0;
            pid_t done = ::waitpid(pid_, &status, WNOHANG);
            if (done == pid_) {
                pid_ = -1;
                return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
            }
            if (std::chrono::steady_clock::now() > deadline) {
                ::kill(pid_, SIGKILL);
                ::waitpid(pid_, &status, 0);
                pid_ = -1;
                return -1;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        return -1;
    }

    void terminate() {
        if (pid_ > 0) {
            ::kill(pid_, SIGTERM);
        }
    }

  private:
    pid_t pid_ = -1;
    int out_ = -1;
};

std::expected<std::string, std::string> make_token(const std::string& directory) {
    std::string path = directory + "/token";
    std::ifstream random("/dev/urandom", std::ios::binary);
    unsigned char bytes[32];
    if (!random.read(reinterpret_cast<char*>(bytes), sizeof bytes)) {
        return std::unexpected("cannot read /dev/urandom");
    }
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        return std::unexpected("cannot create " + path + ": " + std::strerror(errno));
    }
    char hex[65];
    for (int i = 0; i < 32; ++i) {
        std::snprintf(hex + 2 * i, 3, "%02x", bytes[i]);
    }
    bool ok = ::write(fd, hex, 64) == 64;
    ::close(fd);
    if (!ok) {
        return std::unexpected("cannot write " + path);
    }
    return path;
}

std::uint64_t resident_bytes() {
    std::ifstream status("/proc/self/status");
    std::string line;
    while (std::getline(status, line)) {
        if (line.rfind("VmRSS:", 0) == 0) {
            return std::stoull(line.substr(6)) * 1024;
        }
    }
    return 0;
}

// The vCPUs' touch latencies: a summary, and the CDF at 200 quantiles (for plots).
nlohmann::json touch_report(std::vector<double>& ns) {
    std::sort(ns.begin(), ns.end());
    auto at = [&](double q) {
        return ns.empty()
                   ? 0.0
                   : ns[static_cast<std::size_t>(q * static_cast<double>(ns.size() - 1))] / 1000.0;
    };
    double sum = 0;
    for (double v : ns) {
        sum += v;
    }
    nlohmann::json cdf = nlohmann::json::array();
    for (int i = 0; i <= 200 && !ns.empty(); ++i) {
        cdf.push_back({at(i / 200.0), i / 200.0});
    }
    return {{"summary",
             {{"count", ns.size()},
              {"mean", ns.empty() ? 0.0 : sum / static_cast<double>(ns.size()) / 1000.0},
              {"p50", at(0.5)},
              {"p90", at(0.9)},
              {"p99", at(0.99)},
              {"p99.9", at(0.999)},
              {"max", at(1.0)}}},
            {"cdf", cdf}};
}

// Samples the destination's progress every 20 ms on a thread of its own, for a throughput
// over time plot: [seconds since start, pages present, bytes received].
class Timeline {
  public:
    explicit Timeline(const Destination& destination)
        : thread_([this, &destination] {
              while (!stop_.load()) {
                  DestinationProgress p = destination.progress();
                  {
                      std::lock_guard lock(mutex_);
                      samples_.push_back({p.seconds, p.pages_present, p.bytes_received});
                  }
                  std::this_thread::sleep_for(std::chrono::milliseconds(20));
              }
          }) {}
    Timeline(const Timeline&) = delete;
    Timeline& operator=(const Timeline&) = delete;
    ~Timeline() { finish(); }

    nlohmann::json finish() {
        stop_.store(true);
        if (thread_.joinable()) {
            thread_.join();
        }
        std::lock_guard lock(mutex_);
        return samples_;
    }

  private:
    std::atomic<bool> stop_{false};
    std::mutex mutex_;  // guards samples_
    nlohmann::json samples_ = nlohmann::json::array();
    std::thread thread_;
};

std::string self_path() {
    char buffer[4096];
    ssize_t n = ::readlink("/proc/self/exe", buffer, sizeof buffer - 1);
    return n > 0 ? std::string(buffer, static_cast<std::size_t>(n)) : "uffd-migrate";
}

// Why the demo stops early, and its exit status (2: the arguments).
struct Stop {
    std::string why;
    int status = 1;
};

// A private directory for the token and the source's report, removed with what it holds.
class ScratchDirectory {
  public:
    static std::expected<ScratchDirectory, std::string> create() {
        char path[] = "/tmp/uffdm-demo-XXXXXX";
        if (::mkdtemp(path) == nullptr) {
            return std::unexpected(std::string("mkdtemp: ") + std::strerror(errno));
        }
        return ScratchDirectory(path);
    }
    ScratchDirectory(ScratchDirectory&& other) noexcept : path_(std::exchange(other.path_, {})) {}
    ScratchDirectory& operator=(ScratchDirectory&&) = delete;
    ~ScratchDirectory() {
        if (!path_.empty()) {
            std::error_code ignored;  // best effort: /tmp is cleaned anyway
            std::filesystem::remove_all(path_, ignored);
        }
    }
    [[nodiscard]] const std::string& path() const noexcept { return path_; }

  private:
    explicit ScratchDirectory(std::string path) : path_(std::move(path)) {}
    std::string path_;
};

// What the arguments ask for.
struct DemoPlan {
    SyntheticGuest guest;
    MemoryKind kind = MemoryKind::Anonymous;
    Workload workload = Workload::Random;
};

std::expected<DemoPlan, Stop> plan(const DemoArguments& args) {
    auto size = parse_size(args.size);
    auto kind = parse_memory_kind(args.memory);
    auto workload = parse_workload(args.workload);
    if (!size || !kind || !workload) {
        return std::unexpected(Stop{!size   ? size.error()
                                    : !kind ? kind.error().message
                                            : workload.error(),
                                    2});
    }
    if (args.vcpus > 256) {
        return std::unexpected(Stop{"--vcpus " + std::to_string(args.vcpus) + " is not 0..256", 2});
    }
    if (args.hold_stream && (args.vcpus == 0 || args.touches == 0)) {
        return std::unexpected(
            Stop{"--hold-stream needs vCPUs with a bounded number of touches (--vcpus N > 0, "
                 "--touches N > 0): the stream is released when they finish",
                 2});
    }
    DemoPlan plan{.guest = {}, .kind = *kind, .workload = *workload};
    plan.guest.page_size = *kind == MemoryKind::Hugetlb ? (2U << 20) : 4096;
    plan.guest.size = *size;
    plan.guest.regions = 2;
    plan.guest.seed = args.seed;
    plan.guest.zero_percent = args.zero_percent;
    plan.guest.content = args.content;
    if (plan.guest.size == 0 || plan.guest.size % (2 * plan.guest.page_size) != 0) {
        return std::unexpected(Stop{"--size " + args.size + " must be a non-zero multiple of two " +
                                        format_bytes(static_cast<double>(plan.guest.page_size)) +
                                        " pages",
                                    2});
    }
    return plan;
}

// Starts the source (this program's `serve`, in namespace A with --netns) and returns its
// endpoint; with --netns this thread then lives in namespace B.
std::expected<std::string, Stop> spawn(const DemoArguments& args, const DemoPlan& plan,
                                       const std::string& token, const std::string& source_json,
                                       std::optional<NetnsPair>& hosts, SourceProcess& source) {
    std::string listen = "tcp:127.0.0.1:0";
    std::vector<std::string> argv;
    if (args.netns) {
        hosts.emplace("uffdm-demo");
        if (!hosts->available()) {
            return std::unexpected(Stop{"--netns: " + hosts->why()});
        }
        if (!args.link.empty()) {
            if (auto why = hosts->shape(args.link); !why.empty()) {
                return std::unexpected(Stop{"--link " + args.link + ": " + why});
            }
        }
        listen = std::string("tcp:") + NetnsPair::kAddressA + ":0";
        argv = {"ip", "netns", "exec", hosts->a()};
    }
    const char* data_paths[] = {"auto", "io_uring", "asio"};
    const SyntheticGuest& guest = plan.guest;
    argv.insert(argv.end(), {self_path(),
                             "serve",
                             "--listen",
                             listen,
                             "--synthetic",
                             std::to_string(guest.size),
                             "--page-size",
                             std::to_string(guest.page_size),
                             "--seed",
                             std::to_string(guest.seed),
                             "--regions",
                             std::to_string(guest.regions),
                             "--zero-percent",
                             std::to_string(guest.zero_percent),
                             "--token-file",
                             token,
                             "--json",
                             source_json,
                             "--data-path",
                             data_paths[static_cast<int>(args.data_path)],
                             "--reconnect-timeout",
                             std::to_string(args.reconnect_timeout.count()) + "ms",
                             "--idle-timeout",
                             std::to_string(args.timeouts.idle.count()) + "ms",
                             "--stall-timeout",
                             std::to_string(args.timeouts.stall.count()) + "ms",
                             "--handshake-timeout",
                             std::to_string(args.timeouts.handshake.count()) + "ms"});
    if (args.precopy) {
        argv.insert(argv.end(), {"--live", "--memory", args.memory, "--max-rounds",
                                 std::to_string(args.max_rounds), "--source-writers",
                                 std::to_string(args.writers.writers), "--write-rate",
                                 std::to_string(args.writers.pages_per_second), "--hot-set",
                                 std::to_string(args.writers.hot_percent), "--versions-file",
                                 source_json + ".versions"});
    }
    argv.insert(argv.end(),
                {"--compress", args.compress, "--content",
                 guest.content == SyntheticGuest::Content::HostFiles ? "host-files" : "random"});
    auto marking = marking_arguments(args.marking);
    argv.insert(argv.end(), marking.begin(), marking.end());
    if (args.compress_answers) {
        argv.emplace_back("--compress-answers");
    }
    argv.insert(argv.end(), {"--compress-threads", std::to_string(args.compress_threads)});
    if (!args.max_bandwidth.empty()) {
        argv.insert(argv.end(), {"--max-bandwidth", args.max_bandwidth});
    }
    if (auto started = source.start(argv); !started) {
        return std::unexpected(Stop{started.error()});
    }
    auto endpoint = source.endpoint(std::chrono::seconds(60));
    if (!endpoint) {
        return std::unexpected(Stop{endpoint.error()});
    }
    // From here on this thread, and every thread it creates, lives in namespace B.
    if (hosts && (!hosts->enter(hosts->b()) || !hosts->hand_cleanup_to_child())) {
        return std::unexpected(Stop{"cannot enter network namespace " + hosts->b()});
    }
    return *endpoint;
}

// The destination's guest memory, mapped and untouched.
struct DestinationGuest {
    std::vector<GuestMemory> memory;
    std::vector<DestinationRegion> regions;
    std::vector<std::pair<std::byte*, std::size_t>> views;
};

std::expected<DestinationGuest, Stop> map_guest(const DemoPlan& plan) {
    DestinationGuest guest;
    for (std::uint64_t length : synthetic_region_lengths(plan.guest)) {
        auto mapped = GuestMemory::allocate(plan.kind, length);
        if (!mapped) {
            return std::unexpected(Stop{mapped.error().message});
        }
        guest.regions.push_back({mapped->data(), mapped->size(), mapped->page_size(), plan.kind});
        guest.views.emplace_back(mapped->data(), mapped->size());
        guest.memory.push_back(std::move(*mapped));
    }
    return guest;
}

struct Migrated {
    DestinationStats stats;
    VcpuTotals totals;
    nlohmann::json timeline;
    PageVersions versions;  // --precopy: what the source's writers left in each page
};

// The migration, with vCPU threads touching the guest from the moment the destination is
// connected until they have made their touches, or (--touches 0) until every page is present.
// A failed migration, or SIGINT/SIGTERM, ends the process here (exit 1, or 128 + the signal): vCPUs
// may wait on pages that will never come, and are not joined.
std::expected<Migrated, Stop> migrate(const DemoArguments& args, const DemoPlan& plan,
                                      const std::string& endpoint, const std::string& token,
                                      DestinationGuest& guest, SourceProcess& source,
                                      const std::string& source_versions) {
    ProgressBar bar("migrating");
    DestinationOptions options;
    options.connect = endpoint;
    options.security.token_file = token;
    options.bulk_channels = args.bulk_channels;
    options.placement_threads = args.placement_threads;
    options.verify = args.verify;
    options.marking = args.marking;
    options.hold_stream = args.hold_stream;
    options.data_path = args.data_path;
    options.drop_capabilities = true;  // single-threaded here: the source is another process
    options.timeouts = args.timeouts;
    options.reconnect_timeout = args.reconnect_timeout;
    options.on_progress = [&bar](const DestinationProgress& p) {
        bar.update(
            p.pages_present, p.pages_total, p.bytes_received,
            "faults " + std::to_string(p.faults) + (p.paused ? ", PAUSED: reconnecting" : ""));
    };
    report_pauses(options, "uffd-migrate demo");
    auto destination = Destination::create(guest.regions, options);
    if (!destination) {
        return std::unexpected(Stop{destination.error().message});
    }
    std::atomic<Vcpus*> running{nullptr};
    StopOnSignal on_signal([&](int) {
        destination->stop();
        source.terminate();
        if (Vcpus* vcpus = running.load()) {
            vcpus->stop();
        }
    });
    if (auto started = destination->start(); !started) {
        return std::unexpected(Stop{started.error().message});
    }
    // As in a VMM's postcopy: the guest resumes once the migration connection is up (its first
    // faults then measure serving, not connecting). Bounded; a source that never answers ends
    // the migration with its own error below.
    auto connect_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (!destination->progress().connected &&
           std::chrono::steady_clock::now() < connect_deadline && on_signal.received() == 0) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    // From a live source the guest runs only after the switchover; its pages are then the
    // synthetic content with the stamps the source's writers left (their versions file).
    PageVersions versions;
    PageCheck check;
    if (args.precopy) {
        if (auto runnable = destination->wait_until_runnable(); !runnable) {
            DestinationStats stats = destination->wait();
            print_summary(stats, stdout);
            std::fflush(stdout);
            source.terminate();
            std::_Exit(1);
        }
        auto read = read_versions(source_versions);
        if (!read) {
            return std::unexpected(Stop{read.error()});
        }
        versions = std::move(*read);
        check = [&versions, &plan](std::uint32_t r, std::uint64_t p, const void* data) {
            return live_page_matches(plan.guest, versions, r, p, data);
        };
    }
    Timeline timeline(*destination);
    Vcpus vcpus(guest.views, plan.guest, plan.workload, args.vcpus, args.touches, check);
    running.store(&vcpus);
    // With --hold-stream every touch is a fault served over an otherwise idle link; the stream
    // brings the rest once the vCPUs are done.
    std::thread release;
    if (args.hold_stream) {
        release = std::thread([&] {
            (void)vcpus.join();
            destination->set_stream_held(false);
        });
    }
    Migrated migrated{
        .stats = destination->wait(), .totals = {}, .timeline = timeline.finish(), .versions = {}};
    bar.finish();
    if (!migrated.stats.ok) {
        print_summary(migrated.stats, stdout);
        std::fflush(stdout);
        source.terminate();
        std::_Exit(on_signal.received() != 0 ? 128 + on_signal.received() : 1);
    }
    // Every page is present: no touch can block any more. vCPUs without a bound (--touches 0)
    // end here, as a VMM's would go on running the guest without us.
    vcpus.stop();
    if (release.joinable()) {
        release.join();
    }
    migrated.totals = vcpus.join();
    running.store(nullptr);
    migrated.versions = std::move(versions);
    return migrated;
}

struct Verified {
    std::uint64_t checked = 0;
    std::uint64_t wrong = 0;
};

// Every page, now that all are present: bit for bit what the source's guest held when it
// paused (the synthetic content, and with --precopy the writers' stamps).
Verified verify(const DemoPlan& plan, const DestinationGuest& guest, std::uint64_t pages_total,
                const PageVersions& versions) {
    Verified result;
    ProgressBar verifying("verifying");
    std::uint64_t page_size = plan.guest.page_size;
    for (std::uint32_t r = 0; r < guest.memory.size(); ++r) {
        std::uint64_t pages = guest.memory[r].size() / page_size;
        for (std::uint64_t p = 0; p < pages; ++p) {
            if (!live_page_matches(plan.guest, versions, r, p,
                                   guest.memory[r].data() + p * page_size)) {
                ++result.wrong;
            }
            if (++result.checked % 4096 == 0) {
                verifying.update(result.checked, pages_total, result.checked * page_size);
            }
        }
    }
    verifying.finish();
    return result;
}

// Prints the summary, writes --json; the exit status.
int report(const DemoArguments& args, const DemoPlan& plan, Migrated& migrated,
           const Verified& checked, int source_status, const std::string& source_json) {
    const DestinationStats& stats = migrated.stats;
    const VcpuTotals& totals = migrated.totals;
    nlohmann::json touches = touch_report(migrated.totals.touch_ns);
    std::uint64_t rss = resident_bytes();
    // What of the guest VmRSS counts: anonymous zero pages map the shared zero page (not
    // counted), shmem zero pages are real pages (counted), hugetlbfs pages are never counted.
    std::uint64_t guest_resident =
        plan.kind == MemoryKind::Anonymous
            ? (stats.pages_total - stats.pages_zero) * plan.guest.page_size
        : plan.kind == MemoryKind::Shmem ? stats.bytes_total
                                         : 0;
    std::uint64_t overhead = rss > guest_resident ? rss - guest_resident : 0;
    bool verified = checked.wrong == 0 && totals.wrong_pages == 0 && totals.io_errors == 0;
    print_summary(stats, stdout);
    std::printf(
        "guest check   %s: %llu of %llu pages checked after the migration, %llu vCPU "
        "touches (%llu wrong, %llu I/O errors)\n",
        verified ? "verified" : "MISMATCH",
        static_cast<unsigned long long>(checked.checked - checked.wrong),
        static_cast<unsigned long long>(checked.checked),
        static_cast<unsigned long long>(totals.touches),
        static_cast<unsigned long long>(totals.wrong_pages),
        static_cast<unsigned long long>(totals.io_errors));
    double faults_per_second =
        totals.seconds > 0 ? static_cast<double>(stats.faults) / totals.seconds : 0.0;
    if (args.vcpus > 0) {
        const auto& t = touches["summary"];
        std::printf(
            "vCPU touches  p50 %.1f us, p99 %.1f, max %.1f (as the vCPUs saw them); "
            "%.0f faults/s over %.3f s\n",
            t["p50"].get<double>(), t["p99"].get<double>(), t["max"].get<double>(),
            faults_per_second, totals.seconds);
    }
    std::printf("memory        destination RSS %s, guest pages resident %s, overhead %s\n",
                format_bytes(static_cast<double>(rss)).c_str(),
                format_bytes(static_cast<double>(guest_resident)).c_str(),
                format_bytes(static_cast<double>(overhead)).c_str());
    if (!args.json.empty()) {
        nlohmann::json json = to_json(stats);
        json["verified"] = verified;
        json["pages_checked"] = checked.checked;
        json["wrong_pages"] = checked.wrong + totals.wrong_pages;
        json["workload"] = args.workload;
        json["memory"] = args.memory;
        json["vcpus"] = args.vcpus;
        json["vcpu_touches"] = totals.touches;
        json["io_errors"] = totals.io_errors;
        json["netns"] = args.netns;
        json["link"] = args.link.empty() ? (args.netns ? "veth" : "loopback") : args.link;
        json["added_rtt_us"] = args.rtt.count();
        json["hold_stream"] = args.hold_stream;
        json["zero_percent"] = args.zero_percent;
        json["touch_latency_us"] = touches["summary"];
        json["touch_latency_cdf_us"] = touches["cdf"];
        json["vcpu_seconds"] = totals.seconds;
        json["faults_per_second"] = faults_per_second;
        json["timeline"] = migrated.timeline;
        json["bulk_channels"] = args.bulk_channels;
        json["rss_bytes"] = rss;
        json["guest_resident_bytes"] = guest_resident;
        json["rss_overhead_bytes"] = overhead;
        json["source_exit_status"] = source_status;
        json["precopy"] = args.precopy;
        json["bytes_per_guest_byte"] =
            stats.bytes_total > 0
                ? static_cast<double>(stats.bytes_received) / static_cast<double>(stats.bytes_total)
                : 0.0;
        std::ifstream source_report(source_json);
        if (source_report) {
            json["source"] = nlohmann::json::parse(source_report, nullptr, false);
        }
        if (auto written = write_json(args.json, json); !written) {
            std::fprintf(stderr, "uffd-migrate demo: %s\n", written.error().c_str());
            return 1;
        }
    }
    return verified && source_status == 0 ? 0 : 1;
}

int demo(const DemoArguments& args) {
    auto stop = [](const Stop& why) {
        std::fprintf(stderr, "uffd-migrate demo: %s\n", why.why.c_str());
        return why.status;
    };
    auto planned = plan(args);
    if (!planned) {
        return stop(planned.error());
    }
    auto scratch = ScratchDirectory::create();
    if (!scratch) {
        return stop(Stop{scratch.error()});
    }
    auto token = make_token(scratch->path());
    if (!token) {
        return stop(Stop{token.error()});
    }
    std::string source_json = scratch->path() + "/source.json";
    std::optional<NetnsPair> hosts;
    SourceProcess source;
    auto endpoint = spawn(args, *planned, *token, source_json, hosts, source);
    if (!endpoint) {
        return stop(endpoint.error());
    }
    // --rtt: the destination reaches the source through a relay that holds each byte half of
    // it, each way (in namespace B with --netns, so the link's shaping still applies).
    std::optional<DelayRelayProcess> relay;
    if (args.rtt.count() > 0) {
        std::string address = endpoint->substr(std::string("tcp:").size());
        std::size_t colon = address.rfind(':');
        relay.emplace(address.substr(0, colon),
                      static_cast<std::uint16_t>(std::stoul(address.substr(colon + 1))),
                      std::chrono::duration_cast<std::chrono::microseconds>(args.rtt) / 2);
        if (relay->port() == 0) {
            return stop(Stop{"--rtt: the delay relay cannot listen on 127.0.0.1"});
        }
        *endpoint = "tcp:127.0.0.1:" + std::to_string(relay->port());
    }
    auto guest = map_guest(*planned);
    if (!guest) {
        return stop(guest.error());
    }
    const SyntheticGuest& g = planned->guest;
    std::printf("demo          %s %s guest (%s pages), %u vCPUs, %s workload, source at %s\n",
                format_bytes(static_cast<double>(g.size)).c_str(), args.memory.c_str(),
                format_bytes(static_cast<double>(g.page_size)).c_str(), args.vcpus,
                args.workload.c_str(), endpoint->c_str());
    std::fflush(stdout);
    auto migrated =
        migrate(args, *planned, *endpoint, *token, *guest, source, source_json + ".versions");
    if (!migrated) {
        return stop(migrated.error());
    }
    Verified checked = verify(*planned, *guest, migrated->stats.pages_total, migrated->versions);
    int source_status = source.exit_status(std::chrono::seconds(10));
    return report(args, *planned, *migrated, checked, source_status, source_json);
}

}  // namespace

std::function<int()> add_demo_command(CLI::App& app) {
    auto args = std::make_shared<DemoArguments>();
    CLI::App* command = app.add_subcommand(
        "demo",
        "Migrate a synthetic guest between two processes on this host while vCPU threads touch "
        "it, then check every page (the default needs no arguments)");
    command->add_option("--size", args->size, "Guest size")->capture_default_str();
    command->add_option("--vcpus", args->vcpus, "Threads touching guest memory (0: none)")
        ->capture_default_str();
    command
        ->add_option("--workload", args->workload, "random, seq, zipf or io (kernel-mode faults)")
        ->capture_default_str();
    command->add_option("--touches", args->touches, "Pages each vCPU touches (0: until the end)")
        ->capture_default_str();
    add_bulk_channels_option(*command, args->bulk_channels);
    add_placement_option(*command, args->placement_threads);
    command->add_option("--memory", args->memory, "anonymous, shmem or hugetlb")
        ->capture_default_str();
    command
        ->add_option("--link", args->link,
                     "Between two namespaces, a link limited to this rate with three priority "
                     "bands (tc tbf + pfifo_fast; e.g. 1gbit, 10gbit)")
        ->check([](const std::string& text) {
            auto parsed = parse_rate(text);
            return parsed && text.find("bit") != std::string::npos
                       ? std::string()
                       : "--link '" + text + "' is not a rate in bits (e.g. 1gbit, 10gbit)";
        });
    command
        ->add_option_function<std::string>(
            "--rtt",
            [args](const std::string& text) {
                auto parsed = parse_duration(text);
                if (!parsed || *parsed > std::chrono::seconds(1)) {
                    throw CLI::ValidationError("--rtt '" + text +
                                               "' is not a duration up to 1 s (e.g. 1ms)");
                }
                args->rtt = *parsed;
            },
            "Add this round trip between destination and source (a relay holds each byte half "
            "of it each way; e.g. 1ms)")
        ->default_str("0");
    command->add_flag("--netns", args->netns,
                      "Run the source in another network namespace, across a veth link");
    command->add_flag("--hold-stream", args->hold_stream,
                      "Hold the background stream until the vCPUs finish their touches (every "
                      "touch then faults over an idle link)");
    command->add_flag("--verify", args->verify,
                      "Hash every page on the source, check it on arrival");
    command->add_option("--seed", args->seed, "Synthetic guest content seed")
        ->capture_default_str();
    command->add_option("--zero-percent", args->zero_percent, "Zero pages in the guest")
        ->capture_default_str()
        ->check(CLI::Range(0, 100));
    command->add_flag("--precopy", args->precopy,
                      "The source's guest runs while it migrates: writer threads stamp its pages "
                      "during precopy rounds, then the switchover pauses them and postcopy "
                      "brings the rest");
    command
        ->add_option("--max-rounds", args->max_rounds,
                     "--precopy: rounds before the switchover is forced")
        ->capture_default_str()
        ->check(CLI::Range(1, 1000));
    command->add_option("--source-writers", args->writers.writers, "--precopy: writer threads")
        ->capture_default_str()
        ->check(CLI::Range(0, 64));
    command
        ->add_option("--write-rate", args->writers.pages_per_second,
                     "--precopy: pages written per second, all writers (0: as fast as they can)")
        ->capture_default_str();
    command
        ->add_option("--hot-set", args->writers.hot_percent,
                     "--precopy: percent of the guest's pages the writers write")
        ->capture_default_str()
        ->check(CLI::Range(0, 100));
    add_data_path_option(*command, args->data_path);
    add_timeout_options(*command, args->timeouts, &args->reconnect_timeout);
    command
        ->add_option("--compress", args->compress,
                     "The source's stream: off, lz4, zstd[:LEVEL] or auto (as serve)")
        ->capture_default_str()
        ->check([](const std::string& text) {
            auto parsed = parse_compression(text);
            return parsed ? std::string() : parsed.error();
        });
    add_content_option(*command, args->content);
    add_marking_options(*command, args->marking);
    command
        ->add_option("--compress-threads", args->compress_threads,
                     "The source's threads compressing beside each bulk loop (as serve)")
        ->capture_default_str()
        ->check(CLI::Range(-1, 16));
    command->add_flag("--compress-answers", args->compress_answers,
                      "The source compresses answers to faults too");
    command
        ->add_option("--max-bandwidth", args->max_bandwidth,
                     "Cap the source's background stream (e.g. 500mbit or 100M bytes/s)")
        ->check([](const std::string& text) {
            auto parsed = parse_rate(text);
            return parsed ? std::string() : parsed.error();
        });
    command->add_option("--json", args->json, "Write a JSON report to this file");
    return [args] {
        args->netns = args->netns || !args->link.empty();
        return demo(*args);
    };
}

}  // namespace uffdm::cli
