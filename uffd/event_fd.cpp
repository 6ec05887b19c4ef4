// event_fd.cpp — eventfd(2) creation, signal, consume and wait.
#include "uffd/event_fd.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "uffd/system_error.hpp"

namespace uffdm::uffd {

std::expected<EventFd, std::error_code> EventFd::create(bool semaphore) {
    int flags = EFD_CLOEXEC | EFD_NONBLOCK | (semaphore ? EFD_SEMAPHORE : 0);
    int fd = ::eventfd(0, flags);
    if (fd < 0) {
        return fail_errno();
    }
    return EventFd(UniqueFd(fd));
}

std::expected<void, std::error_code> EventFd::signal(std::uint64_t count) const {
    if (!fd_) {
        return fail(Errc::Closed);
    }
    while (::write(fd_.get(), &count, sizeof count) < 0) {
        if (errno != EINTR) {
            return fail_errno();
        }
    }
    return {};
}

std::expected<std::uint64_t, std::error_code> EventFd::consume() const {
    if (!fd_) {
        return fail(Errc::Closed);
    }
    std::uint64_t value = 0;
    for (;;) {
        if (::read(fd_.get(), &value, sizeof value) == sizeof value) {
            return value;
        }
        if (errno == EAGAIN) {
            return 0;
        }
        if (errno != EINTR) {
            return fail_errno();
        }
    }
}

std::expected<std::uint64_t, std::error_code> EventFd::wait() const {
    for (;;) {
        auto value = consume();
        if (!value || *value != 0) {
            return value;
        }
        pollfd pfd{.fd = fd_.get(), .events = POLLIN, .revents = 0};
        if (::poll(&pfd, 1, -1) < 0 && errno != EINTR) {
            return fail_errno();
        }
    }
}

}  // namespace uffdm::uffd
