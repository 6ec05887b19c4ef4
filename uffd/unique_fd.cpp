// unique_fd.cpp — Closing an owned descriptor exactly once.
#include "uffd/unique_fd.hpp"

#include <unistd.h>

namespace uffdm::uffd {

void UniqueFd::reset(int fd) noexcept {
    if (fd_ >= 0 && fd_ != fd) {
        // close(2) releases the descriptor even when it reports EINTR on Linux,
        // so retrying would close somebody else's fd.
        ::close(fd_);
    }
    fd_ = fd;
}

}  // namespace uffdm::uffd
