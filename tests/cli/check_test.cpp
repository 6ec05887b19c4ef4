// check_test.cpp — `uffd-migrate check` as a real process: exit codes, JSON, refusal text.
#include <gtest/gtest.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdlib>
#include <nlohmann/json.hpp>

#include "tests/support/test_support.hpp"

namespace uffdm::cli {
namespace {

const char* cli_path() {
    const char* path = std::getenv("UFFDM_CLI");
    return path != nullptr ? path : "uffd-migrate";
}

// Runs the CLI in a child prepared by `setup` (which runs after fork, before exec).
test::ChildResult run_cli(
    std::vector<std::string> args, const std::function<bool()>& setup = [] { return true; }) {
    return test::run_in_child([&](std::FILE* report) {
        if (!setup()) {
            std::fprintf(report, "setup failed: %s", std::strerror(errno));
            return 120;
        }
        ::dup2(::fileno(report), STDOUT_FILENO);
        ::dup2(::fileno(report), STDERR_FILENO);
        std::vector<char*> argv{const_cast<char*>(cli_path())};
        for (auto& a : args) {
            argv.push_back(a.data());
        }
        argv.push_back(nullptr);
        ::execv(cli_path(), argv.data());
        std::fprintf(report, "exec %s: %s", cli_path(), std::strerror(errno));
        return 121;
    });
}

// Makes userfaultfd(2) fail with ENOSYS, as on a kernel built without it.
bool forbid_userfaultfd_syscall() {
    sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_userfaultfd, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (ENOSYS & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    sock_fprog program{.len = 4, .filter = filter};
    return ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 &&
           ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program) == 0;
}

class CheckCommand : public ::testing::Test {
  protected:
    void SetUp() override {
        if (::geteuid() != 0) {
            GTEST_SKIP() << "these tests compare root with nobody";
        }
    }
};

TEST_F(CheckCommand, RootCanServeKernelFaultsAndTheJsonSaysWhy) {
    auto result = run_cli({"check", "--json"});
    ASSERT_TRUE(result.exited_with(0)) << result.describe();
    auto j = nlohmann::json::parse(result.output);
    EXPECT_EQ(j["verdict"], "kernel-faults");
    EXPECT_EQ(j["exit_code"], 0);
    EXPECT_EQ(j["grant"], "device-node");
    EXPECT_EQ(j["refusal"], "");
    ASSERT_EQ(j["grants"].size(), 4u);
    EXPECT_EQ(j["grants"][0]["name"], "device-node");
    EXPECT_TRUE(j["grants"][0]["holds"]);
    EXPECT_TRUE(j["userfaultfd"]["opened"]);
    auto features = j["userfaultfd"]["feature_names"].get<std::vector<std::string>>();
    EXPECT_NE(std::find(features.begin(), features.end(), "MISSING_SHMEM"), features.end());
    auto anonymous = j["memory_kinds"][0];
    EXPECT_EQ(anonymous["kind"], "anonymous");
    auto ioctls = anonymous["missing_ioctls"].get<std::vector<std::string>>();
    EXPECT_NE(std::find(ioctls.begin(), ioctls.end(), "COPY"), ioctls.end());
    // The placement a destination would choose, per kind, from those ioctls.
    EXPECT_EQ(anonymous["placement"],
              "UFFDIO_COPY from the receive ring, zero runs UFFDIO_ZEROPAGE");
    EXPECT_NE(anonymous["placement_passed_over"][0].get<std::string>().find("UFFDIO_MOVE"),
              std::string::npos);
    for (const auto& kind : j["memory_kinds"]) {
        if (kind["kind"] == "hugetlb" && kind["available"].get<bool>()) {
            EXPECT_EQ(kind["placement"],
                      "UFFDIO_COPY from the receive ring, zero runs UFFDIO_COPY of a zero page");
        }
        if (kind["kind"] == "shmem") {
            EXPECT_NE(kind["placement_passed_over"][0].get<std::string>().find("UFFDIO_CONTINUE"),
                      std::string::npos);
        }
    }
    EXPECT_TRUE(j["io_uring"].contains("available"));
    EXPECT_TRUE(j["huge_pages"].contains("free"));
    EXPECT_FALSE(j["kernel"]["release"].get<std::string>().empty());
}

TEST_F(CheckCommand, UnprivilegedUserGetsExitTwoAndEveryRemedy) {
    auto result = run_cli({"check"}, [] { return test::become_nobody({}); });
    ASSERT_TRUE(result.exited_with(2)) << result.describe();
    EXPECT_NE(result.output.find("user-faults-only"), std::string::npos) << result.output;
    EXPECT_NE(result.output.find("cannot serve kernel faults"), std::string::npos);
    for (const char* remedy :
         {"/dev/userfaultfd", "CAP_USERFAULTFD", "CAP_SYS_PTRACE", "vm.unprivileged_userfaultfd"}) {
        EXPECT_NE(result.output.find(remedy), std::string::npos) << remedy;
    }
}

TEST_F(CheckCommand, UnprivilegedUserJsonNamesTheFailedGrants) {
    auto result = run_cli({"check", "--json"}, [] { return test::become_nobody({}); });
    ASSERT_TRUE(result.exited_with(2)) << result.describe();
    auto j = nlohmann::json::parse(result.output);
    EXPECT_EQ(j["verdict"], "user-faults-only");
    EXPECT_EQ(j["grant"], "none");
    for (const auto& grant : j["grants"]) {
        EXPECT_FALSE(grant["holds"]) << grant.dump();
    }
}

// A live source needs no privilege: an unprivileged user's check says its writes are tracked,
// for every kind of memory, while it cannot serve kernel faults as a destination.
TEST_F(CheckCommand, DirtyTrackingNeedsNoPrivilege) {
    auto result = run_cli({"check", "--json"}, [] {
        bool became = test::become_nobody({});
        // A process that changed its credentials is not dumpable, and then not even its own
        // /proc/self/pagemap opens; a user's own process (never setuid) is.
        ::prctl(PR_SET_DUMPABLE, 1);
        return became;
    });
    ASSERT_TRUE(result.exited_with(2)) << result.describe();
    auto j = nlohmann::json::parse(result.output);
    ASSERT_EQ(j["dirty_tracking"].size(), 3U) << result.output;
    for (const auto& kind : j["dirty_tracking"]) {
        if (kind["kind"] == "hugetlb" && !kind["available"].get<bool>() &&
            kind["note"].get<std::string>().find("cannot map") != std::string::npos) {
            continue;  // no huge page free to try with (tests run in parallel)
        }
        EXPECT_TRUE(kind["available"].get<bool>()) << kind.dump();
    }
    auto text = run_cli({"check"}, [] {
        bool became = test::become_nobody({});
        ::prctl(PR_SET_DUMPABLE, 1);
        return became;
    });
    EXPECT_NE(text.output.find("a live source tracks writes (no privilege)"), std::string::npos)
        << text.output;
}

TEST_F(CheckCommand, NoUserfaultfdAtAllGivesExitOne) {
    auto result = run_cli({"check", "--json"},
                          [] { return test::become_nobody({}) && forbid_userfaultfd_syscall(); });
    ASSERT_TRUE(result.exited_with(1)) << result.describe();
    auto j = nlohmann::json::parse(result.output);
    EXPECT_EQ(j["verdict"], "no-userfaultfd");
    EXPECT_FALSE(j["userfaultfd"]["opened"]);
    EXPECT_NE(j["refusal"].get<std::string>().find("ENOSYS"), std::string::npos);
}

TEST_F(CheckCommand, DevicePathOptionIsUsed) {
    auto result = run_cli({"check", "--json", "--device", "/nonexistent/uffd"});
    ASSERT_TRUE(result.exited_with(0)) << result.describe();
    auto j = nlohmann::json::parse(result.output);
    EXPECT_EQ(j["grant"], "cap-sys-ptrace");  // root still has CAP_SYS_PTRACE
    EXPECT_NE(j["grants"][0]["detail"].get<std::string>().find("does not exist"),
              std::string::npos);
}

TEST_F(CheckCommand, BadArgumentsGiveAShortErrorAndExitTwo) {
    auto result = run_cli({"check", "--frobnicate"});
    EXPECT_TRUE(result.exited_with(2)) << result.describe();
    EXPECT_NE(result.output.find("frobnicate"), std::string::npos) << result.output;
    EXPECT_EQ(result.output.find("terminate called"), std::string::npos);
    auto none = run_cli({});
    EXPECT_TRUE(none.exited_with(2)) << none.describe();
    EXPECT_NE(none.output.find("see --help"), std::string::npos) << none.output;
    // Asking for help is not an error.
    EXPECT_TRUE(run_cli({"--help"}).exited_with(0));
}

}  // namespace
}  // namespace uffdm::cli
