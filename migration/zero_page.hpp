// zero_page.hpp — Whether a page holds only zeros: the source's zero runs, the destination's
// zero pages inside a compressed run.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace uffdm::migration {

// A live source reads pages its running guest may be writing right now: that race is the
// design (a write after the page's collection is always in a later dirty set, so a torn read is
// followed by a fresh copy or a discard), so ThreadSanitizer does not watch these reads.
__attribute__((no_sanitize("thread"))) inline bool all_zero(
    std::span<const std::byte> page) noexcept {
    const auto* words = reinterpret_cast<const std::uint64_t*>(page.data());
    std::size_t n = page.size() / 8;
    std::uint64_t any = 0;
    for (std::size_t i = 0; i < n; i += 8) {
        // 64 bytes per step: the compiler vectorises this, and a non-zero page is usually found
        // within its first cache line.
        for (std::size_t j = 0; j < 8 && i + j < n; ++j) {
            any |= words[i + j];
        }
        if (any != 0) {
            return false;
        }
    }
    return true;
}

}  // namespace uffdm::migration
