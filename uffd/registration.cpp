// registration.cpp — UFFDIO_UNREGISTER on destruction of a registered range.
#include "uffd/registration.hpp"

#include <sys/ioctl.h>

#include <utility>

#include "uffd/system_error.hpp"
#include "uffd/uapi.hpp"

namespace uffdm::uffd {

std::uint64_t RegisterModes::bits() const noexcept {
    return (missing ? UFFDIO_REGISTER_MODE_MISSING : 0) |
           (write_protect ? UFFDIO_REGISTER_MODE_WP : 0) | (minor ? UFFDIO_REGISTER_MODE_MINOR : 0);
}

Registration::Registration(UniqueFd uffd, std::uint64_t start, std::uint64_t length,
                           RegisterModes modes, IoctlSet ioctls) noexcept
    : uffd_(std::move(uffd)), start_(start), length_(length), modes_(modes), ioctls_(ioctls) {}

Registration::Registration(Registration&& other) noexcept
    : uffd_(std::move(other.uffd_)),
      start_(std::exchange(other.start_, 0)),
      length_(std::exchange(other.length_, 0)),
      modes_(other.modes_),
      ioctls_(other.ioctls_) {}

Registration& Registration::operator=(Registration&& other) noexcept {
    if (this != &other) {
        (void)unregister();
        uffd_ = std::move(other.uffd_);
        start_ = std::exchange(other.start_, 0);
        length_ = std::exchange(other.length_, 0);
        modes_ = other.modes_;
        ioctls_ = other.ioctls_;
    }
    return *this;
}

Registration::~Registration() {
    (void)unregister();
}

std::expected<void, std::error_code> Registration::unregister() {
    if (!uffd_) {
        return fail(Errc::Closed);
    }
    UniqueFd uffd = std::move(uffd_);
    uffdio_range range{.start = start_, .len = length_};
    if (::ioctl(uffd.get(), UFFDIO_UNREGISTER, &range) < 0) {
        return fail_errno();
    }
    return {};
}

}  // namespace uffdm::uffd
