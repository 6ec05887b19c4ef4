// privilege_gate.cpp — The pure decision: facts in, grant and refusal message out.
#include "uffd/privilege_gate.hpp"

#include <cstring>

namespace uffdm::uffd {

std::string_view to_string(Grant grant) noexcept {
    switch (grant) {
        case Grant::DeviceNode:
            return "device-node";
        case Grant::CapUserfaultfd:
            return "cap-userfaultfd";
        case Grant::CapSysPtrace:
            return "cap-sys-ptrace";
        case Grant::UnprivilegedSysctl:
            return "unprivileged-sysctl";
        case Grant::None:
            return "none";
        case Grant::Invalid:
            break;
    }
    return "invalid";
}

std::string_view to_string(FaultScope scope) noexcept {
    switch (scope) {
        case FaultScope::KernelAndUser:
            return "kernel-and-user";
        case FaultScope::UserOnly:
            return "user-only";
        case FaultScope::Nothing:
            return "nothing";
        case FaultScope::Invalid:
            break;
    }
    return "invalid";
}

std::string remedies(std::string_view device_path) {
    return "grant one of these: read-write access to " + std::string(device_path) +
           " (e.g. setfacl -m u:USER:rw " + std::string(device_path) +
           "), CAP_USERFAULTFD on a kernel that has it, CAP_SYS_PTRACE (e.g. setcap "
           "cap_sys_ptrace+ep on the binary), or sysctl vm.unprivileged_userfaultfd=1";
}

namespace {

std::string errno_name(int err) {
    switch (err) {
        case ENOENT:
            return "ENOENT";
        case EACCES:
            return "EACCES";
        case EPERM:
            return "EPERM";
        case ENOSYS:
            return "ENOSYS";
        default:
            return std::strerror(err);
    }
}

GrantStatus device_status(const PrivilegeFacts& f) {
    if (f.device_accessible) {
        return {Grant::DeviceNode, true, "read-write access to " + f.device_path};
    }
    if (!f.device_exists) {
        return {Grant::DeviceNode, false, f.device_path + " does not exist (Linux 6.1+ has it)"};
    }
    return {Grant::DeviceNode, false,
            "no read-write access to " + f.device_path + " (" + errno_name(f.device_errno) + ")"};
}

GrantStatus capability_status(Grant grant, const char* name, bool known, bool held,
                              bool in_user_namespace) {
    if (!known) {
        return {grant, false, std::string(name) + " is unknown to this kernel"};
    }
    if (!held) {
        return {grant, false, std::string("no ") + name + " in the effective set"};
    }
    if (in_user_namespace) {
        return {grant, false,
                std::string(name) +
                    " is held only inside a user namespace, where the kernel does not honour it "
                    "for userfaultfd"};
    }
    return {grant, true, std::string(name) + " in the effective set"};
}

GrantStatus sysctl_status(const PrivilegeFacts& f) {
    if (!f.unprivileged_sysctl) {
        return {Grant::UnprivilegedSysctl, false, "vm.unprivileged_userfaultfd is unreadable"};
    }
    bool holds = *f.unprivileged_sysctl == 1;
    return {Grant::UnprivilegedSysctl, holds,
            "vm.unprivileged_userfaultfd=" + std::to_string(*f.unprivileged_sysctl)};
}

}  // namespace

GateDecision decide(const PrivilegeFacts& facts) {
    GateDecision d;
    d.grants = {
        device_status(facts),
        capability_status(Grant::CapUserfaultfd, "CAP_USERFAULTFD", facts.cap_userfaultfd_known,
                          facts.cap_userfaultfd, facts.in_user_namespace),
        capability_status(Grant::CapSysPtrace, "CAP_SYS_PTRACE", true, facts.cap_sys_ptrace,
                          facts.in_user_namespace),
        sysctl_status(facts),
    };
    // The syscall is what the capabilities and the sysctl unlock; without it only the device
    // node can work.
    for (const GrantStatus& g : d.grants) {
        bool usable = g.holds && (g.grant == Grant::DeviceNode || facts.syscall_available);
        if (usable) {
            d.scope = FaultScope::KernelAndUser;
            d.grant = g.grant;
            d.route = g.grant == Grant::DeviceNode ? OpenRoute::Device : OpenRoute::Syscall;
            d.user_mode_only = false;
            return d;
        }
    }
    std::string missing;
    for (const GrantStatus& g : d.grants) {
        missing += (missing.empty() ? "" : ", ") + g.detail;
    }
    if (!facts.syscall_available) {
        missing += ", and userfaultfd(2) itself fails (" + errno_name(facts.syscall_errno) + ")";
    }
    d.refusal = "cannot serve kernel faults: " + missing + " (" + remedies(facts.device_path) + ")";
    if (facts.syscall_available) {
        d.scope = FaultScope::UserOnly;
        d.route = OpenRoute::Syscall;
        d.user_mode_only = true;
    } else {
        d.scope = FaultScope::Nothing;
        d.route = OpenRoute::Invalid;
    }
    return d;
}

}  // namespace uffdm::uffd
