// page_bitmap.cpp — Word-at-a-time scans over the atomic page bitmap.
#include "migration/page_bitmap.hpp"

#include <bit>

namespace uffdm::migration {

std::uint64_t PageBitmap::next_clear(std::uint64_t from) const noexcept {
    if (from >= pages_) {
        return pages_;
    }
    std::size_t word = static_cast<std::size_t>(from / 64);
    // Bits below `from` in the first word count as set.
    std::uint64_t below = (std::uint64_t{1} << (from % 64)) - 1;
    std::uint64_t bits = words_[word].load(std::memory_order_acquire) | below;
    for (;;) {
        if (bits != ~std::uint64_t{0}) {
            std::uint64_t page = word * 64 + static_cast<std::uint64_t>(std::countr_one(bits));
            return page < pages_ ? page : pages_;
        }
        if (++word >= word_count()) {
            return pages_;
        }
        bits = words_[word].load(std::memory_order_acquire);
    }
}

std::uint64_t PageBitmap::count() const noexcept {
    std::uint64_t total = 0;
    for (std::size_t i = 0; i < word_count(); ++i) {
        total +=
            static_cast<std::uint64_t>(std::popcount(words_[i].load(std::memory_order_relaxed)));
    }
    return total;
}

}  // namespace uffdm::migration
