// dirty_tracker.cpp — PAGEMAP_SCAN over an asynchronously write-protected range.
#include "uffd/dirty_tracker.hpp"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>

namespace uffdm::uffd {

namespace {

// linux/fs.h of Linux 6.7; Debian 12's headers are older.
struct PageRegion {
    std::uint64_t start;
    std::uint64_t end;
    std::uint64_t categories;
};
struct PmScanArg {
    std::uint64_t size;
    std::uint64_t flags;
    std::uint64_t start;
    std::uint64_t end;
    std::uint64_t walk_end;
    std::uint64_t vec;
    std::uint64_t vec_len;
    std::uint64_t max_pages;
    std::uint64_t category_inverted;
    std::uint64_t category_mask;
    std::uint64_t category_anyof_mask;
    std::uint64_t return_mask;
};
static_assert(sizeof(PmScanArg) == 96 && sizeof(PageRegion) == 24);
constexpr unsigned long kPagemapScan = _IOWR('f', 16, PmScanArg);
constexpr std::uint64_t kPageIsWritten = 1U << 1;
constexpr std::uint64_t kScanWpMatching = 1U << 0;
constexpr std::uint64_t kScanCheckWpAsync = 1U << 1;
constexpr std::size_t kRegionsPerCall = 512;

std::unexpected<std::error_code> errno_error(int err = errno) {
    return std::unexpected(std::error_code(err, std::system_category()));
}

FeatureSet needed_for(MemoryKind kind) {
    FeatureSet needed{Feature::PagefaultFlagWp, Feature::WpAsync, Feature::WpUnpopulated};
    if (kind == MemoryKind::Shmem || kind == MemoryKind::Hugetlb) {
        needed = needed | FeatureSet{Feature::WpHugetlbfsShmem};
    }
    return needed;
}

OpenOptions tracker_options(MemoryKind kind) {
    OpenOptions options;
    // No fault ever reaches a handler (see the header), so the syscall with
    // UFFD_USER_MODE_ONLY, which needs no privilege, is the route.
    options.route = OpenRoute::Syscall;
    options.user_mode_only = true;
    options.required = needed_for(kind);
    return options;
}

}  // namespace

DirtyTracker::DirtyTracker(UserfaultFd uffd, Registration registration, UniqueFd pagemap,
                           std::uint64_t address, std::uint64_t length) noexcept
    : uffd_(std::move(uffd)),
      registration_(std::move(registration)),
      pagemap_(std::move(pagemap)),
      address_(address),
      length_(length) {}

std::expected<void, std::error_code> DirtyTracker::supported(MemoryKind kind) {
    auto offered = UserfaultFd::probe_features(tracker_options(kind));
    if (!offered) {
        return std::unexpected(offered.error());
    }
    if (!offered->contains(needed_for(kind))) {
        return std::unexpected(make_error_code(Errc::Unsupported));
    }
    return {};
}

std::expected<DirtyTracker, std::error_code> DirtyTracker::start(std::uint64_t address,
                                                                 std::uint64_t length,
                                                                 MemoryKind kind) {
    auto uffd = UserfaultFd::open(tracker_options(kind));
    if (!uffd) {
        return std::unexpected(uffd.error());
    }
    auto registration = uffd->register_range(address, length, {.write_protect = true});
    if (!registration) {
        return std::unexpected(registration.error());
    }
    if (auto protected_ = uffd->writeprotect(address, length, true); !protected_) {
        return std::unexpected(protected_.error());
    }
    UniqueFd pagemap(::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC));
    if (!pagemap) {
        return errno_error();
    }
    return DirtyTracker(std::move(*uffd), std::move(*registration), std::move(pagemap), address,
                        length);
}

std::expected<std::vector<WrittenRange>, std::error_code> DirtyTracker::collect() {
    std::vector<WrittenRange> written;
    std::vector<PageRegion> regions(kRegionsPerCall);
    std::uint64_t end = address_ + length_;
    std::uint64_t from = address_;
    while (from < end) {
        PmScanArg arg{.size = sizeof(PmScanArg),
                      .flags = kScanWpMatching | kScanCheckWpAsync,
                      .start = from,
                      .end = end,
                      .walk_end = 0,
                      .vec = reinterpret_cast<std::uint64_t>(regions.data()),
                      .vec_len = regions.size(),
                      .max_pages = 0,
                      .category_inverted = 0,
                      .category_mask = kPageIsWritten,
                      .category_anyof_mask = 0,
                      .return_mask = kPageIsWritten};
        long found = ::ioctl(pagemap_.get(), kPagemapScan, &arg);
        if (found < 0) {
            if (errno == EINTR) {
                continue;
            }
            return errno_error();
        }
        for (long i = 0; i < found; ++i) {
            const PageRegion& r = regions[static_cast<std::size_t>(i)];
            if (!written.empty() && written.back().end == r.start) {
                written.back().end = r.end;
            } else {
                written.push_back({r.start, r.end});
            }
        }
        // The walk stops where the vector filled (or at the end): go on from there.
        if (arg.walk_end <= from) {
            return errno_error(EIO);
        }
        from = arg.walk_end;
    }
    return written;
}

}  // namespace uffdm::uffd
