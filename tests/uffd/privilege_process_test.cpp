// privilege_process_test.cpp — The gate in real processes: nobody, CAP_SYS_PTRACE, own device node.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/capability.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <thread>

#include "tests/support/test_support.hpp"
#include "uffd/capabilities.hpp"
#include "uffd/privilege_probe.hpp"

namespace uffdm::uffd {
namespace {

#define CHILD_CHECK(cond, ...)                 \
    do {                                       \
        if (!(cond)) {                         \
            std::fprintf(report, __VA_ARGS__); \
            return __LINE__ % 200 + 1;         \
        }                                      \
    } while (0)

bool mentions_every_remedy(const std::string& message) {
    return message.find("/dev/userfaultfd") != std::string::npos &&
           message.find("CAP_USERFAULTFD") != std::string::npos &&
           message.find("CAP_SYS_PTRACE") != std::string::npos &&
           message.find("vm.unprivileged_userfaultfd") != std::string::npos;
}

class PrivilegeProcess : public ::testing::Test {
  protected:
    void SetUp() override {
        if (::geteuid() != 0) {
            GTEST_SKIP() << "these tests switch users and need to start as root";
        }
        if (::access(kDefaultDevicePath, F_OK) != 0) {
            GTEST_SKIP() << "no /dev/userfaultfd on this kernel";
        }
    }
};

TEST_F(PrivilegeProcess, UnprivilegedUserIsRefusedWithEveryRemedyAndGetsUserModeOnly) {
    auto child = test::run_in_child([](std::FILE* report) {
        CHILD_CHECK(test::become_nobody({}), "become_nobody: %s", std::strerror(errno));
        PrivilegeFacts facts = probe_privileges();
        CHILD_CHECK(!facts.device_accessible && !facts.cap_sys_ptrace, "facts still privileged");
        auto refused = open_through_gate(true, {}, {});
        CHILD_CHECK(!refused, "kernel faults were allowed to nobody");
        CHILD_CHECK(refused.error().code == Errc::PermissionDenied, "wrong code: %s",
                    refused.error().code.message().c_str());
        CHILD_CHECK(mentions_every_remedy(refused.error().message), "message lacks remedies: %s",
                    refused.error().message.c_str());

        auto user_only = open_through_gate(false, {}, test::cooperative_features());
        CHILD_CHECK(user_only.has_value(), "user-mode-only open failed: %s",
                    user_only.error().message.c_str());
        CHILD_CHECK(user_only->uffd.user_mode_only(), "fd is not user-mode-only");
        CHILD_CHECK(user_only->decision.scope == FaultScope::UserOnly, "wrong scope");
        std::string served = test::kernel_fault_served(user_only->uffd);
        CHILD_CHECK(served.find("Bad address") != std::string::npos,
                    "kernel fault was not refused with EFAULT: '%s'", served.c_str());
        std::fputs(refused.error().message.c_str(), report);
        return 0;
    });
    EXPECT_TRUE(child.exited_with(0)) << child.describe();
}

TEST_F(PrivilegeProcess, ChildKeepingOnlyCapSysPtraceServesKernelFaults) {
    auto child = test::run_in_child([](std::FILE* report) {
        CHILD_CHECK(test::become_nobody({CAP_SYS_PTRACE}), "become_nobody: %s",
                    std::strerror(errno));
        auto state = read_capability_state();
        CHILD_CHECK(state && state->effective == (1ULL << CAP_SYS_PTRACE),
                    "effective set is not exactly CAP_SYS_PTRACE");
        auto opened = open_through_gate(true, {}, test::cooperative_features());
        CHILD_CHECK(opened.has_value(), "refused: %s", opened.error().message.c_str());
        CHILD_CHECK(opened->decision.grant == Grant::CapSysPtrace, "grant was %s",
                    std::string(to_string(opened->decision.grant)).c_str());
        CHILD_CHECK(opened->uffd.route() == OpenRoute::Syscall, "not opened via the syscall");
        std::string served = test::kernel_fault_served(opened->uffd);
        CHILD_CHECK(served.empty(), "kernel fault not served: %s", served.c_str());
        return 0;
    });
    EXPECT_TRUE(child.exited_with(0)) << child.describe();
}

TEST_F(PrivilegeProcess, OwnDeviceNodeInAPrivateMountNamespaceNeedsNoCapability) {
    struct stat dev {};
    ASSERT_EQ(::stat(kDefaultDevicePath, &dev), 0);
    char dir_template[] = "/tmp/uffdm-devnode-XXXXXX";
    ASSERT_NE(::mkdtemp(dir_template), nullptr);
    std::string dir = dir_template;
    auto child = test::run_in_child([&](std::FILE* report) {
        CHILD_CHECK(::unshare(CLONE_NEWNS) == 0, "unshare: %s", std::strerror(errno));
        CHILD_CHECK(::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) == 0,
                    "make-rprivate: %s", std::strerror(errno));
        CHILD_CHECK(::mount("tmpfs", dir.c_str(), "tmpfs", 0, "mode=0755,size=64k") == 0,
                    "mount tmpfs: %s", std::strerror(errno));
        std::string node = dir + "/userfaultfd";
        CHILD_CHECK(::mknod(node.c_str(), S_IFCHR | 0600, dev.st_rdev) == 0, "mknod: %s",
                    std::strerror(errno));
        CHILD_CHECK(::chown(node.c_str(), test::kNobody, test::kNobody) == 0, "chown: %s",
                    std::strerror(errno));
        CHILD_CHECK(test::become_nobody({}), "become_nobody: %s", std::strerror(errno));
        auto state = read_capability_state();
        CHILD_CHECK(state && state->holds_none(), "capabilities left");

        auto opened = open_through_gate(true, {}, test::cooperative_features(), node);
        CHILD_CHECK(opened.has_value(), "refused: %s", opened.error().message.c_str());
        CHILD_CHECK(opened->decision.grant == Grant::DeviceNode, "grant was %s",
                    std::string(to_string(opened->decision.grant)).c_str());
        // The real /dev/userfaultfd (root 0600) is still closed to this user.
        CHILD_CHECK(!open_through_gate(true, {}, {}), "the host's node opened for nobody");
        std::string served = test::kernel_fault_served(opened->uffd);
        CHILD_CHECK(served.empty(), "kernel fault not served: %s", served.c_str());
        return 0;
    });
    std::filesystem::remove(dir);
    EXPECT_TRUE(child.exited_with(0)) << child.describe();
}

#if defined(__SANITIZE_THREAD__)
constexpr bool kThreadSanitizer = true;
#else
constexpr bool kThreadSanitizer = false;
#endif

TEST_F(PrivilegeProcess, AfterDroppingEveryCapabilityFaultsAreStillServed) {
    auto child = test::run_in_child([](std::FILE* report) {
        auto opened = open_through_gate(true, {}, test::cooperative_features());
        CHILD_CHECK(opened.has_value(), "refused: %s", opened.error().message.c_str());
        auto dropped = drop_all_capabilities();
        if (kThreadSanitizer) {
            // ThreadSanitizer runs a thread of its own, and capabilities are per thread: the
            // drop must refuse rather than leave that thread privileged.
            CHILD_CHECK(!dropped && dropped.error() == Errc::InvalidArgument,
                        "drop did not refuse with the sanitizer's thread running");
            std::fputs("skipped: ThreadSanitizer's own thread makes the process multi-threaded",
                       report);
            return 0;
        }
        CHILD_CHECK(dropped.has_value(), "drop: %s", dropped.error().message().c_str());
        auto state = read_capability_state();
        CHILD_CHECK(state.has_value(), "cannot read /proc/self/status");
        CHILD_CHECK(state->holds_none(), "CapInh=%llx CapPrm=%llx CapEff=%llx CapAmb=%llx",
                    static_cast<unsigned long long>(state->inheritable),
                    static_cast<unsigned long long>(state->permitted),
                    static_cast<unsigned long long>(state->effective),
                    static_cast<unsigned long long>(state->ambient));
        CHILD_CHECK(state->bounding == 0, "bounding set left: %llx",
                    static_cast<unsigned long long>(state->bounding));
        CHILD_CHECK(state->no_new_privs, "NoNewPrivs is not 1");
        // No capability means no new privileged userfaultfd...
        CHILD_CHECK(!open_through_gate(true, {}, {}, "/nonexistent"),
                    "a privileged userfaultfd could still be created");
        // ...but the one already open serves kernel faults.
        std::string served = test::kernel_fault_served(opened->uffd);
        CHILD_CHECK(served.empty(), "kernel fault not served: %s", served.c_str());
        return 0;
    });
    EXPECT_TRUE(child.exited_with(0)) << child.describe();
}

TEST_F(PrivilegeProcess, DroppingCapabilitiesWithTwoThreadsIsRefusedAndChangesNothing) {
    auto child = test::run_in_child([](std::FILE* report) {
        std::atomic<bool> release{false};
        std::thread other([&] {
            while (!release) {
                std::this_thread::sleep_for(std::chrono::milliseconds(1));
            }
        });
        auto dropped = drop_all_capabilities();
        release = true;
        other.join();
        CHILD_CHECK(!dropped && dropped.error() == Errc::InvalidArgument,
                    "drop with two threads was not refused");
        auto state = read_capability_state();
        CHILD_CHECK(state && state->effective != 0 && !state->no_new_privs,
                    "state changed although refused");
        return 0;
    });
    EXPECT_TRUE(child.exited_with(0)) << child.describe();
}

}  // namespace
}  // namespace uffdm::uffd
