// switchover.cpp — Forget, unregister, discard, register again.
#include "migration/switchover.hpp"

#include <sys/mman.h>

#include <bit>
#include <cerrno>
#include <cstring>

namespace uffdm::migration {

namespace {

transport::Failure discard_failure(const std::string& what, int err) {
    return transport::Failure{std::error_code(err, std::system_category()),
                              what + ": " + std::strerror(err)};
}

// Runs of set bits: [first, first + count).
template <typename Visit>
void for_each_set_run(const PageBitmap& bits, Visit visit) {
    std::uint64_t p = 0;
    while (p < bits.size()) {
        std::uint64_t word = bits.word(p / 64) >> (p % 64);
        if (word == 0) {
            p = (p / 64 + 1) * 64;
            continue;
        }
        p += static_cast<std::uint64_t>(std::countr_zero(word));
        std::uint64_t first = p;
        while (p < bits.size() && bits.test(p)) {
            ++p;
        }
        visit(first, p - first);
    }
}

std::expected<void, transport::Failure> drop_range(const GuestRegion& region, std::uint64_t address,
                                                   std::uint64_t length) {
    void* at = reinterpret_cast<void*>(address);
    if (region.kind != uffd::MemoryKind::Anonymous) {
        if (::madvise(at, length, MADV_REMOVE) == 0) {
            return {};
        }
        if (errno != EINVAL) {
            return std::unexpected(discard_failure("MADV_REMOVE on guest memory", errno));
        }
        // A private mapping of the file: its own copies go, the file has none.
    }
    if (::madvise(at, length, MADV_DONTNEED) != 0) {
        return std::unexpected(discard_failure("MADV_DONTNEED on guest memory", errno));
    }
    return {};
}

}  // namespace

std::expected<std::uint64_t, transport::Failure> discard_stale_pages(
    const uffd::UserfaultFd& uffd, std::vector<uffd::Registration>& registrations, Placer& placer,
    const GuestAddresses& addresses, const std::vector<PageBitmap>& pages, bool unregistered) {
    bool any = false;
    for (std::uint32_t r = 0; r < pages.size(); ++r) {
        for_each_set_run(pages[r], [&](std::uint64_t first, std::uint64_t count) {
            (void)placer.forget({r, first, count});
            any = true;
        });
    }
    if (any) {
        std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges;
        for (uffd::Registration& registration : registrations) {
            if (!unregistered) {
                break;
            }
            ranges.emplace_back(registration.start(), registration.length());
            if (auto gone = registration.unregister(); !gone) {
                return std::unexpected(transport::Failure{
                    gone.error(),
                    "unregistering guest memory for the switchover: " + gone.error().message()});
            }
        }
        std::expected<void, transport::Failure> dropped;
        for (std::uint32_t r = 0; r < pages.size() && dropped; ++r) {
            const GuestRegion& region = placer.regions()[r];
            for_each_set_run(pages[r], [&](std::uint64_t first, std::uint64_t count) {
                for (std::uint64_t p = first; dropped && p < first + count;) {
                    auto where = addresses.locate(r, p, first + count - p);
                    if (!where) {
                        ++p;  // unmapped: nothing there to drop
                        continue;
                    }
                    dropped = drop_range(region, where->address, where->pages * region.page_size);
                    p += where->pages;
                }
            });
        }
        // Registered again whatever happened: a guest must never run on unregistered memory.
        for (std::size_t i = 0; i < ranges.size(); ++i) {
            auto again = uffd.register_range(ranges[i].first, ranges[i].second,
                                             uffd::RegisterModes::missing_only());
            if (!again) {
                return std::unexpected(transport::Failure{
                    again.error(), "registering guest memory again after the switchover: " +
                                       again.error().message()});
            }
            registrations[i] = std::move(*again);
        }
        if (!dropped) {
            return std::unexpected(dropped.error());
        }
    }
    return placer.total_pages() - placer.present_pages();
}

}  // namespace uffdm::migration
