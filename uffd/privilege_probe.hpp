// privilege_probe.hpp — Gathers privilege facts from this process and opens through the gate.
#pragma once

#include <expected>
#include <string>
#include <string_view>
#include <system_error>

#include "uffd/privilege_gate.hpp"
#include "uffd/userfault_fd.hpp"

namespace uffdm::uffd {

// Looks at this process and host: the device node, the sysctl, the effective capabilities
// (libcap), whether userfaultfd(2) exists, and whether we run in a user namespace.
[[nodiscard]] PrivilegeFacts probe_privileges(std::string_view device_path = kDefaultDevicePath);

struct GateRefusal {
    std::error_code code;
    std::string message;  // what failed and what to do
};

struct GateOpened {
    UserfaultFd uffd;
    GateDecision decision;
};

// Probes, decides, and confirms the decision by opening a real userfaultfd on the decided
// route. need_kernel_faults=true refuses (Errc::PermissionDenied, with every remedy named)
// when only user-mode faults are possible; false falls back to UFFD_USER_MODE_ONLY. When the
// kernel refuses although the facts said yes (a seccomp filter, a user namespace, an LSM),
// the message says so.
[[nodiscard]] std::expected<GateOpened, GateRefusal> open_through_gate(
    bool need_kernel_faults, FeatureSet required, FeatureSet optional,
    std::string_view device_path = kDefaultDevicePath);

// The same, from facts already gathered (for callers that report them too).
[[nodiscard]] std::expected<GateOpened, GateRefusal> open_with_decision(
    const PrivilegeFacts& facts, const GateDecision& decision, bool need_kernel_faults,
    FeatureSet required, FeatureSet optional);

}  // namespace uffdm::uffd
