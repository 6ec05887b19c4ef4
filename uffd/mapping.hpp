// mapping.hpp — An owned guest-RAM-like memory mapping (anonymous, memfd shmem, hugetlbfs).
#pragma once

#include <cstddef>
#include <cstdint>
#include <expected>
#include <span>
#include <string_view>
#include <system_error>

#include <uffdm/error.hpp>
#include <uffdm/memory_kind.hpp>

#include "uffd/unique_fd.hpp"

namespace uffdm::uffd {

using uffdm::MemoryKind;  // one enum for the public API and this layer

inline constexpr std::size_t kHugePageSize = 2 * 1024 * 1024;

class Mapping {
  public:
    // Private anonymous memory, like QEMU's default RAM backend.
    [[nodiscard]] static std::expected<Mapping, std::error_code> anonymous(std::size_t length);
    // A memfd shared mapping (memory-backend-memfd); alias() maps the same pages again.
    [[nodiscard]] static std::expected<Mapping, std::error_code> shmem(std::size_t length);
    // A hugetlbfs memfd with 2 MiB pages. Fails with ENOMEM when the kernel cannot
    // reserve length/2MiB huge pages (see vm.nr_hugepages).
    [[nodiscard]] static std::expected<Mapping, std::error_code> hugetlb(std::size_t length);
    [[nodiscard]] static std::expected<Mapping, std::error_code> create(MemoryKind kind,
                                                                        std::size_t length);

    // A second MAP_SHARED view of the same file pages (shmem and hugetlb only). Writing
    // through the alias fills the page cache without touching the primary mapping's page
    // tables: this is how a MINOR fault is resolved with UFFDIO_CONTINUE.
    [[nodiscard]] std::expected<Mapping, std::error_code> alias() const;

    Mapping(Mapping&& other) noexcept;
    Mapping& operator=(Mapping&& other) noexcept;
    Mapping(const Mapping&) = delete;
    Mapping& operator=(const Mapping&) = delete;
    ~Mapping();

    [[nodiscard]] std::byte* data() const noexcept { return data_; }
    [[nodiscard]] std::size_t size() const noexcept { return size_; }
    [[nodiscard]] std::size_t page_size() const noexcept { return page_size_; }
    [[nodiscard]] std::size_t page_count() const noexcept { return size_ / page_size_; }
    [[nodiscard]] MemoryKind kind() const noexcept { return kind_; }
    // The memfd behind a shmem or hugetlb mapping (-1 for anonymous memory): its page cache.
    [[nodiscard]] int file() const noexcept { return backing_.get(); }
    [[nodiscard]] std::uint64_t address() const noexcept {
        return reinterpret_cast<std::uint64_t>(data_);
    }
    [[nodiscard]] std::span<std::byte> bytes() const noexcept { return {data_, size_}; }
    [[nodiscard]] std::byte* page(std::size_t index) const noexcept {
        return data_ + index * page_size_;
    }

  private:
    Mapping(std::byte* data, std::size_t size, std::size_t page_size, MemoryKind kind,
            UniqueFd backing) noexcept;
    void unmap() noexcept;
    static std::expected<Mapping, std::error_code> map_memfd(std::size_t length,
                                                             std::size_t page_size, MemoryKind kind,
                                                             unsigned memfd_flags);

    std::byte* data_ = nullptr;
    std::size_t size_ = 0;
    std::size_t page_size_ = 0;
    MemoryKind kind_ = MemoryKind::Invalid;
    UniqueFd backing_;  // the memfd for Shmem and Hugetlb; invalid for Anonymous
};

// The base page size of this machine (sysconf(_SC_PAGESIZE)).
[[nodiscard]] std::size_t base_page_size() noexcept;

}  // namespace uffdm::uffd
