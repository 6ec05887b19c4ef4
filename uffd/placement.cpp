// placement.cpp — The page placement ioctls: COPY, ZEROPAGE, CONTINUE, MOVE, POISON, WAKE, WP.
#include <sys/ioctl.h>

#include <cerrno>

#include "uffd/system_error.hpp"
#include "uffd/uapi.hpp"
#include "uffd/userfault_fd.hpp"

namespace uffdm::uffd {

namespace {

// What one placement ioctl reported: success, or the errno and the signed progress field
// (bytes placed, or -errno) that the kernel writes back into the argument.
struct Step {
    bool ok = false;
    std::int64_t progress = 0;
    int err = 0;
};

std::error_code placement_error(int err) {
    switch (err) {
        case EEXIST:
            return make_error_code(Errc::AlreadyPresent);
        case EAGAIN:
            return make_error_code(Errc::RetryLater);
        case ENOENT:
            return make_error_code(Errc::NotRegistered);
        case EBADF:
            return make_error_code(Errc::Closed);
        default:
            return errno_code(err);
    }
}

// Drives one placement ioctl across [0, len). The kernel places pages one at a time and may
// stop early: then the ioctl fails with EAGAIN and the progress field holds the bytes placed
// (and woken, unless DONTWAKE). That remainder is finished here. When a later page fails the
// bytes placed so far are returned as a short count; a call that placed nothing returns the
// error itself.
template <typename Issue>
std::expected<std::uint64_t, std::error_code> run_placement(std::uint64_t len, Issue issue) {
    std::uint64_t done = 0;
    while (done < len) {
        Step step = issue(done, len - done);
        if (step.ok) {
            return len;
        }
        if (step.progress > 0) {
            done += static_cast<std::uint64_t>(step.progress);
            continue;
        }
        if (done > 0) {
            return done;
        }
        // Errors found before any page was tried leave the field untouched (0): use errno.
        return std::unexpected(
            placement_error(step.progress < 0 ? static_cast<int>(-step.progress) : step.err));
    }
    return done;
}

std::expected<void, std::error_code> check_range(int fd, std::uint64_t start, std::uint64_t len) {
    if (fd < 0) {
        return fail(Errc::Closed);
    }
    if (len == 0 || start + len < start) {
        return fail(Errc::InvalidArgument);
    }
    std::uint64_t page = base_page_size();
    if (start % page != 0 || len % page != 0) {
        return fail(Errc::Unaligned);
    }
    return {};
}

// progress_field is a member of arg (its own type: __s64 is long long, not std::int64_t, so
// binding it to a const std::int64_t& would read a copy taken before the ioctl).
template <typename Arg, typename Field>
Step issue_ioctl(int fd, unsigned long request, Arg& arg, const Field& progress_field) {
    if (::ioctl(fd, request, &arg) == 0) {
        return {.ok = true, .progress = static_cast<std::int64_t>(progress_field), .err = 0};
    }
    int err = errno;
    return {.ok = false, .progress = static_cast<std::int64_t>(progress_field), .err = err};
}

}  // namespace

std::expected<std::uint64_t, std::error_code> UserfaultFd::copy(std::uint64_t dst, const void* src,
                                                                std::uint64_t len,
                                                                CopyMode mode) const {
    if (auto ok = check_range(fd_.get(), dst, len); !ok) {
        return std::unexpected(ok.error());
    }
    if (src == nullptr) {
        return fail(Errc::InvalidArgument);
    }
    if (mode.write_protect && !offered_.has(Feature::PagefaultFlagWp)) {
        return fail(Errc::Unsupported);
    }
    std::uint64_t bits = (mode.dont_wake ? UFFDIO_COPY_MODE_DONTWAKE : 0) |
                         (mode.write_protect ? UFFDIO_COPY_MODE_WP : 0);
    auto source = reinterpret_cast<std::uint64_t>(src);
    return run_placement(len, [&](std::uint64_t offset, std::uint64_t remaining) {
        uffdio_copy arg{
            .dst = dst + offset, .src = source + offset, .len = remaining, .mode = bits, .copy = 0};
        return issue_ioctl(fd_.get(), UFFDIO_COPY, arg, arg.copy);
    });
}

std::expected<std::uint64_t, std::error_code> UserfaultFd::zeropage(std::uint64_t dst,
                                                                    std::uint64_t len,
                                                                    bool dont_wake) const {
    if (auto ok = check_range(fd_.get(), dst, len); !ok) {
        return std::unexpected(ok.error());
    }
    std::uint64_t bits = dont_wake ? UFFDIO_ZEROPAGE_MODE_DONTWAKE : 0;
    return run_placement(len, [&](std::uint64_t offset, std::uint64_t remaining) {
        uffdio_zeropage arg{
            .range = {.start = dst + offset, .len = remaining}, .mode = bits, .zeropage = 0};
        return issue_ioctl(fd_.get(), UFFDIO_ZEROPAGE, arg, arg.zeropage);
    });
}

std::expected<std::uint64_t, std::error_code> UserfaultFd::continue_minor(
    std::uint64_t dst, std::uint64_t len, bool dont_wake, bool write_protect) const {
    if (auto ok = check_range(fd_.get(), dst, len); !ok) {
        return std::unexpected(ok.error());
    }
    if (!offered_.has(Feature::MinorShmem) && !offered_.has(Feature::MinorHugetlbfs)) {
        return fail(Errc::Unsupported);
    }
    if (write_protect && !offered_.has(Feature::PagefaultFlagWp)) {
        return fail(Errc::Unsupported);
    }
    std::uint64_t bits = (dont_wake ? UFFDIO_CONTINUE_MODE_DONTWAKE : 0) |
                         (write_protect ? UFFDIO_CONTINUE_MODE_WP : 0);
    return run_placement(len, [&](std::uint64_t offset, std::uint64_t remaining) {
        uffdio_continue arg{
            .range = {.start = dst + offset, .len = remaining}, .mode = bits, .mapped = 0};
        return issue_ioctl(fd_.get(), UFFDIO_CONTINUE, arg, arg.mapped);
    });
}

std::expected<std::uint64_t, std::error_code> UserfaultFd::move(std::uint64_t dst,
                                                                std::uint64_t src,
                                                                std::uint64_t len,
                                                                MoveMode mode) const {
    if (auto ok = check_range(fd_.get(), dst, len); !ok) {
        return std::unexpected(ok.error());
    }
    if (src % base_page_size() != 0) {
        return fail(Errc::Unaligned);
    }
    if (!offered_.has(Feature::Move)) {
        return fail(Errc::Unsupported);
    }
    std::uint64_t bits = (mode.dont_wake ? uapi::kMoveModeDontWake : 0) |
                         (mode.allow_source_holes ? uapi::kMoveModeAllowSrcHoles : 0);
    return run_placement(len, [&](std::uint64_t offset, std::uint64_t remaining) {
        uapi::Move arg{
            .dst = dst + offset, .src = src + offset, .len = remaining, .mode = bits, .move = 0};
        return issue_ioctl(fd_.get(), uapi::kIocMove, arg, arg.move);
    });
}

std::expected<std::uint64_t, std::error_code> UserfaultFd::poison(std::uint64_t dst,
                                                                  std::uint64_t len,
                                                                  bool dont_wake) const {
    if (auto ok = check_range(fd_.get(), dst, len); !ok) {
        return std::unexpected(ok.error());
    }
    if (!offered_.has(Feature::Poison)) {
        return fail(Errc::Unsupported);
    }
    std::uint64_t bits = dont_wake ? uapi::kPoisonModeDontWake : 0;
    return run_placement(len, [&](std::uint64_t offset, std::uint64_t remaining) {
        uapi::Poison arg{
            .range = {.start = dst + offset, .len = remaining}, .mode = bits, .updated = 0};
        return issue_ioctl(fd_.get(), uapi::kIocPoison, arg, arg.updated);
    });
}

std::expected<void, std::error_code> UserfaultFd::wake(std::uint64_t start,
                                                       std::uint64_t len) const {
    if (auto ok = check_range(fd_.get(), start, len); !ok) {
        return ok;
    }
    uffdio_range range{.start = start, .len = len};
    if (::ioctl(fd_.get(), UFFDIO_WAKE, &range) < 0) {
        return std::unexpected(placement_error(errno));
    }
    return {};
}

std::expected<void, std::error_code> UserfaultFd::writeprotect(std::uint64_t start,
                                                               std::uint64_t len, bool protect,
                                                               bool dont_wake) const {
    if (auto ok = check_range(fd_.get(), start, len); !ok) {
        return ok;
    }
    if (!offered_.has(Feature::PagefaultFlagWp)) {
        return fail(Errc::Unsupported);
    }
    uffdio_writeprotect arg{.range = {.start = start, .len = len},
                            .mode = (protect ? UFFDIO_WRITEPROTECT_MODE_WP : 0) |
                                    (dont_wake ? UFFDIO_WRITEPROTECT_MODE_DONTWAKE : 0)};
    for (;;) {
        if (::ioctl(fd_.get(), UFFDIO_WRITEPROTECT, &arg) == 0) {
            return {};
        }
        if (errno != EINTR) {
            return std::unexpected(placement_error(errno));
        }
    }
}

std::expected<bool, std::error_code> UserfaultFd::event_in_flight(std::uint64_t start,
                                                                  std::uint64_t len) const {
    if (auto ok = check_range(fd_.get(), start, len); !ok) {
        return std::unexpected(ok.error());
    }
    // The kernel answers EAGAIN while such an event is in flight before it looks at the range;
    // otherwise ENOENT where no write-protect registration is (nothing is changed or woken).
    uffdio_writeprotect arg{.range = {.start = start, .len = len},
                            .mode = UFFDIO_WRITEPROTECT_MODE_DONTWAKE};
    for (;;) {
        if (::ioctl(fd_.get(), UFFDIO_WRITEPROTECT, &arg) == 0 || errno == ENOENT) {
            return false;
        }
        if (errno == EAGAIN) {
            return true;
        }
        if (errno != EINTR) {
            return std::unexpected(placement_error(errno));
        }
    }
}

}  // namespace uffdm::uffd
