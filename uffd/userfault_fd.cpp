// userfault_fd.cpp — Creating a userfaultfd, the UFFDIO_API handshake and range registration.
#include "uffd/userfault_fd.hpp"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <string>
#include <string_view>
#include <utility>

#include "uffd/system_error.hpp"
#include "uffd/uapi.hpp"

namespace uffdm::uffd {

std::string_view to_string(OpenRoute route) noexcept {
    switch (route) {
        case OpenRoute::Auto:
            return "auto";
        case OpenRoute::Device:
            return "device";
        case OpenRoute::Syscall:
            return "syscall";
        case OpenRoute::Invalid:
            break;
    }
    return "invalid";
}

namespace {

struct RawOpen {
    UniqueFd fd;
    OpenRoute route;
};

std::expected<UniqueFd, std::error_code> open_via_device(const std::string& path, int flags) {
    int dev = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (dev < 0) {
        return fail_errno();
    }
    UniqueFd device(dev);
    int fd = ::ioctl(device.get(), USERFAULTFD_IOC_NEW, flags);
    if (fd < 0) {
        return fail_errno();
    }
    return UniqueFd(fd);
}

std::expected<UniqueFd, std::error_code> open_via_syscall(int flags) {
    int fd = static_cast<int>(::syscall(SYS_userfaultfd, flags));
    if (fd < 0) {
        return fail_errno();
    }
    return UniqueFd(fd);
}

std::expected<RawOpen, std::error_code> open_raw(const OpenOptions& options) {
    int flags = O_CLOEXEC | O_NONBLOCK | (options.user_mode_only ? UFFD_USER_MODE_ONLY : 0);
    switch (options.route) {
        case OpenRoute::Device: {
            auto fd = open_via_device(options.device_path, flags);
            if (!fd) {
                return std::unexpected(fd.error());
            }
            return RawOpen{std::move(*fd), OpenRoute::Device};
        }
        case OpenRoute::Syscall: {
            auto fd = open_via_syscall(flags);
            if (!fd) {
                return std::unexpected(fd.error());
            }
            return RawOpen{std::move(*fd), OpenRoute::Syscall};
        }
        case OpenRoute::Auto: {
            // The device node is the least-privilege route; fall back to the syscall when the
            // node is missing or this process may not open it.
            if (auto fd = open_via_device(options.device_path, flags)) {
                return RawOpen{std::move(*fd), OpenRoute::Device};
            }
            auto fd = open_via_syscall(flags);
            if (!fd) {
                return std::unexpected(fd.error());
            }
            return RawOpen{std::move(*fd), OpenRoute::Syscall};
        }
        case OpenRoute::Invalid:
            break;
    }
    return fail(Errc::InvalidArgument);
}

// UFFDIO_API may succeed only once per context; a failed call leaves it uninitialised, so
// the caller may retry with fewer features.
std::expected<uffdio_api, std::error_code> api_handshake(int fd, std::uint64_t features) {
    uffdio_api api{.api = UFFD_API, .features = features, .ioctls = 0};
    if (::ioctl(fd, UFFDIO_API, &api) < 0) {
        return fail_errno();
    }
    return api;
}

// Asks a throwaway context which features the kernel offers (UFFDIO_API with features = 0
// reports them all and enables none).
std::expected<FeatureSet, std::error_code> offered_features(int fd) {
    auto api = api_handshake(fd, 0);
    if (!api) {
        return std::unexpected(api.error());
    }
    return FeatureSet(api->features);
}

}  // namespace

UserfaultFd::UserfaultFd(UniqueFd fd, FeatureSet offered, FeatureSet granted, IoctlSet api_ioctls,
                         OpenRoute route, bool user_mode_only) noexcept
    : fd_(std::move(fd)),
      offered_(offered),
      granted_(granted),
      api_ioctls_(api_ioctls),
      route_(route),
      user_mode_only_(user_mode_only) {}

std::expected<FeatureSet, std::error_code> UserfaultFd::probe_features(const OpenOptions& options) {
    auto probe = open_raw(options);
    if (!probe) {
        return std::unexpected(probe.error());
    }
    return offered_features(probe->fd.get());
}

std::expected<UserfaultFd, std::error_code> UserfaultFd::open(const OpenOptions& options) {
    auto offered = probe_features(options);
    if (!offered) {
        return std::unexpected(offered.error());
    }
    auto raw = open_raw(options);
    if (!raw) {
        return std::unexpected(raw.error());
    }
    return handshake(std::move(raw->fd), *offered, options.required, options.optional, raw->route,
                     options.user_mode_only);
}

std::expected<UserfaultFd, std::error_code> UserfaultFd::from_device(const UniqueFd& device,
                                                                     FeatureSet required,
                                                                     FeatureSet optional) {
    int fd = ::ioctl(device.get(), USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        return fail_errno();
    }
    auto uffd = adopt(UniqueFd(fd), required, optional);
    if (uffd) {
        uffd->route_ = OpenRoute::Device;
    }
    return uffd;
}

bool UserfaultFd::is_device(int fd) noexcept {
    struct stat st {};
    return ::fstat(fd, &st) == 0 && S_ISCHR(st.st_mode);
}

std::expected<UserfaultFd, std::error_code> UserfaultFd::adopt(UniqueFd fd, FeatureSet required,
                                                               FeatureSet optional) {
    if (!fd) {
        return fail(Errc::Closed);
    }
    // A received descriptor cannot be asked what it offers without initialising it, so try
    // everything wanted first and drop the optional features if the kernel refuses.
    auto full = api_handshake(fd.get(), (required | optional).bits());
    if (full) {
        return UserfaultFd(std::move(fd), FeatureSet(full->features), required | optional,
                           IoctlSet(full->ioctls), OpenRoute::Invalid, false);
    }
    auto minimal = api_handshake(fd.get(), required.bits());
    if (!minimal) {
        return std::unexpected(minimal.error() == std::errc::invalid_argument
                                   ? make_error_code(Errc::Unsupported)
                                   : minimal.error());
    }
    return UserfaultFd(std::move(fd), FeatureSet(minimal->features), required,
                       IoctlSet(minimal->ioctls), OpenRoute::Invalid, false);
}

namespace {

// The "API:\taa:FEATURES:IOCTLS" line of a userfaultfd's fdinfo (features and ioctls in hex).
struct FdInfoApi {
    std::uint64_t features = 0;
    std::uint64_t ioctls = 0;
};

std::expected<FdInfoApi, std::error_code> read_fdinfo_api(int fd) {
    std::string path = "/proc/self/fdinfo/" + std::to_string(fd);
    UniqueFd info(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!info) {
        return fail_errno();
    }
    std::string text(4096, '\0');
    ssize_t got = ::read(info.get(), text.data(), text.size());
    if (got < 0) {
        return fail_errno();
    }
    text.resize(static_cast<std::size_t>(got));
    auto at = text.find("\nAPI:\t");
    if (at == std::string::npos) {
        return fail(Errc::InvalidArgument);
    }
    FdInfoApi api;
    unsigned long long version = 0;
    unsigned long long features = 0;
    unsigned long long ioctls = 0;
    if (std::sscanf(text.c_str() + at + 6, "%llx:%llx:%llx", &version, &features, &ioctls) != 3) {
        return fail(Errc::InvalidArgument);
    }
    api.features = features;
    api.ioctls = ioctls;
    return api;
}

bool is_userfaultfd(int fd) {
    std::string link = "/proc/self/fd/" + std::to_string(fd);
    std::array<char, 64> target{};
    ssize_t n = ::readlink(link.c_str(), target.data(), target.size() - 1);
    return n > 0 && std::string_view(target.data(), static_cast<std::size_t>(n)) ==
                        "anon_inode:[userfaultfd]";
}

// Kernels since 6.x show this internal bit once UFFDIO_API has run.
constexpr std::uint64_t kFeatureInitialized = 1ULL << 31;

}  // namespace

std::expected<UserfaultFd, std::error_code> UserfaultFd::adopt_initialized(UniqueFd fd) {
    if (!fd) {
        return fail(Errc::Closed);
    }
    if (!is_userfaultfd(fd.get())) {
        return fail(Errc::InvalidArgument);
    }
    auto api = read_fdinfo_api(fd.get());
    if (!api) {
        return std::unexpected(api.error());
    }
    if ((api->features & kFeatureInitialized) == 0 && api->features == 0) {
        return fail(Errc::InvalidArgument);  // UFFDIO_API never ran: nothing is registered
    }
    FeatureSet features(api->features & ~kFeatureInitialized);
    return UserfaultFd(std::move(fd), features, features, IoctlSet(api->ioctls), OpenRoute::Invalid,
                       false);
}

std::expected<UserfaultFd, std::error_code> UserfaultFd::handshake(UniqueFd fd, FeatureSet offered,
                                                                   FeatureSet required,
                                                                   FeatureSet optional,
                                                                   OpenRoute route,
                                                                   bool user_mode_only) {
    if (!offered.contains(required)) {
        return fail(Errc::Unsupported);
    }
    FeatureSet wanted = required | (optional & offered);
    auto api = api_handshake(fd.get(), wanted.bits());
    // EVENT_FORK additionally needs CAP_SYS_PTRACE (the child's memory is handed to us);
    // without it the kernel says EPERM, and an optional FORK is simply left out.
    if (!api && api.error() == std::errc::operation_not_permitted &&
        wanted.has(Feature::EventFork) && !required.has(Feature::EventFork)) {
        wanted = wanted.without(FeatureSet{Feature::EventFork});
        api = api_handshake(fd.get(), wanted.bits());
    }
    if (!api) {
        return std::unexpected(api.error() == std::errc::operation_not_permitted
                                   ? make_error_code(Errc::PermissionDenied)
                                   : api.error());
    }
    return UserfaultFd(std::move(fd), offered, wanted, IoctlSet(api->ioctls), route,
                       user_mode_only);
}

namespace {

bool aligned(std::uint64_t value, std::uint64_t to) {
    return value % to == 0;
}

}  // namespace

std::expected<Registration, std::error_code> UserfaultFd::adopt_registration(
    std::uint64_t start, std::uint64_t length, std::uint64_t page_size) const {
    if (!fd_) {
        return fail(Errc::Closed);
    }
    if (length == 0 || page_size == 0 || start + length < start || !aligned(start, page_size) ||
        !aligned(length, page_size)) {
        return fail(Errc::InvalidArgument);
    }
    for (std::uint64_t page : {start, start + length - page_size}) {
        uffdio_continue probe{.range = {.start = page, .len = page_size},
                              .mode = UFFDIO_CONTINUE_MODE_DONTWAKE,
                              .mapped = 0};
        for (int attempt = 0;; ++attempt) {
            if (::ioctl(fd_.get(), UFFDIO_CONTINUE, &probe) == 0) {
                break;  // shmem with the page in its page cache: mapped, as a fault would
            }
            if (errno == ENOENT) {
                return fail(Errc::NotRegistered);
            }
            if (errno == ESRCH) {
                return fail_errno();  // the process whose memory it is has exited
            }
            if (errno == EAGAIN && attempt < 1000) {
                continue;  // an event of the other process's is queued: read it, then ask
            }
            break;  // EINVAL (anonymous), EFAULT (no page-cache page), EEXIST: registered
        }
    }
    int dup = ::fcntl(fd_.get(), F_DUPFD_CLOEXEC, 0);
    if (dup < 0) {
        return fail_errno();
    }
    std::uint64_t ioctls =
        (1ULL << _UFFDIO_WAKE) | (1ULL << _UFFDIO_COPY) | (1ULL << _UFFDIO_ZEROPAGE);
    return Registration(UniqueFd(dup), start, length, RegisterModes::missing_only(),
                        IoctlSet(ioctls));
}

std::expected<Registration, std::error_code> UserfaultFd::register_range(
    std::uint64_t start, std::uint64_t length, RegisterModes modes) const {
    if (!fd_) {
        return fail(Errc::Closed);
    }
    if (modes.bits() == 0 || length == 0 || start + length < start) {
        return fail(Errc::InvalidArgument);
    }
    if (!aligned(start, base_page_size()) || !aligned(length, base_page_size())) {
        return fail(Errc::Unaligned);
    }
    if (modes.write_protect && !offered_.has(Feature::PagefaultFlagWp)) {
        return fail(Errc::Unsupported);
    }
    int dup = ::fcntl(fd_.get(), F_DUPFD_CLOEXEC, 0);
    if (dup < 0) {
        return fail_errno();
    }
    UniqueFd uffd(dup);
    uffdio_register reg{
        .range = {.start = start, .len = length}, .mode = modes.bits(), .ioctls = 0};
    if (::ioctl(uffd.get(), UFFDIO_REGISTER, &reg) < 0) {
        int err = errno;
        // EINVAL covers both "no mapping there" and "a mapping that cannot be registered"
        // (or hugetlbfs misalignment); msync(2) tells a hole apart with ENOMEM.
        if (err == EINVAL && ::msync(reinterpret_cast<void*>(start), length, MS_ASYNC) < 0 &&
            errno == ENOMEM) {
            return fail(Errc::NotMapped);
        }
        return fail_errno(err);
    }
    Registration registration(std::move(uffd), start, length, modes, IoctlSet(reg.ioctls));
    IoctlSet got(reg.ioctls);
    bool complete = (!modes.missing || got.has(Ioctl::Copy)) &&
                    (!modes.minor || got.has(Ioctl::Continue)) &&
                    (!modes.write_protect || got.has(Ioctl::Writeprotect));
    if (!complete) {
        return fail(Errc::Unsupported);  // the registration unregisters itself here
    }
    return registration;
}

std::expected<Registration, std::error_code> UserfaultFd::register_mapping(
    const Mapping& mapping, RegisterModes modes) const {
    if (mapping.data() == nullptr) {
        return fail(Errc::Closed);
    }
    FeatureSet needed;
    switch (mapping.kind()) {
        case MemoryKind::Anonymous:
            if (modes.minor) {
                return fail(Errc::Unsupported);  // anonymous memory has no page cache
            }
            break;
        case MemoryKind::Shmem:
            needed = FeatureSet{modes.missing ? Feature::MissingShmem : Feature{},
                                modes.minor ? Feature::MinorShmem : Feature{},
                                modes.write_protect ? Feature::WpHugetlbfsShmem : Feature{}};
            break;
        case MemoryKind::Hugetlb:
            needed = FeatureSet{modes.missing ? Feature::MissingHugetlbfs : Feature{},
                                modes.minor ? Feature::MinorHugetlbfs : Feature{},
                                modes.write_protect ? Feature::WpHugetlbfsShmem : Feature{}};
            break;
        case MemoryKind::Invalid:
            return fail(Errc::InvalidArgument);
    }
    // These bits advertise what the kernel can register; they need not be requested.
    if (!offered_.contains(needed)) {
        return fail(Errc::Unsupported);
    }
    return register_range(mapping.address(), mapping.size(), modes);
}

}  // namespace uffdm::uffd
