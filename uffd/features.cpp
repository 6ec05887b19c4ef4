// features.cpp — The name tables for feature and ioctl bits.
#include "uffd/features.hpp"

#include <array>
#include <utility>

namespace uffdm::uffd {

namespace {

constexpr std::array<std::pair<Feature, std::string_view>, 17> kFeatureNames{{
    {Feature::PagefaultFlagWp, "PAGEFAULT_FLAG_WP"},
    {Feature::EventFork, "EVENT_FORK"},
    {Feature::EventRemap, "EVENT_REMAP"},
    {Feature::EventRemove, "EVENT_REMOVE"},
    {Feature::MissingHugetlbfs, "MISSING_HUGETLBFS"},
    {Feature::MissingShmem, "MISSING_SHMEM"},
    {Feature::EventUnmap, "EVENT_UNMAP"},
    {Feature::Sigbus, "SIGBUS"},
    {Feature::ThreadId, "THREAD_ID"},
    {Feature::MinorHugetlbfs, "MINOR_HUGETLBFS"},
    {Feature::MinorShmem, "MINOR_SHMEM"},
    {Feature::ExactAddress, "EXACT_ADDRESS"},
    {Feature::WpHugetlbfsShmem, "WP_HUGETLBFS_SHMEM"},
    {Feature::WpUnpopulated, "WP_UNPOPULATED"},
    {Feature::Poison, "POISON"},
    {Feature::WpAsync, "WP_ASYNC"},
    {Feature::Move, "MOVE"},
}};

constexpr std::array<std::pair<Ioctl, std::string_view>, 10> kIoctlNames{{
    {Ioctl::Register, "REGISTER"},
    {Ioctl::Unregister, "UNREGISTER"},
    {Ioctl::Wake, "WAKE"},
    {Ioctl::Copy, "COPY"},
    {Ioctl::Zeropage, "ZEROPAGE"},
    {Ioctl::Move, "MOVE"},
    {Ioctl::Writeprotect, "WRITEPROTECT"},
    {Ioctl::Continue, "CONTINUE"},
    {Ioctl::Poison, "POISON"},
    {Ioctl::Api, "API"},
}};

}  // namespace

std::string_view feature_name(Feature f) noexcept {
    for (const auto& [feature, name] : kFeatureNames) {
        if (feature == f) {
            return name;
        }
    }
    return "unknown";
}

FeatureSet known_features() noexcept {
    std::uint64_t bits = 0;
    for (const auto& entry : kFeatureNames) {
        bits |= static_cast<std::uint64_t>(entry.first);
    }
    return FeatureSet(bits);
}

std::vector<std::string> FeatureSet::names() const {
    std::vector<std::string> out;
    for (unsigned bit = 0; bit < 64; ++bit) {
        std::uint64_t value = 1ULL << bit;
        if ((bits_ & value) == 0) {
            continue;
        }
        if (known_features().bits() & value) {
            out.emplace_back(feature_name(static_cast<Feature>(value)));
        } else {
            out.push_back("bit" + std::to_string(bit));
        }
    }
    return out;
}

std::string_view ioctl_name(Ioctl i) noexcept {
    for (const auto& [ioctl, name] : kIoctlNames) {
        if (ioctl == i) {
            return name;
        }
    }
    return "unknown";
}

std::vector<std::string> IoctlSet::names() const {
    std::vector<std::string> out;
    for (unsigned bit = 0; bit < 64; ++bit) {
        if ((mask_ & (1ULL << bit)) == 0) {
            continue;
        }
        std::string_view name = ioctl_name(static_cast<Ioctl>(bit));
        out.push_back(name == "unknown" ? "bit" + std::to_string(bit) : std::string(name));
    }
    return out;
}

}  // namespace uffdm::uffd
