// userfault_fd.hpp — An open, API-handshaken userfaultfd: registration and page placement.
#pragma once

#include <cstddef>
#include <cstdint>
#include <expected>
#include <string>
#include <system_error>

#include <uffdm/error.hpp>

#include "uffd/features.hpp"
#include "uffd/mapping.hpp"
#include "uffd/registration.hpp"
#include "uffd/unique_fd.hpp"

namespace uffdm::uffd {

inline constexpr const char* kDefaultDevicePath = "/dev/userfaultfd";

// How the descriptor is created. /dev/userfaultfd (USERFAULTFD_IOC_NEW, Linux 6.1+) is gated by
// plain file permissions; the userfaultfd(2) syscall is gated by CAP_SYS_PTRACE or
// vm.unprivileged_userfaultfd unless UFFD_USER_MODE_ONLY is asked for.
enum class OpenRoute : std::uint8_t { Invalid = 0, Auto, Device, Syscall };

[[nodiscard]] std::string_view to_string(OpenRoute route) noexcept;

struct OpenOptions {
    OpenRoute route = OpenRoute::Auto;
    std::string device_path = kDefaultDevicePath;
    // Only faults from user mode are reported; kernel-mode faults (copy_to_user, KVM) fail
    // with EFAULT instead. Needs no privilege.
    bool user_mode_only = false;
    // Open fails with Errc::Unsupported unless the kernel offers every required feature.
    FeatureSet required;
    // Granted where the kernel offers them.
    FeatureSet optional;
};

// Mode bits of UFFDIO_COPY.
struct CopyMode {
    bool dont_wake = false;      // the caller wakes the range later (UFFDIO_WAKE)
    bool write_protect = false;  // map the page write-protected (needs WP registration)
};

struct MoveMode {
    bool dont_wake = false;
    bool allow_source_holes = false;  // skip holes in the source instead of failing with ENOENT
};

// Every placement call (copy, zeropage, continue_minor, move, poison) returns the number of
// bytes it placed. Partial progress reported by the kernel is finished internally; a short
// count N < len means the page at dst+N stopped the call, and calling again at dst+N reports
// why (AlreadyPresent, RetryLater, ...). With no progress the error is returned directly:
//   Errc::AlreadyPresent  EEXIST — a page is there already. Nobody was woken: wake the range.
//   Errc::RetryLater      EAGAIN — a REMOVE/UNMAP/REMAP event is queued; read it, then retry.
//   Errc::NotRegistered   ENOENT — not inside one registration (or crosses its end).
//   Errc::Unaligned       not a multiple of the base page size (hugetlbfs: kernel EINVAL).
//   Errc::Unsupported     the feature or ioctl was not granted.
//   Errc::Closed          the descriptor was moved from.
class UserfaultFd {
  public:
    [[nodiscard]] static std::expected<UserfaultFd, std::error_code> open(
        const OpenOptions& options);
    // Features the kernel offers on this route, without keeping a descriptor.
    [[nodiscard]] static std::expected<FeatureSet, std::error_code> probe_features(
        const OpenOptions& options);
    // A userfaultfd made from an open /dev/userfaultfd (USERFAULTFD_IOC_NEW), for this process's
    // address space. A userfaultfd serves the address space of the process that creates it, so a
    // privileged helper hands over the open device, not a userfaultfd: access to the device was
    // checked when it was opened, and the new descriptor serves kernel faults without privilege.
    [[nodiscard]] static std::expected<UserfaultFd, std::error_code> from_device(
        const UniqueFd& device, FeatureSet required, FeatureSet optional);
    // Whether fd is an open userfaultfd device node (a character device) rather than a
    // userfaultfd.
    [[nodiscard]] static bool is_device(int fd) noexcept;
    // Takes a freshly created userfaultfd (for example received over SCM_RIGHTS from a
    // privileged helper) and performs the API handshake on it.
    [[nodiscard]] static std::expected<UserfaultFd, std::error_code> adopt(UniqueFd fd,
                                                                           FeatureSet required,
                                                                           FeatureSet optional);

    // A userfaultfd that another process created, initialised (UFFDIO_API) and registered its
    // own memory with, then handed over (Firecracker does): it serves that process's address
    // space, none of which is mapped here. What it was given is read from
    // /proc/self/fdinfo (no second handshake: the kernel allows one). Errc::InvalidArgument
    // for a descriptor that is no userfaultfd, or one never initialised.
    [[nodiscard]] static std::expected<UserfaultFd, std::error_code> adopt_initialized(UniqueFd fd);

    [[nodiscard]] int fd() const noexcept { return fd_.get(); }
    [[nodiscard]] bool valid() const noexcept { return fd_.valid(); }
    [[nodiscard]] FeatureSet granted() const noexcept { return granted_; }
    [[nodiscard]] FeatureSet offered() const noexcept { return offered_; }
    [[nodiscard]] IoctlSet api_ioctls() const noexcept { return api_ioctls_; }
    [[nodiscard]] OpenRoute route() const noexcept { return route_; }
    [[nodiscard]] bool user_mode_only() const noexcept { return user_mode_only_; }

    // Registers [start, start+length) in the given modes and checks that the ioctls those
    // modes need are in the mask the kernel returns.
    [[nodiscard]] std::expected<Registration, std::error_code> register_range(
        std::uint64_t start, std::uint64_t length, RegisterModes modes) const;
    // As register_range, but checks the features this memory kind needs first, so that a
    // missing one is reported as Errc::Unsupported instead of a bare EINVAL.
    [[nodiscard]] std::expected<Registration, std::error_code> register_mapping(
        const Mapping& mapping, RegisterModes modes) const;
    // A range whoever created the descriptor registered (MISSING mode), taken over: it is
    // unregistered when the Registration goes. Checked without changing anything: UFFDIO_CONTINUE
    // on its first and last page fails with ENOENT only where no registration is
    // (Errc::NotRegistered), and maps nothing where the page cache has no page.
    [[nodiscard]] std::expected<Registration, std::error_code> adopt_registration(
        std::uint64_t start, std::uint64_t length, std::uint64_t page_size) const;

    [[nodiscard]] std::expected<std::uint64_t, std::error_code> copy(std::uint64_t dst,
                                                                     const void* src,
                                                                     std::uint64_t len,
                                                                     CopyMode mode = {}) const;
    [[nodiscard]] std::expected<std::uint64_t, std::error_code> zeropage(
        std::uint64_t dst, std::uint64_t len, bool dont_wake = false) const;
    // Resolves MINOR faults: maps the page-cache pages already present for the range.
    [[nodiscard]] std::expected<std::uint64_t, std::error_code> continue_minor(
        std::uint64_t dst, std::uint64_t len, bool dont_wake = false,
        bool write_protect = false) const;
    // Moves anonymous pages from src to dst without copying (UFFDIO_MOVE, Linux 6.8+).
    [[nodiscard]] std::expected<std::uint64_t, std::error_code> move(std::uint64_t dst,
                                                                     std::uint64_t src,
                                                                     std::uint64_t len,
                                                                     MoveMode mode = {}) const;
    // Installs poison entries: touching the range raises SIGBUS (a memory error), not a hang.
    [[nodiscard]] std::expected<std::uint64_t, std::error_code> poison(
        std::uint64_t dst, std::uint64_t len, bool dont_wake = false) const;
    [[nodiscard]] std::expected<void, std::error_code> wake(std::uint64_t start,
                                                            std::uint64_t len) const;
    [[nodiscard]] std::expected<void, std::error_code> writeprotect(std::uint64_t start,
                                                                    std::uint64_t len, bool protect,
                                                                    bool dont_wake = false) const;
    // Whether a REMOVE, UNMAP or REMAP event of this descriptor is in flight: queued, or read
    // while its sender has not yet resumed. The kernel counts such an event from before the
    // sender drops the mmap lock, so once a range is unregistered, a discard that saw it
    // registered is seen here even before its event is queued. Asked with a write-protect
    // release of [start, start + len) that changes nothing: the range must hold no
    // write-protect registration of this descriptor (any unregistered range will do).
    [[nodiscard]] std::expected<bool, std::error_code> event_in_flight(std::uint64_t start,
                                                                       std::uint64_t len) const;

  private:
    UserfaultFd(UniqueFd fd, FeatureSet offered, FeatureSet granted, IoctlSet api_ioctls,
                OpenRoute route, bool user_mode_only) noexcept;
    static std::expected<UserfaultFd, std::error_code> handshake(UniqueFd fd, FeatureSet offered,
                                                                 FeatureSet required,
                                                                 FeatureSet optional,
                                                                 OpenRoute route,
                                                                 bool user_mode_only);

    UniqueFd fd_;
    FeatureSet offered_;
    FeatureSet granted_;
    IoctlSet api_ioctls_;
    OpenRoute route_ = OpenRoute::Invalid;
    bool user_mode_only_ = false;
};

}  // namespace uffdm::uffd
