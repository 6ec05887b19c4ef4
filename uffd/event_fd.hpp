// event_fd.hpp — An eventfd used to wake and stop blocking readers.
#pragma once

#include <cstdint>
#include <expected>
#include <system_error>

#include <uffdm/error.hpp>

#include "uffd/unique_fd.hpp"

namespace uffdm::uffd {

class EventFd {
  public:
    // Non-blocking, close-on-exec. semaphore=true makes consume() take one count at a time.
    [[nodiscard]] static std::expected<EventFd, std::error_code> create(bool semaphore = false);

    // Adds one to the counter; wakes a poll()er. Never blocks (the counter cannot realistically
    // overflow 2^64-2 increments).
    [[nodiscard]] std::expected<void, std::error_code> signal(std::uint64_t count = 1) const;
    // Takes the counter (or one count in semaphore mode); 0 when nothing was pending.
    [[nodiscard]] std::expected<std::uint64_t, std::error_code> consume() const;
    // Blocks until the counter is non-zero, then consumes it.
    [[nodiscard]] std::expected<std::uint64_t, std::error_code> wait() const;

    [[nodiscard]] int fd() const noexcept { return fd_.get(); }

  private:
    explicit EventFd(UniqueFd fd) noexcept : fd_(std::move(fd)) {}
    UniqueFd fd_;
};

}  // namespace uffdm::uffd
