// page_hash.hpp — The 64-bit content hash a source sends with a page and a destination checks.
#pragma once

#include <xxhash.h>

#include <cstdint>
#include <span>

namespace uffdm::migration {

// XXH3-64: ~30 GB/s on one core, far faster than the wire; it catches corruption and a source
// serving the wrong page, not an attacker (the transport's authentication does that).
[[nodiscard]] inline std::uint64_t page_hash(std::span<const std::byte> page) noexcept {
    return XXH3_64bits(page.data(), page.size());
}

}  // namespace uffdm::migration
