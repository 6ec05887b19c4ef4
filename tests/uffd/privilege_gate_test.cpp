// privilege_gate_test.cpp — The pure decision, row by row, without root.
#include <gtest/gtest.h>

#include "uffd/privilege_gate.hpp"

namespace uffdm::uffd {
namespace {

// Nothing granted; the syscall exists (so user-mode faults are possible).
PrivilegeFacts nothing_granted() {
    PrivilegeFacts f;
    f.device_exists = true;
    f.device_accessible = false;
    f.device_errno = EACCES;
    f.unprivileged_sysctl = 0;
    f.syscall_available = true;
    return f;
}

bool mentions_every_remedy(const std::string& message) {
    return message.find("/dev/userfaultfd") != std::string::npos &&
           message.find("CAP_USERFAULTFD") != std::string::npos &&
           message.find("CAP_SYS_PTRACE") != std::string::npos &&
           message.find("vm.unprivileged_userfaultfd") != std::string::npos;
}

const GrantStatus& row(const GateDecision& d, Grant g) {
    for (const auto& s : d.grants) {
        if (s.grant == g) {
            return s;
        }
    }
    throw std::logic_error("missing grant row");
}

TEST(PrivilegeGate, DeviceAccessIsPreferredOverEverythingElse) {
    PrivilegeFacts f = nothing_granted();
    f.device_accessible = true;
    f.cap_sys_ptrace = true;
    f.unprivileged_sysctl = 1;
    GateDecision d = decide(f);
    EXPECT_EQ(d.scope, FaultScope::KernelAndUser);
    EXPECT_EQ(d.grant, Grant::DeviceNode);
    EXPECT_EQ(d.route, OpenRoute::Device);
    EXPECT_FALSE(d.user_mode_only);
    EXPECT_TRUE(d.refusal.empty());
    EXPECT_EQ(d.grants.size(), 4u);
}

TEST(PrivilegeGate, CapUserfaultfdCountsOnlyWhereTheKernelKnowsIt) {
    PrivilegeFacts f = nothing_granted();
    f.cap_userfaultfd_known = true;
    f.cap_userfaultfd = true;
    EXPECT_EQ(decide(f).grant, Grant::CapUserfaultfd);
    EXPECT_EQ(decide(f).route, OpenRoute::Syscall);

    f.cap_userfaultfd_known = false;
    GateDecision d = decide(f);
    EXPECT_EQ(d.scope, FaultScope::UserOnly);
    EXPECT_NE(row(d, Grant::CapUserfaultfd).detail.find("unknown to this kernel"),
              std::string::npos);
}

TEST(PrivilegeGate, CapSysPtraceAllowsKernelFaultsThroughTheSyscall) {
    PrivilegeFacts f = nothing_granted();
    f.cap_sys_ptrace = true;
    GateDecision d = decide(f);
    EXPECT_EQ(d.grant, Grant::CapSysPtrace);
    EXPECT_EQ(d.route, OpenRoute::Syscall);
    EXPECT_TRUE(row(d, Grant::CapSysPtrace).holds);
    EXPECT_FALSE(row(d, Grant::DeviceNode).holds);
}

TEST(PrivilegeGate, CapabilityHeldOnlyInAUserNamespaceDoesNotCount) {
    PrivilegeFacts f = nothing_granted();
    f.cap_sys_ptrace = true;
    f.in_user_namespace = true;
    GateDecision d = decide(f);
    EXPECT_EQ(d.scope, FaultScope::UserOnly);
    EXPECT_NE(d.refusal.find("user namespace"), std::string::npos) << d.refusal;
}

TEST(PrivilegeGate, SysctlAllowsEveryone) {
    PrivilegeFacts f = nothing_granted();
    f.unprivileged_sysctl = 1;
    GateDecision d = decide(f);
    EXPECT_EQ(d.grant, Grant::UnprivilegedSysctl);
    EXPECT_EQ(d.scope, FaultScope::KernelAndUser);
}

TEST(PrivilegeGate, NothingGrantedMeansUserModeOnlyAndARefusalNamingEveryFix) {
    GateDecision d = decide(nothing_granted());
    EXPECT_EQ(d.scope, FaultScope::UserOnly);
    EXPECT_EQ(d.grant, Grant::None);
    EXPECT_TRUE(d.user_mode_only);
    EXPECT_EQ(d.route, OpenRoute::Syscall);
    EXPECT_TRUE(mentions_every_remedy(d.refusal)) << d.refusal;
    EXPECT_NE(d.refusal.find("cannot serve kernel faults"), std::string::npos);
    EXPECT_NE(d.refusal.find("EACCES"), std::string::npos);
}

TEST(PrivilegeGate, UnreadableSysctlIsSaidSo) {
    PrivilegeFacts f = nothing_granted();
    f.unprivileged_sysctl.reset();
    EXPECT_NE(decide(f).refusal.find("unreadable"), std::string::npos);
}

TEST(PrivilegeGate, NoSyscallAndNoDeviceMeansNoUserfaultfd) {
    PrivilegeFacts f = nothing_granted();
    f.syscall_available = false;
    f.syscall_errno = ENOSYS;
    f.cap_sys_ptrace = true;  // useless without the syscall
    GateDecision d = decide(f);
    EXPECT_EQ(d.scope, FaultScope::Nothing);
    EXPECT_NE(d.refusal.find("ENOSYS"), std::string::npos) << d.refusal;
}

TEST(PrivilegeGate, DeviceWorksEvenWithoutTheSyscall) {
    PrivilegeFacts f = nothing_granted();
    f.syscall_available = false;
    f.device_accessible = true;
    EXPECT_EQ(decide(f).grant, Grant::DeviceNode);
}

TEST(PrivilegeGate, MissingDeviceNodeIsExplained) {
    PrivilegeFacts f = nothing_granted();
    f.device_exists = false;
    f.device_errno = ENOENT;
    EXPECT_NE(row(decide(f), Grant::DeviceNode).detail.find("does not exist"), std::string::npos);
}

TEST(PrivilegeGate, SameFactsSameAnswer) {
    PrivilegeFacts f = nothing_granted();
    f.cap_sys_ptrace = true;
    GateDecision a = decide(f);
    GateDecision b = decide(f);
    EXPECT_EQ(a.grant, b.grant);
    EXPECT_EQ(a.refusal, b.refusal);
}

}  // namespace
}  // namespace uffdm::uffd
