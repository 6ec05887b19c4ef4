// fault_reader.cpp — poll(2) on the userfaultfd and the stop eventfd, read(2) many messages.
#include "uffd/fault_reader.hpp"

#include <poll.h>
#include <unistd.h>

#include "uffd/system_error.hpp"

namespace uffdm::uffd {

FaultEvent decode(const uffd_msg& msg) noexcept {
    switch (msg.event) {
        case UFFD_EVENT_PAGEFAULT: {
            const auto& pf = msg.arg.pagefault;
            return PageFault{.address = pf.address,
                             .write = (pf.flags & UFFD_PAGEFAULT_FLAG_WRITE) != 0,
                             .write_protect = (pf.flags & UFFD_PAGEFAULT_FLAG_WP) != 0,
                             .minor = (pf.flags & UFFD_PAGEFAULT_FLAG_MINOR) != 0,
                             .thread_id = pf.feat.ptid};
        }
        case UFFD_EVENT_FORK:
            return ForkEvent{UniqueFd(static_cast<int>(msg.arg.fork.ufd))};
        case UFFD_EVENT_REMAP:
            return RemapEvent{
                .from = msg.arg.remap.from, .to = msg.arg.remap.to, .length = msg.arg.remap.len};
        case UFFD_EVENT_REMOVE:
            return RemoveEvent{.start = msg.arg.remove.start, .end = msg.arg.remove.end};
        case UFFD_EVENT_UNMAP:
            return UnmapEvent{.start = msg.arg.remove.start, .end = msg.arg.remove.end};
        default:
            return UnknownEvent{.event = msg.event};
    }
}

FaultReader::FaultReader(const UserfaultFd& uffd, const EventFd& stop, std::size_t batch)
    : uffd_(uffd), stop_(stop), buffer_(batch == 0 ? 1 : batch) {
    events_.reserve(buffer_.size());
}

FaultReader::FaultReader(const UserfaultFd& uffd, const EventFd& stop, const EventFd& nudge,
                         std::size_t batch)
    : FaultReader(uffd, stop, batch) {
    nudge_ = &nudge;
}

std::expected<FaultReader::Batch, std::error_code> FaultReader::next(int timeout_ms) {
    events_.clear();
    release_guard();
    if (!uffd_.valid() || stop_.fd() < 0) {
        return fail(Errc::Closed);
    }
    for (;;) {
        pollfd fds[3] = {
            {.fd = uffd_.fd(), .events = POLLIN, .revents = 0},
            {.fd = stop_.fd(), .events = POLLIN, .revents = 0},
            {.fd = nudge_ != nullptr ? nudge_->fd() : -1, .events = POLLIN, .revents = 0}};
        int ready = ::poll(fds, nudge_ != nullptr ? 3 : 2, timeout_ms);
        if (ready < 0) {
            if (errno == EINTR) {
                continue;
            }
            return fail_errno();
        }
        if (ready == 0) {
            return Batch{.events = {}, .stopped = false, .timed_out = true};
        }
        if (fds[1].revents & POLLIN) {
            return Batch{.events = {}, .stopped = true, .timed_out = false};
        }
        if (nudge_ != nullptr && (fds[2].revents & POLLIN) && !(fds[0].revents & POLLIN)) {
            // Messages first: a nudge with messages queued is seen on the next call.
            (void)nudge_->consume();
            return Batch{.events = {}, .stopped = false, .timed_out = false, .nudged = true};
        }
        if (fds[0].revents & (POLLERR | POLLNVAL)) {
            return fail_errno(fds[0].revents & POLLNVAL ? EBADF : EIO);
        }
        if (guard_ != nullptr) {
            held_ = std::unique_lock(*guard_);
        }
        ssize_t got = ::read(uffd_.fd(), buffer_.data(), buffer_.size() * sizeof(uffd_msg));
        if (got < 0) {
            release_guard();
            // EAGAIN: another waiter was woken first or the fault resolved itself (a page
            // placed by someone else); wait again.
            if (errno == EAGAIN || errno == EINTR) {
                continue;
            }
            return fail_errno();
        }
        std::size_t count = static_cast<std::size_t>(got) / sizeof(uffd_msg);
        for (std::size_t i = 0; i < count; ++i) {
            events_.push_back(decode(buffer_[i]));
        }
        messages_read_ += count;
        ++reads_;
        return Batch{.events = events_, .stopped = false, .timed_out = false};
    }
}

void FaultReader::release_guard() noexcept {
    if (held_.owns_lock()) {
        held_.unlock();
    }
}

}  // namespace uffdm::uffd
