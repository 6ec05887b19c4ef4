// dirty_tracker.hpp — Which pages of a range were written since the last look: asynchronous
// userfaultfd write-protection, collected and re-armed in one PAGEMAP_SCAN call.
#pragma once

#include <cstdint>
#include <expected>
#include <system_error>
#include <vector>

#include "uffd/mapping.hpp"
#include "uffd/registration.hpp"
#include "uffd/unique_fd.hpp"
#include "uffd/userfault_fd.hpp"

namespace uffdm::uffd {

// [start, end) in bytes, whole pages.
struct WrittenRange {
    std::uint64_t start = 0;
    std::uint64_t end = 0;
    bool operator==(const WrittenRange&) const = default;
};

// A write to a tracked page is never reported to a handler: with UFFD_FEATURE_WP_ASYNC the
// kernel lifts the protection itself and the page table remembers the write, whether the
// writer is a user thread, the kernel on its behalf (read(2) into it), or a KVM guest through
// EPT (its write ends in the same host write fault). So a user-mode-only userfaultfd, which
// needs no privilege, is enough. Linux 6.7+ (PAGEMAP_SCAN); anonymous memory, shmem and
// hugetlbfs (WP_HUGETLBFS_SHMEM); pages never touched are tracked too (WP_UNPOPULATED).
class DirtyTracker {
  public:
    // Registers [address, address + length) for write-protection on a userfaultfd of its own
    // and protects all of it: from here on nothing counts as written.
    [[nodiscard]] static std::expected<DirtyTracker, std::error_code> start(std::uint64_t address,
                                                                            std::uint64_t length,
                                                                            MemoryKind kind);
    // Whether this kernel can track writes to this kind of memory (Errc::Unsupported naming
    // nothing else when it cannot).
    [[nodiscard]] static std::expected<void, std::error_code> supported(MemoryKind kind);

    // The pages written since start() or the last collect(), merged into ranges, each
    // protected again in the same call: a write racing the scan is either in this answer or
    // in the next one, never lost.
    [[nodiscard]] std::expected<std::vector<WrittenRange>, std::error_code> collect();

    [[nodiscard]] std::uint64_t address() const noexcept { return address_; }
    [[nodiscard]] std::uint64_t length() const noexcept { return length_; }

  private:
    DirtyTracker(UserfaultFd uffd, Registration registration, UniqueFd pagemap,
                 std::uint64_t address, std::uint64_t length) noexcept;

    // Declaration order is shutdown order: unregistered before the userfaultfd closes.
    UserfaultFd uffd_;
    Registration registration_;
    UniqueFd pagemap_;
    std::uint64_t address_ = 0;
    std::uint64_t length_ = 0;
};

}  // namespace uffdm::uffd
