// privilege_probe.cpp — The thin, impure half of the gate: ask the system, then open for real.
#include "uffd/privilege_probe.hpp"

#include <fcntl.h>
#include <sys/capability.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>
#include <fstream>

#include "uffd/system_error.hpp"

namespace uffdm::uffd {

namespace {

std::optional<long long> read_number(const char* path) {
    std::ifstream in(path);
    long long value = 0;
    if (in >> value) {
        return value;
    }
    return std::nullopt;
}

bool effective_has(cap_value_t cap) {
    cap_t caps = ::cap_get_proc();
    if (caps == nullptr) {
        return false;
    }
    cap_flag_value_t value = CAP_CLEAR;
    bool ok = ::cap_get_flag(caps, cap, CAP_EFFECTIVE, &value) == 0;
    ::cap_free(caps);
    return ok && value == CAP_SET;
}

// The initial user namespace maps every id onto itself: "0 0 4294967295".
bool in_user_namespace() {
    std::ifstream in("/proc/self/uid_map");
    unsigned long long inside = 0;
    unsigned long long outside = 0;
    unsigned long long count = 0;
    if (!(in >> inside >> outside >> count)) {
        return false;
    }
    return !(inside == 0 && outside == 0 && count == 4294967295ULL);
}

}  // namespace

PrivilegeFacts probe_privileges(std::string_view device_path) {
    PrivilegeFacts facts;
    facts.device_path = std::string(device_path);

    struct stat st {};
    facts.device_exists = ::stat(facts.device_path.c_str(), &st) == 0;
    int dev = ::open(facts.device_path.c_str(), O_RDWR | O_CLOEXEC);
    if (dev >= 0) {
        facts.device_accessible = true;
        ::close(dev);
    } else {
        facts.device_errno = errno;
    }

    if (auto v = read_number("/proc/sys/vm/unprivileged_userfaultfd")) {
        facts.unprivileged_sysctl = static_cast<int>(*v);
    }

    facts.cap_sys_ptrace = effective_has(CAP_SYS_PTRACE);
    cap_value_t userfaultfd_cap = 0;
    auto last_cap = read_number("/proc/sys/kernel/cap_last_cap");
    if (::cap_from_name("cap_userfaultfd", &userfaultfd_cap) == 0 && last_cap &&
        userfaultfd_cap <= *last_cap) {
        facts.cap_userfaultfd_known = true;
        facts.cap_userfaultfd = effective_has(userfaultfd_cap);
    }

    int fd = static_cast<int>(::syscall(SYS_userfaultfd, O_CLOEXEC | UFFD_USER_MODE_ONLY));
    if (fd >= 0) {
        facts.syscall_available = true;
        ::close(fd);
    } else {
        facts.syscall_errno = errno;
    }
    facts.in_user_namespace = in_user_namespace();
    return facts;
}

std::expected<GateOpened, GateRefusal> open_with_decision(const PrivilegeFacts& facts,
                                                          const GateDecision& decision,
                                                          bool need_kernel_faults,
                                                          FeatureSet required,
                                                          FeatureSet optional) {
    if (decision.scope == FaultScope::Nothing) {
        return std::unexpected(GateRefusal{make_error_code(Errc::Unsupported),
                                           decision.refusal + "; no userfaultfd can be created"});
    }
    if (need_kernel_faults && decision.scope != FaultScope::KernelAndUser) {
        return std::unexpected(
            GateRefusal{make_error_code(Errc::PermissionDenied), decision.refusal});
    }
    OpenOptions options{.route = decision.route,
                        .device_path = facts.device_path,
                        .user_mode_only = decision.user_mode_only,
                        .required = required,
                        .optional = optional};
    auto uffd = UserfaultFd::open(options);
    if (!uffd) {
        std::string message = "cannot open a userfaultfd through " +
                              std::string(to_string(decision.grant)) + " (" +
                              uffd.error().message() + ")";
        if (uffd.error() == std::errc::operation_not_permitted ||
            uffd.error() == std::errc::permission_denied) {
            message += ": the kernel refused although the grant seemed to hold";
            if (facts.in_user_namespace) {
                message += "; this process runs in a user namespace";
            }
            message += " (a seccomp filter or an LSM may also deny it; " +
                       remedies(facts.device_path) + ")";
            return std::unexpected(GateRefusal{make_error_code(Errc::PermissionDenied), message});
        }
        return std::unexpected(GateRefusal{uffd.error(), message});
    }
    return GateOpened{std::move(*uffd), decision};
}

std::expected<GateOpened, GateRefusal> open_through_gate(bool need_kernel_faults,
                                                         FeatureSet required, FeatureSet optional,
                                                         std::string_view device_path) {
    PrivilegeFacts facts = probe_privileges(device_path);
    return open_with_decision(facts, decide(facts), need_kernel_faults, required, optional);
}

}  // namespace uffdm::uffd
