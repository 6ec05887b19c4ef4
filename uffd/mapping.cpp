// mapping.cpp — mmap/memfd factories and munmap on destruction.
#include "uffd/mapping.hpp"

#include <fcntl.h>
#include <linux/memfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <utility>

#include "uffd/system_error.hpp"

namespace uffdm {

std::string_view to_string(MemoryKind kind) noexcept {
    switch (kind) {
        case MemoryKind::Anonymous:
            return "anonymous";
        case MemoryKind::Shmem:
            return "shmem";
        case MemoryKind::Hugetlb:
            return "hugetlb";
        case MemoryKind::Invalid:
            break;
    }
    return "invalid";
}

}  // namespace uffdm

namespace uffdm::uffd {

std::size_t base_page_size() noexcept {
    static const std::size_t size = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    return size;
}

namespace {

std::expected<void, std::error_code> check_length(std::size_t length, std::size_t page_size) {
    if (length == 0) {
        return fail(Errc::InvalidArgument);
    }
    if (length % page_size != 0) {
        return fail(Errc::Unaligned);
    }
    return {};
}

}  // namespace

Mapping::Mapping(std::byte* data, std::size_t size, std::size_t page_size, MemoryKind kind,
                 UniqueFd backing) noexcept
    : data_(data), size_(size), page_size_(page_size), kind_(kind), backing_(std::move(backing)) {}

Mapping::Mapping(Mapping&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      page_size_(other.page_size_),
      kind_(other.kind_),
      backing_(std::move(other.backing_)) {}

Mapping& Mapping::operator=(Mapping&& other) noexcept {
    if (this != &other) {
        unmap();
        data_ = std::exchange(other.data_, nullptr);
        size_ = std::exchange(other.size_, 0);
        page_size_ = other.page_size_;
        kind_ = other.kind_;
        backing_ = std::move(other.backing_);
    }
    return *this;
}

Mapping::~Mapping() {
    unmap();
}

void Mapping::unmap() noexcept {
    if (data_ != nullptr) {
        ::munmap(data_, size_);
        data_ = nullptr;
    }
}

std::expected<Mapping, std::error_code> Mapping::anonymous(std::size_t length) {
    if (auto ok = check_length(length, base_page_size()); !ok) {
        return std::unexpected(ok.error());
    }
    void* p = ::mmap(nullptr, length, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
        return fail_errno();
    }
    return Mapping(static_cast<std::byte*>(p), length, base_page_size(), MemoryKind::Anonymous,
                   UniqueFd());
}

std::expected<Mapping, std::error_code> Mapping::shmem(std::size_t length) {
    return map_memfd(length, base_page_size(), MemoryKind::Shmem, 0);
}

std::expected<Mapping, std::error_code> Mapping::hugetlb(std::size_t length) {
    return map_memfd(length, kHugePageSize, MemoryKind::Hugetlb, MFD_HUGETLB | MFD_HUGE_2MB);
}

std::expected<Mapping, std::error_code> Mapping::create(MemoryKind kind, std::size_t length) {
    switch (kind) {
        case MemoryKind::Anonymous:
            return anonymous(length);
        case MemoryKind::Shmem:
            return shmem(length);
        case MemoryKind::Hugetlb:
            return hugetlb(length);
        case MemoryKind::Invalid:
            break;
    }
    return fail(Errc::InvalidArgument);
}

std::expected<Mapping, std::error_code> Mapping::alias() const {
    if (data_ == nullptr) {
        return fail(Errc::Closed);
    }
    if (!backing_) {
        return fail(Errc::Unsupported);  // private anonymous pages have no second name
    }
    int dup = ::fcntl(backing_.get(), F_DUPFD_CLOEXEC, 0);
    if (dup < 0) {
        return fail_errno();
    }
    UniqueFd fd(dup);
    void* p = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
    if (p == MAP_FAILED) {
        return fail_errno();
    }
    return Mapping(static_cast<std::byte*>(p), size_, page_size_, kind_, std::move(fd));
}

std::expected<Mapping, std::error_code> Mapping::map_memfd(std::size_t length,
                                                           std::size_t page_size, MemoryKind kind,
                                                           unsigned memfd_flags) {
    if (auto ok = check_length(length, page_size); !ok) {
        return std::unexpected(ok.error());
    }
    int raw = ::memfd_create(kind == MemoryKind::Hugetlb ? "uffdm-hugetlb" : "uffdm-shmem",
                             MFD_CLOEXEC | memfd_flags);
    if (raw < 0) {
        return fail_errno();
    }
    UniqueFd fd(raw);
    if (::ftruncate(fd.get(), static_cast<off_t>(length)) < 0) {
        return fail_errno();
    }
    // For hugetlbfs the reservation is taken here: ENOMEM means too few free huge pages.
    void* p = ::mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
    if (p == MAP_FAILED) {
        return fail_errno();
    }
    return Mapping(static_cast<std::byte*>(p), length, page_size, kind, std::move(fd));
}

}  // namespace uffdm::uffd
