// firecracker_test.cpp — uffd-migrate firecracker-handler against a stand-in for Firecracker
// (tests/firecracker/fc_standin.c: this host has no /dev/kvm, so Firecracker cannot run here;
// the stand-in performs its restore handshake as its documentation describes). Every page the
// stand-in's vCPU threads and kernel reads see is compared with the memory file; ballooned
// pages must read zeros.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <fstream>
#include <random>
#include <set>
#include <thread>
#include <uffdm/uffdm.hpp>

#include "tests/cli/cli_support.hpp"
#include "tests/support/process.hpp"

namespace uffdm::cli {
namespace {

using test::cli_path;
using test::Process;
using namespace std::chrono_literals;

std::string standin_path() {
    const char* path = std::getenv("UFFDM_FC_STANDIN");
    return path != nullptr ? path : "fc_standin";
}

// A memory file as Firecracker writes one: regions back to back, about a third zero pages (a
// hole among them: snapshots are sparse), the rest random.
void make_memory_file(const std::string& path, std::uint64_t bytes, std::uint64_t page,
                      unsigned seed) {
    std::ofstream out(path, std::ios::binary);
    std::mt19937_64 rng(seed);
    std::vector<char> data(page);
    for (std::uint64_t at = 0; at < bytes; at += page) {
        bool zero = rng() % 3 == 0;
        for (auto& c : data) {
            c = zero ? 0 : static_cast<char>(rng());
        }
        out.write(data.data(), static_cast<std::streamsize>(data.size()));
    }
    out.close();
    (void)::truncate(path.c_str(), static_cast<off_t>(bytes));
}

std::vector<nlohmann::json> read_lines(const std::string& path) {
    std::vector<nlohmann::json> lines;
    std::ifstream in(path);
    for (std::string line; std::getline(in, line);) {
        lines.push_back(nlohmann::json::parse(line, nullptr, false));
    }
    return lines;
}

class Firecracker : public ::testing::Test {
  protected:
    void SetUp() override {
        if (::geteuid() != 0 && ::access("/dev/userfaultfd", R_OK | W_OK) != 0) {
            GTEST_SKIP() << "the stand-in needs /dev/userfaultfd (or root) for kernel faults, "
                            "as Firecracker does";
        }
        memory_ = scratch_.path("memory");
        socket_ = scratch_.path("fc.sock");
        json_ = scratch_.path("vms.jsonl");
    }
    std::vector<std::string> handler(std::vector<std::string> extra) {
        std::vector<std::string> argv{
            cli_path(), "firecracker-handler", "--socket", socket_, "--json", json_};
        argv.insert(argv.end(), extra.begin(), extra.end());
        return argv;
    }
    std::vector<std::string> standin(std::vector<std::string> extra) {
        std::vector<std::string> argv{standin_path(), "--socket", socket_, "--memory", memory_};
        argv.insert(argv.end(), extra.begin(), extra.end());
        return argv;
    }
    Scratch scratch_;
    std::string memory_;
    std::string socket_;
    std::string json_;
};

TEST_F(Firecracker, ALocalMemoryFileServesEveryPageAndBalloonedPagesReadZeros) {
    make_memory_file(memory_, 64ULL << 20, 4096, 1);
    Process h(handler({"--image", memory_, "--max-vms", "1"}));
    // Pages 1000..1299 ballooned right after the handshake, while the stream is starting.
    Process vm(standin({"--regions", "2", "--threads", "2", "--balloon", "1000:300",
                        "--wait-unregistered", "30"}));
    ASSERT_EQ(vm.wait(), 0) << vm.output() << h.output();
    EXPECT_NE(vm.output().find("checked 16384 pages, 300 zero (ballooned), 0 differ"),
              std::string::npos)
        << vm.output();
    ASSERT_EQ(h.wait(), 0) << h.output();
    auto vms = read_lines(json_);
    ASSERT_EQ(vms.size(), 1U);
    EXPECT_EQ(vms[0]["end"], "complete");
    EXPECT_EQ(vms[0]["pid"], vm.pid());
    EXPECT_TRUE(vms[0]["remove_events"].get<bool>());
    EXPECT_EQ(vms[0]["regions"].size(), 2U);
    EXPECT_EQ(vms[0]["stats"]["pages"], 16384);
    EXPECT_GE(vms[0]["stats"]["pages_by_path"]["discarded"].get<int>(), 300);
    EXPECT_FALSE(::access(socket_.c_str(), F_OK) == 0) << "the socket file is removed at exit";
}

TEST_F(Firecracker, HugetlbfsGuestsAndTheOlderPageSizeFieldAreServed) {
    make_memory_file(memory_, 16ULL << 20, 2ULL << 20, 2);
    Process h(handler({"--image", memory_, "--max-vms", "1"}));
    Process vm(standin({"--regions", "2", "--page-size", "2097152", "--legacy-field", "--balloon",
                        "2:2", "--kernel-reads", "8", "--wait-unregistered", "30"}));
    int status = vm.wait();
    if (status == 3 && vm.output().find("mmap guest region") != std::string::npos) {
        GTEST_SKIP() << "no free 2 MiB huge pages here: " << vm.output();
    }
    ASSERT_EQ(status, 0) << vm.output() << h.output();
    EXPECT_NE(vm.output().find("checked 8 pages, 2 zero (ballooned), 0 differ"), std::string::npos)
        << vm.output();
    ASSERT_EQ(h.wait(), 0) << h.output();
    auto vms = read_lines(json_);
    ASSERT_EQ(vms.size(), 1U);
    EXPECT_EQ(vms[0]["end"], "complete");
    EXPECT_EQ(vms[0]["regions"][0]["page_size"], 2ULL << 20);
}

TEST_F(Firecracker, ARemoteSourceServesTheMemoryFileOverTheNetworkWithATokenAndVerification) {
    make_memory_file(memory_, 64ULL << 20, 4096, 3);
    Process source({cli_path(), "serve", "--listen", "tcp:127.0.0.1:0", "--image", memory_,
                    "--token-file", scratch_.token()});
    std::string endpoint = endpoint_of(source);
    ASSERT_FALSE(endpoint.empty()) << source.output();
    Process h(handler(
        {"--connect", endpoint, "--token-file", scratch_.token(), "--verify", "--max-vms", "1"}));
    Process vm(standin({"--regions", "3", "--balloon", "5000:1000", "--wait-unregistered", "30"}));
    ASSERT_EQ(vm.wait(), 0) << vm.output() << h.output();
    EXPECT_NE(vm.output().find("1000 zero (ballooned), 0 differ"), std::string::npos)
        << vm.output();
    ASSERT_EQ(h.wait(), 0) << h.output();
    EXPECT_EQ(source.wait(), 0) << source.output();
    auto vms = read_lines(json_);
    ASSERT_EQ(vms.size(), 1U);
    EXPECT_EQ(vms[0]["end"], "complete");
    EXPECT_EQ(vms[0]["source"], endpoint);
    EXPECT_GT(vms[0]["stats"]["hashes_verified"].get<std::uint64_t>(), 0U);
}

TEST_F(Firecracker, OneHandlerServesSeveralVmsAtOnceEachWithItsOwnReport) {
    make_memory_file(memory_, 32ULL << 20, 4096, 4);
    Process h(handler({"--image", memory_, "--max-vms", "3"}));
    std::vector<std::unique_ptr<Process>> vms;
    for (int i = 0; i < 3; ++i) {
        vms.push_back(std::make_unique<Process>(
            standin({"--regions", std::to_string(i + 1), "--balloon",
                     std::to_string(100 * i) + ":50", "--wait-unregistered", "30"})));
    }
    std::set<int> pids;
    for (auto& vm : vms) {
        EXPECT_EQ(vm->wait(), 0) << vm->output();
        pids.insert(vm->pid());
    }
    ASSERT_EQ(h.wait(), 0) << h.output();
    auto reports = read_lines(json_);
    ASSERT_EQ(reports.size(), 3U);
    std::set<int> reported;
    std::set<std::uint64_t> ids;
    for (const auto& r : reports) {
        EXPECT_EQ(r["end"], "complete");
        reported.insert(r["pid"].get<int>());
        ids.insert(r["vm"].get<std::uint64_t>());
    }
    EXPECT_EQ(reported, pids);
    EXPECT_EQ(ids, (std::set<std::uint64_t>{1, 2, 3}));
}

// Each bad handshake is refused with its reason; the handler goes on and serves the next VM.
TEST_F(Firecracker, BadHandshakesAreRefusedByNameAndTheHandlerServesTheNextVm) {
    make_memory_file(memory_, 8ULL << 20, 4096, 5);
    const std::string region0 = R"("base_host_virt_addr":{BASE0},"offset":{OFFSET0},)";
    struct Case {
        std::vector<std::string> args;
        std::string why;
    } cases[] = {
        {{"--no-fd"}, "no userfaultfd"},
        {{"--json-template", "this is not json"}, "closed the socket in the middle"},
        {{"--json-template", "{\"regions\":[]}"}, "not a JSON array"},
        {{"--json-template", "[{" + region0 + R"("size":{SIZE0},"page_size":4096}])"},
         "but the memory file has 8388608"},  // claims only region 0 of 2
        {{"--regions", "1", "--json-template",
          "[{" + region0 + R"("size":16777216,"page_size":4096}])"},
         "of a memory file of 8388608"},
        {{"--regions", "1", "--json-template",
          "[{" + region0 + R"("size":{SIZE0},"page_size":8192}])"},
         "is not a page size"},
        {{"--regions", "1", "--json-template", "[{" + region0 + R"("size":{SIZE0}}])"},
         "no \"page_size\""},
        {{"--regions", "1", "--json-template",
          "[{" + region0 + R"("size":{SIZE0},"page_size":4096,"page_size_kib":2048}])"},
         "disagree"},
        {{"--regions", "1", "--json-template",
          R"([{"base_host_virt_addr":-1,"offset":0,"size":{SIZE0},"page_size":4096}])"},
         "is not a non-negative integer"},
        {{"--regions", "2", "--unregister", "1"}, "is not registered with the userfaultfd"},
    };
    int n = static_cast<int>(std::size(cases));
    Process h(handler(
        {"--image", memory_, "--max-vms", std::to_string(n + 2), "--handshake-timeout", "1s"}));
    for (const auto& c : cases) {
        std::vector<std::string> args = c.args;
        if (std::find(args.begin(), args.end(), "--regions") == args.end()) {
            args.insert(args.end(), {"--regions", "2"});
        }
        args.insert(args.end(), {"--exit-after-ms", "1500"});  // alive until refused
        Process vm(standin(args));
        EXPECT_EQ(vm.wait(), 0) << vm.output();
    }
    // A peer that connects and says nothing: refused after the handshake timeout.
    {
        Process silent({"/usr/bin/python3", "-c",
                        "import socket,time; s=socket.socket(socket.AF_UNIX); s.connect('" +
                            socket_ + "'); time.sleep(3)"});
        EXPECT_EQ(silent.wait(), 0) << silent.output();
    }
    Process good(standin({"--regions", "2", "--wait-unregistered", "30"}));
    EXPECT_EQ(good.wait(), 0) << good.output() << h.output();
    h.wait(60s);
    std::string all;
    for (const auto& r : read_lines(json_)) {
        all += r["end"].get<std::string>() + "\n";
    }
    for (const auto& c : cases) {
        EXPECT_NE(all.find(c.why), std::string::npos) << c.why << " in:\n" << all;
    }
    EXPECT_NE(all.find("no regions message within 1000 ms"), std::string::npos) << all;
    EXPECT_NE(all.find("complete"), std::string::npos) << all;
}

TEST_F(Firecracker, AVmThatExitsEndsItsSessionAndTheHandlerCarriesOn) {
    make_memory_file(memory_, 64ULL << 20, 4096, 6);
    // A capped remote stream, so that the VM is gone long before its memory would be complete.
    Process source({cli_path(), "serve", "--listen", "tcp:127.0.0.1:0", "--image", memory_,
                    "--max-bandwidth", "8M", "--reconnect-timeout", "0"});
    std::string endpoint = endpoint_of(source);
    ASSERT_FALSE(endpoint.empty()) << source.output();
    Process h(handler({"--connect", endpoint, "--max-vms", "1"}));
    Process vm(standin({"--regions", "1", "--exit-after-ms", "500"}));
    EXPECT_EQ(vm.wait(), 0) << vm.output();
    EXPECT_EQ(h.wait(60s), 1) << h.output();
    auto vms = read_lines(json_);
    ASSERT_EQ(vms.size(), 1U) << h.output();
    EXPECT_EQ(vms[0]["end"], "vm exited") << h.output();
}

TEST_F(Firecracker, TheSourceGoesAwayAndComesBackAndTheVmNeverNoticesButForTime) {
    make_memory_file(memory_, 64ULL << 20, 4096, 7);
    auto source = std::make_unique<Process>(
        std::vector<std::string>{cli_path(), "serve", "--listen", "tcp:127.0.0.1:0", "--image",
                                 memory_, "--max-bandwidth", "16M"});
    std::string endpoint = endpoint_of(*source);
    ASSERT_FALSE(endpoint.empty()) << source->output();
    Process h(handler({"--connect", endpoint, "--max-vms", "1", "--reconnect-timeout", "30s"}));
    // No vCPU touches until the end: the capped stream (about 3 s) brings every page, so the
    // source dies in the middle of it; then every page is compared.
    Process vm(standin({"--regions", "2", "--balloon", "3000:100", "--kernel-reads", "0",
                        "--verify-late", "--wait-unregistered", "60"}));
    std::this_thread::sleep_for(1s);
    source->signal(SIGKILL);
    source->wait();
    // The same memory file served again at the same address: the handler resumes the session.
    source = std::make_unique<Process>(
        std::vector<std::string>{cli_path(), "serve", "--listen", endpoint, "--image", memory_});
    ASSERT_EQ(endpoint_of(*source), endpoint) << source->output();
    ASSERT_EQ(vm.wait(), 0) << vm.output() << h.output();
    EXPECT_NE(vm.output().find("100 zero (ballooned), 0 differ"), std::string::npos) << vm.output();
    ASSERT_EQ(h.wait(), 0) << h.output();
    auto vms = read_lines(json_);
    ASSERT_EQ(vms.size(), 1U);
    EXPECT_EQ(vms[0]["end"], "complete");
    EXPECT_GE(vms[0]["stats"]["pauses"].size(), 1U) << vms[0].dump();
}

TEST(FirecrackerRegions, TheMessageIsParsedAndCheckedFieldByField) {
    auto ok = parse_firecracker_regions(
        R"([{"base_host_virt_addr":140737488355328,"size":8192,"offset":0,"page_size":4096,
            "future_field":"ignored"},
           {"base_host_virt_addr":140737488363520,"size":4096,"offset":8192,
            "page_size_kib":4096}])");
    ASSERT_TRUE(ok) << ok.error().message;
    ASSERT_EQ(ok->size(), 2U);
    EXPECT_EQ((*ok)[1].offset, 8192U);
    EXPECT_EQ((*ok)[1].page_size, 4096U);
    auto kib = parse_firecracker_regions(
        R"([{"base_host_virt_addr":0,"size":2097152,"offset":0,"page_size_kib":2048}])");
    ASSERT_TRUE(kib) << kib.error().message;
    EXPECT_EQ((*kib)[0].page_size, 2ULL << 20);
    for (
        const char* bad : {
            "",
            "[]",
            "{}",
            "[1]",
            R"([{"size":4096,"offset":0,"page_size":4096}])",
            R"([{"base_host_virt_addr":0,"size":4095,"offset":0,"page_size":4096}])",
            R"([{"base_host_virt_addr":4095,"size":4096,"offset":0,"page_size":4096}])",
            R"([{"base_host_virt_addr":0,"size":4096,"offset":100,"page_size":4096}])",
            R"([{"base_host_virt_addr":0,"size":0,"offset":0,"page_size":4096}])",
            R"([{"base_host_virt_addr":0,"size":4096,"offset":0,"page_size":"4096"}])",
            R"([{"base_host_virt_addr":18446744073709547520,"size":8192,"offset":0,"page_size":4096}])",
            R"([{"base_host_virt_addr":0,"size":4096,"offset":0,"page_size":4096},
                 {"base_host_virt_addr":0,"size":2097152,"offset":4096,"page_size":2097152}])",
        }) {
        EXPECT_FALSE(parse_firecracker_regions(bad)) << bad;
    }
}

}  // namespace
}  // namespace uffdm::cli
