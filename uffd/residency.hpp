// residency.hpp — Whether a page of this process's memory would take a MISSING fault if touched.
#pragma once

#include <cstdint>
#include <expected>
#include <system_error>
#include <vector>

#include "uffd/mapping.hpp"
#include "uffd/unique_fd.hpp"

namespace uffdm::uffd {

enum class Residency : std::uint8_t {
    Present,  // a touch finds it: mapped, swapped out, or (shmem) in the page cache
    Missing,  // a touch of registered memory takes a MISSING fault
    Unknown,  // hugetlbfs: the page table says nothing about the file's pages
};

// Asks about this process's own memory. Keeps /proc/self/pagemap open: the fault thread asks on
// faults that race a placement.
class ResidencyProbe {
  public:
    // Without /proc, every answer about anonymous memory is an error.
    [[nodiscard]] static ResidencyProbe open() noexcept;

    // One answer per page of [address, address + pages * page_size). Anonymous memory: the
    // page table (pagemap: present or swapped). Shmem: the page cache (mincore), which decides
    // a shmem MISSING fault whatever the page table holds. Hugetlbfs: Unknown (a page zapped
    // from the page table may well be in the file). Never faults.
    [[nodiscard]] std::expected<std::vector<Residency>, std::error_code> residency(
        std::uint64_t address, std::uint64_t pages, std::uint64_t page_size, MemoryKind kind) const;

  private:
    explicit ResidencyProbe(UniqueFd pagemap) noexcept : pagemap_(std::move(pagemap)) {}
    UniqueFd pagemap_;
};

}  // namespace uffdm::uffd
