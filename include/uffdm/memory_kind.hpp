// memory_kind.hpp — The guest RAM backings: anonymous, memfd shared memory, hugetlbfs.
#pragma once

#include <cstdint>
#include <string_view>

namespace uffdm {

// The guest RAM backings a VMM uses. Each behaves differently under userfaultfd: anonymous
// memory supports MISSING/WP/MOVE/ZEROPAGE; shared memory and hugetlbfs support MISSING, WP and
// MINOR (page cache present, page table missing); hugetlbfs has 2 MiB pages and no ZEROPAGE.
enum class MemoryKind : std::uint8_t { Invalid = 0, Anonymous = 1, Shmem = 2, Hugetlb = 3 };

[[nodiscard]] std::string_view to_string(MemoryKind kind) noexcept;

}  // namespace uffdm
