// uffdm.hpp — The public C++ API of uffd-migrate.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <uffdm/error.hpp>

namespace uffdm {

// "MAJOR.MINOR.PATCH" of this library.
[[nodiscard]] std::string_view version() noexcept;

// ---- What this host allows (uffd-migrate check) ---------------------------------------------

struct CheckOptions {
    std::string device_path = "/dev/userfaultfd";
};

// One way of being allowed to serve kernel-mode faults, and whether it holds here.
struct GrantReport {
    std::string name;  // device-node, cap-userfaultfd, cap-sys-ptrace, unprivileged-sysctl
    bool holds = false;
    std::string detail;
};

// What registering one kind of guest memory gives: the ioctls the kernel allows there.
struct MemoryKindReport {
    std::string kind;                         // anonymous, shmem, hugetlb
    bool available = false;                   // the memory could be mapped and registered
    std::string note;                         // why not, when not
    std::vector<std::string> missing_ioctls;  // registered in MISSING mode
    std::vector<std::string> minor_ioctls;    // MINOR mode (empty where unsupported)
    std::vector<std::string> wp_ioctls;       // WP mode (empty where unsupported)
};

enum class HostVerdict : std::uint8_t {
    Invalid = 0,
    KernelFaults = 1,    // a full userfaultfd: guest and kernel (KVM, read(2)) faults are served
    UserFaultsOnly = 2,  // only UFFD_USER_MODE_ONLY: a destination needing kernel faults refuses
    NoUserfaultfd = 3,
};

struct HostReport {
    std::string kernel_release;
    std::string machine;
    HostVerdict verdict = HostVerdict::Invalid;
    std::string grant;                   // the grant used for kernel faults, or "none"
    std::string refusal;                 // empty when kernel faults are allowed
    std::string open_route;              // device or syscall, for the userfaultfd opened to check
    std::string open_error;              // set when even that failed
    std::uint64_t features_offered = 0;  // UFFD_FEATURE_* bits
    std::vector<std::string> feature_names;
    std::vector<std::string> api_ioctls;
    std::vector<GrantReport> grants;
    bool in_user_namespace = false;
    std::vector<MemoryKindReport> memory_kinds;
    std::uint64_t huge_page_size = 0;
    std::uint64_t huge_pages_total = 0;
    std::uint64_t huge_pages_free = 0;
    bool io_uring_available = false;
    std::string io_uring_detail;

    // 0: kernel faults can be served; 2: user-mode faults only; 1: no userfaultfd.
    [[nodiscard]] int exit_code() const noexcept;
};

// Probes privileges and the kernel. Never throws on a refusal: the report says what failed.
[[nodiscard]] HostReport check_host(const CheckOptions& options = {});

[[nodiscard]] std::string_view to_string(HostVerdict verdict) noexcept;

}  // namespace uffdm
