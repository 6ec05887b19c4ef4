// mirror_ring.cpp — memfd + two MAP_FIXED views over one reserved address range.
#include "transport/mirror_ring.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

namespace uffdm::transport {

namespace {

Failure system_failure(const char* what, int err) {
    return Failure{std::error_code(err, std::system_category()),
                   std::string("receive ring: ") + what + ": " + std::strerror(err)};
}

}  // namespace

std::expected<MirrorRing, Failure> MirrorRing::create(std::size_t capacity) {
    auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    if (capacity == 0 || capacity > (std::size_t{1} << 30)) {
        return std::unexpected(failure(
            Errc::InvalidArgument,
            "receive ring of " + std::to_string(capacity) + " bytes: must be 1 byte .. 1 GiB"));
    }
    capacity = (capacity + page - 1) / page * page;
    int fd = ::memfd_create("uffdm-ring", MFD_CLOEXEC);
    if (fd < 0) {
        return std::unexpected(system_failure("memfd_create", errno));
    }
    if (::ftruncate(fd, static_cast<off_t>(capacity)) < 0) {
        int err = errno;
        ::close(fd);
        return std::unexpected(system_failure("ftruncate", err));
    }
    // Reserve 2*capacity of address space, then map the file over each half.
    void* reserved = ::mmap(nullptr, 2 * capacity, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (reserved == MAP_FAILED) {
        int err = errno;
        ::close(fd);
        return std::unexpected(system_failure("reserving address space", err));
    }
    auto* base = static_cast<std::byte*>(reserved);
    for (std::size_t half = 0; half < 2; ++half) {
        void* view = ::mmap(base + half * capacity, capacity, PROT_READ | PROT_WRITE,
                            MAP_SHARED | MAP_FIXED | MAP_POPULATE, fd, 0);
        if (view == MAP_FAILED) {
            int err = errno;
            ::munmap(reserved, 2 * capacity);
            ::close(fd);
            return std::unexpected(system_failure("mapping a view", err));
        }
    }
    ::close(fd);  // the mappings keep the pages
    return MirrorRing(base, capacity);
}

MirrorRing::MirrorRing(MirrorRing&& other) noexcept
    : base_(std::exchange(other.base_, nullptr)),
      capacity_(std::exchange(other.capacity_, 0)),
      head_(std::exchange(other.head_, 0)),
      parsed_(std::exchange(other.parsed_, 0)),
      tail_(std::exchange(other.tail_, 0)) {}

MirrorRing& MirrorRing::operator=(MirrorRing&& other) noexcept {
    if (this != &other) {
        unmap();
        base_ = std::exchange(other.base_, nullptr);
        capacity_ = std::exchange(other.capacity_, 0);
        head_ = std::exchange(other.head_, 0);
        parsed_ = std::exchange(other.parsed_, 0);
        tail_ = std::exchange(other.tail_, 0);
    }
    return *this;
}

MirrorRing::~MirrorRing() {
    unmap();
}

void MirrorRing::unmap() noexcept {
    if (base_ != nullptr) {
        ::munmap(base_, 2 * capacity_);
        base_ = nullptr;
    }
}

std::span<std::byte> MirrorRing::free_space() const noexcept {
    return {base_ + tail_ % capacity_, capacity_ - size()};
}

std::span<const std::byte> MirrorRing::data() const noexcept {
    return {base_ + parsed_ % capacity_, static_cast<std::size_t>(tail_ - parsed_)};
}

}  // namespace uffdm::transport
