// privilege_gate.hpp — Decides, from gathered facts, whether kernel-mode faults can be served.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "uffd/userfault_fd.hpp"

namespace uffdm::uffd {

// What the probe found out about this process and host. Plain data, so the decision is a pure
// function that can be tested row by row without root.
struct PrivilegeFacts {
    std::string device_path = kDefaultDevicePath;
    bool device_exists = false;
    bool device_accessible = false;          // open(device_path, O_RDWR) succeeded
    int device_errno = 0;                    // why it did not (ENOENT, EACCES, ...)
    std::optional<int> unprivileged_sysctl;  // vm.unprivileged_userfaultfd; nullopt: unreadable
    bool cap_sys_ptrace = false;             // in the effective set
    // CAP_USERFAULTFD was proposed upstream and not merged: its number is not reserved, so it
    // is known only when libcap resolves the name and the kernel's cap_last_cap covers it.
    bool cap_userfaultfd_known = false;
    bool cap_userfaultfd = false;    // in the effective set (only meaningful when known)
    bool syscall_available = false;  // userfaultfd(UFFD_USER_MODE_ONLY) works
    int syscall_errno = 0;
    // Capabilities held inside a user namespace do not satisfy capable() in the initial one,
    // which is what userfaultfd(2) checks.
    bool in_user_namespace = false;
};

// The ways to be allowed kernel-mode faults, in the order the gate prefers them.
enum class Grant : std::uint8_t {
    Invalid = 0,
    DeviceNode,      // read-write access to /dev/userfaultfd (Linux 6.1+): plain file permissions
    CapUserfaultfd,  // the proposed narrow capability, where the running kernel has it
    CapSysPtrace,    // what the kernel actually checks for userfaultfd(2) today
    UnprivilegedSysctl,  // vm.unprivileged_userfaultfd = 1: every user may, host-wide
    None,
};

enum class FaultScope : std::uint8_t {
    Invalid = 0,
    KernelAndUser,  // a full userfaultfd: KVM, read(2), vCPU threads
    UserOnly,       // UFFD_USER_MODE_ONLY: kernel-mode touches fail with EFAULT
    Nothing,        // no userfaultfd at all
};

[[nodiscard]] std::string_view to_string(Grant grant) noexcept;
[[nodiscard]] std::string_view to_string(FaultScope scope) noexcept;

// One row of "what this host allows".
struct GrantStatus {
    Grant grant = Grant::Invalid;
    bool holds = false;
    std::string detail;  // why it holds or not, in words
};

struct GateDecision {
    FaultScope scope = FaultScope::Invalid;
    Grant grant = Grant::None;  // the grant that allows kernel faults, or None
    // How to open the userfaultfd that this decision allows.
    OpenRoute route = OpenRoute::Invalid;
    bool user_mode_only = false;
    // Every grant, whether it holds and why.
    std::vector<GrantStatus> grants;
    // Empty when kernel faults are allowed; otherwise what is missing and the four ways to fix
    // it, in one line.
    std::string refusal;
};

// The pure decision. Same facts, same answer.
[[nodiscard]] GateDecision decide(const PrivilegeFacts& facts);

// The sentence naming every way to be allowed kernel faults.
[[nodiscard]] std::string remedies(std::string_view device_path);

}  // namespace uffdm::uffd
