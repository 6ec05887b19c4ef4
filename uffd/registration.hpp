// registration.hpp — A registered userfaultfd range, unregistered when destroyed.
#pragma once

#include <cstdint>
#include <expected>
#include <system_error>

#include <uffdm/error.hpp>

#include "uffd/features.hpp"
#include "uffd/unique_fd.hpp"

namespace uffdm::uffd {

// UFFDIO_REGISTER_MODE_* bits.
struct RegisterModes {
    bool missing = false;        // page not present at all (anonymous, shmem, hugetlbfs)
    bool write_protect = false;  // write to a write-protected page
    bool minor = false;          // page cache present, page table entry missing (shmem, hugetlbfs)

    [[nodiscard]] std::uint64_t bits() const noexcept;
    static RegisterModes missing_only() noexcept { return {.missing = true}; }
};

class Registration {
  public:
    Registration(Registration&& other) noexcept;
    Registration& operator=(Registration&& other) noexcept;
    Registration(const Registration&) = delete;
    Registration& operator=(const Registration&) = delete;
    ~Registration();

    [[nodiscard]] std::uint64_t start() const noexcept { return start_; }
    [[nodiscard]] std::uint64_t length() const noexcept { return length_; }
    [[nodiscard]] RegisterModes modes() const noexcept { return modes_; }
    // The range ioctls the kernel allows here (depends on the memory kind and the modes).
    [[nodiscard]] IoctlSet ioctls() const noexcept { return ioctls_; }
    [[nodiscard]] bool contains(std::uint64_t address, std::uint64_t len = 1) const noexcept {
        return address >= start_ && len <= length_ && address - start_ <= length_ - len;
    }

    // Unregisters now and reports the result; the destructor does the same, silently.
    // Threads blocked on faults in the range are woken and retry the access normally.
    [[nodiscard]] std::expected<void, std::error_code> unregister();

  private:
    friend class UserfaultFd;
    Registration(UniqueFd uffd, std::uint64_t start, std::uint64_t length, RegisterModes modes,
                 IoctlSet ioctls) noexcept;

    // A dup of the userfaultfd: the registration stays valid when the UserfaultFd object
    // is moved, and the kernel context lives until the last registration is gone.
    UniqueFd uffd_;
    std::uint64_t start_ = 0;
    std::uint64_t length_ = 0;
    RegisterModes modes_;
    IoctlSet ioctls_;
};

}  // namespace uffdm::uffd
