// features.hpp — Names for userfaultfd feature bits and ioctl bits, as the kernel reports them.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "uffd/uapi.hpp"

namespace uffdm::uffd {

// One UFFD_FEATURE_* bit. Values are the kernel ABI.
enum class Feature : std::uint64_t {
    PagefaultFlagWp = UFFD_FEATURE_PAGEFAULT_FLAG_WP,
    EventFork = UFFD_FEATURE_EVENT_FORK,
    EventRemap = UFFD_FEATURE_EVENT_REMAP,
    EventRemove = UFFD_FEATURE_EVENT_REMOVE,
    MissingHugetlbfs = UFFD_FEATURE_MISSING_HUGETLBFS,
    MissingShmem = UFFD_FEATURE_MISSING_SHMEM,
    EventUnmap = UFFD_FEATURE_EVENT_UNMAP,
    Sigbus = UFFD_FEATURE_SIGBUS,
    ThreadId = UFFD_FEATURE_THREAD_ID,
    MinorHugetlbfs = UFFD_FEATURE_MINOR_HUGETLBFS,
    MinorShmem = UFFD_FEATURE_MINOR_SHMEM,
    ExactAddress = UFFD_FEATURE_EXACT_ADDRESS,
    WpHugetlbfsShmem = UFFD_FEATURE_WP_HUGETLBFS_SHMEM,
    WpUnpopulated = UFFD_FEATURE_WP_UNPOPULATED,
    Poison = UFFD_FEATURE_POISON,
    WpAsync = UFFD_FEATURE_WP_ASYNC,
    Move = UFFD_FEATURE_MOVE,
};

// A set of UFFD_FEATURE_* bits.
class FeatureSet {
  public:
    constexpr FeatureSet() noexcept = default;
    constexpr explicit FeatureSet(std::uint64_t bits) noexcept : bits_(bits) {}
    constexpr FeatureSet(std::initializer_list<Feature> features) noexcept {
        for (Feature f : features) {
            bits_ |= static_cast<std::uint64_t>(f);
        }
    }

    [[nodiscard]] constexpr std::uint64_t bits() const noexcept { return bits_; }
    [[nodiscard]] constexpr bool has(Feature f) const noexcept {
        return (bits_ & static_cast<std::uint64_t>(f)) != 0;
    }
    [[nodiscard]] constexpr bool contains(FeatureSet other) const noexcept {
        return (bits_ & other.bits_) == other.bits_;
    }
    [[nodiscard]] constexpr bool empty() const noexcept { return bits_ == 0; }
    constexpr FeatureSet operator|(FeatureSet o) const noexcept {
        return FeatureSet(bits_ | o.bits_);
    }
    constexpr FeatureSet operator&(FeatureSet o) const noexcept {
        return FeatureSet(bits_ & o.bits_);
    }
    constexpr FeatureSet without(FeatureSet o) const noexcept {
        return FeatureSet(bits_ & ~o.bits_);
    }
    constexpr bool operator==(const FeatureSet&) const noexcept = default;

    // Names of the set bits, in bit order ("MISSING_SHMEM", ...); unknown bits as "bit17".
    [[nodiscard]] std::vector<std::string> names() const;

  private:
    std::uint64_t bits_ = 0;
};

// Every feature this build knows a name for.
[[nodiscard]] FeatureSet known_features() noexcept;
[[nodiscard]] std::string_view feature_name(Feature f) noexcept;

// One _UFFDIO_* ioctl, as a bit number in the ioctl masks UFFDIO_API and UFFDIO_REGISTER return.
enum class Ioctl : std::uint8_t {
    Register = _UFFDIO_REGISTER,
    Unregister = _UFFDIO_UNREGISTER,
    Wake = _UFFDIO_WAKE,
    Copy = _UFFDIO_COPY,
    Zeropage = _UFFDIO_ZEROPAGE,
    Move = _UFFDIO_MOVE,
    Writeprotect = _UFFDIO_WRITEPROTECT,
    Continue = _UFFDIO_CONTINUE,
    Poison = _UFFDIO_POISON,
    Api = _UFFDIO_API,
};

class IoctlSet {
  public:
    constexpr IoctlSet() noexcept = default;
    constexpr explicit IoctlSet(std::uint64_t mask) noexcept : mask_(mask) {}
    [[nodiscard]] constexpr std::uint64_t mask() const noexcept { return mask_; }
    [[nodiscard]] constexpr bool has(Ioctl i) const noexcept {
        return (mask_ & (1ULL << static_cast<unsigned>(i))) != 0;
    }
    [[nodiscard]] std::vector<std::string> names() const;
    constexpr bool operator==(const IoctlSet&) const noexcept = default;

  private:
    std::uint64_t mask_ = 0;
};

[[nodiscard]] std::string_view ioctl_name(Ioctl i) noexcept;

}  // namespace uffdm::uffd
