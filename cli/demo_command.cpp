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
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>

#include "cli/commands.hpp"
#include "cli/common_options.hpp"
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
    std::string memory = "anonymous";
    bool netns = false;
    bool verify = false;
    bool hold_stream = false;
    std::uint64_t seed = 42;
    std::uint32_t zero_percent = 50;
    std::uint64_t touches = 5000;
    DataPathBackend data_path = DataPathBackend::Auto;
    Timeouts timeouts;
    std::chrono::milliseconds reconnect_timeout{30000};
    std::string json;
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
    std::mutex mutex_;
    nlohmann::json samples_ = nlohmann::json::array();
    std::thread thread_;
};

std::string self_path() {
    char buffer[4096];
    ssize_t n = ::readlink("/proc/self/exe", buffer, sizeof buffer - 1);
    return n > 0 ? std::string(buffer, static_cast<std::size_t>(n)) : "uffd-migrate";
}

int demo(const DemoArguments& args) {
    auto fail = [](const std::string& why, int status = 1) {
        std::fprintf(stderr, "uffd-migrate demo: %s\n", why.c_str());
        return status;
    };
    auto size = parse_size(args.size);
    auto kind = parse_memory_kind(args.memory);
    auto workload = parse_workload(args.workload);
    if (!size || !kind || !workload) {
        return fail(!size ? size.error() : !kind ? kind.error().message : workload.error(), 2);
    }
    if (args.vcpus > 256) {
        return fail("--vcpus " + std::to_string(args.vcpus) + " is not 0..256", 2);
    }
    if (args.hold_stream && (args.vcpus == 0 || args.touches == 0)) {
        return fail(
            "--hold-stream needs vCPUs with a bounded number of touches (--vcpus N > 0, "
            "--touches N > 0): the stream is released when they finish",
            2);
    }
    SyntheticGuest guest;
    guest.page_size = *kind == MemoryKind::Hugetlb ? (2U << 20) : 4096;
    guest.size = *size;
    guest.regions = 2;
    guest.seed = args.seed;
    guest.zero_percent = args.zero_percent;
    if (guest.size == 0 || guest.size % (2 * guest.page_size) != 0) {
        return fail("--size " + args.size + " must be a non-zero multiple of two " +
                        format_bytes(static_cast<double>(guest.page_size)) + " pages",
                    2);
    }
    char scratch[] = "/tmp/uffdm-demo-XXXXXX";
    if (::mkdtemp(scratch) == nullptr) {
        return fail(std::string("mkdtemp: ") + std::strerror(errno));
    }
    std::string directory = scratch;
    struct Cleanup {
        std::string directory;
        ~Cleanup() { (void)std::system(("rm -rf " + directory).c_str()); }
    } cleanup{directory};
    auto token = make_token(directory);
    if (!token) {
        return fail(token.error());
    }
    std::optional<NetnsPair> hosts;
    std::string listen = "tcp:127.0.0.1:0";
    std::vector<std::string> argv;
    if (args.netns) {
        hosts.emplace("uffdm-demo");
        if (!hosts->available()) {
            return fail("--netns: " + hosts->why());
        }
        listen = std::string("tcp:") + NetnsPair::kAddressA + ":0";
        argv = {"ip", "netns", "exec", hosts->a()};
    }
    std::string source_json = directory + "/source.json";
    const char* data_paths[] = {"auto", "io_uring", "asio"};
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
                             *token,
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
    SourceProcess source;
    if (auto started = source.start(argv); !started) {
        return fail(started.error());
    }
    auto endpoint = source.endpoint(std::chrono::seconds(60));
    if (!endpoint) {
        return fail(endpoint.error());
    }
    if (hosts) {
        // From here on this thread, and every thread it creates, lives in namespace B.
        if (!hosts->enter(hosts->b()) || !hosts->hand_cleanup_to_child()) {
            return fail("cannot enter network namespace " + hosts->b());
        }
    }

    std::vector<GuestMemory> memory;
    std::vector<DestinationRegion> regions;
    std::vector<std::pair<std::byte*, std::size_t>> views;
    for (std::uint64_t length : synthetic_region_lengths(guest)) {
        auto mapped = GuestMemory::allocate(*kind, length);
        if (!mapped) {
            return fail(mapped.error().message);
        }
        regions.push_back({mapped->data(), mapped->size(), mapped->page_size(), *kind});
        views.emplace_back(mapped->data(), mapped->size());
        memory.push_back(std::move(*mapped));
    }
    std::printf("demo          %s %s guest (%s pages), %u vCPUs, %s workload, source at %s\n",
                format_bytes(static_cast<double>(guest.size)).c_str(), args.memory.c_str(),
                format_bytes(static_cast<double>(guest.page_size)).c_str(), args.vcpus,
                args.workload.c_str(), endpoint->c_str());
    std::fflush(stdout);
    ProgressBar bar("migrating");
    DestinationOptions options;
    options.connect = *endpoint;
    options.security.token_file = *token;
    options.bulk_channels = args.bulk_channels;
    options.verify = args.verify;
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
    auto destination = Destination::create(regions, options);
    if (!destination) {
        return fail(destination.error().message);
    }
    StopOnSignal on_signal([&](int) {
        destination->stop();
        source.terminate();
    });
    if (auto started = destination->start(); !started) {
        return fail(started.error().message);
    }
    // As in a VMM's postcopy: the guest resumes once the migration connection is up (its first
    // faults then measure serving, not connecting). Bounded; a source that never answers ends
    // the migration with its own error below.
    auto connect_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (!destination->progress().connected &&
           std::chrono::steady_clock::now() < connect_deadline && on_signal.received() == 0) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    Timeline timeline(*destination);
    Vcpus vcpus(views, guest, *workload, args.vcpus, args.touches);
    // With --hold-stream every touch is a fault served over an otherwise idle link; the stream
    // brings the rest once the vCPUs are done.
    std::thread release;
    if (args.hold_stream) {
        release = std::thread([&] {
            (void)vcpus.join();
            destination->set_stream_held(false);
        });
    }
    DestinationStats stats = destination->wait();
    nlohmann::json samples = timeline.finish();
    bar.finish();
    if (!stats.ok) {
        print_summary(stats, stdout);
        std::fflush(stdout);
        source.terminate();
        // vCPUs may wait on pages that will never come; they are not joined. Nothing of the
        // guest was handed a wrong page.
        std::_Exit(on_signal.received() != 0 ? 130 : 1);
    }
    if (release.joinable()) {
        release.join();
    }
    VcpuTotals totals = vcpus.join();
    nlohmann::json touches = touch_report(totals.touch_ns);

    // Every page, now that all are present.
    std::uint64_t wrong = 0;
    std::uint64_t checked = 0;
    ProgressBar verifying("verifying");
    for (std::uint32_t r = 0; r < memory.size(); ++r) {
        std::uint64_t pages = memory[r].size() / guest.page_size;
        for (std::uint64_t p = 0; p < pages; ++p) {
            if (!synthetic_page_matches(guest, r, p, memory[r].data() + p * guest.page_size)) {
                ++wrong;
            }
            if (++checked % 4096 == 0) {
                verifying.update(checked, stats.pages_total, checked * guest.page_size);
            }
        }
    }
    verifying.finish();
    std::uint64_t rss = resident_bytes();
    // What of the guest VmRSS counts: anonymous zero pages map the shared zero page (not
    // counted), shmem zero pages are real pages (counted), hugetlbfs pages are never counted.
    std::uint64_t guest_resident = *kind == MemoryKind::Anonymous
                                       ? (stats.pages_total - stats.pages_zero) * guest.page_size
                                   : *kind == MemoryKind::Shmem ? stats.bytes_total
                                                                : 0;
    int source_status = source.exit_status(std::chrono::seconds(10));
    bool verified = wrong == 0 && totals.wrong_pages == 0 && totals.io_errors == 0;
    print_summary(stats, stdout);
    std::printf(
        "guest check   %s: %llu of %llu pages checked after the migration, %llu vCPU "
        "touches (%llu wrong, %llu I/O errors)\n",
        verified ? "verified" : "MISMATCH", static_cast<unsigned long long>(checked - wrong),
        static_cast<unsigned long long>(checked), static_cast<unsigned long long>(totals.touches),
        static_cast<unsigned long long>(totals.wrong_pages),
        static_cast<unsigned long long>(totals.io_errors));
    if (args.vcpus > 0) {
        const auto& t = touches["summary"];
        std::printf(
            "vCPU touches  p50 %.1f us, p99 %.1f, max %.1f (as the vCPUs saw them); "
            "%.0f faults/s over %.3f s\n",
            t["p50"].get<double>(), t["p99"].get<double>(), t["max"].get<double>(),
            totals.seconds > 0 ? static_cast<double>(stats.faults) / totals.seconds : 0.0,
            totals.seconds);
    }
    std::printf(
        "memory        destination RSS %s, guest pages resident %s, overhead %s\n",
        format_bytes(static_cast<double>(rss)).c_str(),
        format_bytes(static_cast<double>(guest_resident)).c_str(),
        format_bytes(static_cast<double>(rss > guest_resident ? rss - guest_resident : 0)).c_str());
    if (!args.json.empty()) {
        nlohmann::json report = to_json(stats);
        report["verified"] = verified;
        report["pages_checked"] = checked;
        report["wrong_pages"] = wrong + totals.wrong_pages;
        report["workload"] = args.workload;
        report["memory"] = args.memory;
        report["vcpus"] = args.vcpus;
        report["vcpu_touches"] = totals.touches;
        report["io_errors"] = totals.io_errors;
        report["netns"] = args.netns;
        report["hold_stream"] = args.hold_stream;
        report["zero_percent"] = args.zero_percent;
        report["touch_latency_us"] = touches["summary"];
        report["touch_latency_cdf_us"] = touches["cdf"];
        report["vcpu_seconds"] = totals.seconds;
        report["faults_per_second"] =
            totals.seconds > 0 ? static_cast<double>(stats.faults) / totals.seconds : 0.0;
        report["timeline"] = samples;
        report["bulk_channels"] = args.bulk_channels;
        report["rss_bytes"] = rss;
        report["guest_resident_bytes"] = guest_resident;
        report["rss_overhead_bytes"] = rss > guest_resident ? rss - guest_resident : 0;
        report["source_exit_status"] = source_status;
        std::ifstream source_report(source_json);
        if (source_report) {
            report["source"] = nlohmann::json::parse(source_report, nullptr, false);
        }
        if (auto written = write_json(args.json, report); !written) {
            return fail(written.error());
        }
    }
    return verified && source_status == 0 ? 0 : 1;
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
    command
        ->add_option("--bulk-channels", args->bulk_channels,
                     "Connections for the background stream (0: it shares the urgent one)")
        ->capture_default_str()
        ->check(CLI::Range(0, 16));
    command->add_option("--memory", args->memory, "anonymous, shmem or hugetlb")
        ->capture_default_str();
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
    add_data_path_option(*command, args->data_path);
    add_timeout_options(*command, args->timeouts, &args->reconnect_timeout);
    command->add_option("--json", args->json, "Write a JSON report to this file");
    return [args] { return demo(*args); };
}

}  // namespace uffdm::cli
