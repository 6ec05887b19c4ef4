// page_bitmap.hpp — One bit per guest page, set and tested atomically from any thread.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

namespace uffdm::migration {

// Bits go from 0 to 1 (a page becomes requested, sent, present), so a set is one fetch_or and a
// scan needs no lock. Two things clear them: between sessions a source rewrites its "sent" bits
// from what the destination says it has (assign_word, clear), while no thread streams; and on
// the destination a page the guest discarded is missing again (test_and_clear), which whoever
// then finds it missing handles as any missing page.
class PageBitmap {
  public:
    PageBitmap() = default;
    explicit PageBitmap(std::uint64_t pages)
        : pages_(pages), words_(std::make_unique<std::atomic<std::uint64_t>[]>(word_count())) {}

    [[nodiscard]] std::uint64_t size() const noexcept { return pages_; }
    [[nodiscard]] bool test(std::uint64_t page) const noexcept {
        return (words_[page / 64].load(std::memory_order_acquire) >> (page % 64)) & 1U;
    }
    // Sets the bit; true when this call set it (it was clear).
    bool test_and_set(std::uint64_t page) noexcept {
        std::uint64_t mask = std::uint64_t{1} << (page % 64);
        return (words_[page / 64].fetch_or(mask, std::memory_order_acq_rel) & mask) == 0;
    }
    // Clears the bit; true when this call cleared it (it was set).
    bool test_and_clear(std::uint64_t page) noexcept {
        std::uint64_t mask = std::uint64_t{1} << (page % 64);
        return (words_[page / 64].fetch_and(~mask, std::memory_order_acq_rel) & mask) != 0;
    }
    [[nodiscard]] std::size_t words() const noexcept { return word_count(); }
    [[nodiscard]] std::uint64_t word(std::size_t index) const noexcept {
        return words_[index].load(std::memory_order_acquire);
    }
    void assign_word(std::size_t index, std::uint64_t bits) noexcept {
        words_[index].store(bits, std::memory_order_release);
    }
    // Clears the bits of `mask` in word `index` (a live source's re-sent pages).
    void clear_bits(std::size_t index, std::uint64_t mask) noexcept {
        words_[index].fetch_and(~mask, std::memory_order_acq_rel);
    }
    // Sets the bits of `mask` in word `index`.
    void set_bits(std::size_t index, std::uint64_t mask) noexcept {
        words_[index].fetch_or(mask, std::memory_order_acq_rel);
    }
    void clear() noexcept {
        for (std::size_t i = 0; i < word_count(); ++i) {
            words_[i].store(0, std::memory_order_release);
        }
    }
    // The first clear bit at or after from, or size() when there is none.
    [[nodiscard]] std::uint64_t next_clear(std::uint64_t from) const noexcept;
    [[nodiscard]] std::uint64_t count() const noexcept;
    // Bytes of bookkeeping (for the memory report).
    [[nodiscard]] std::size_t bytes() const noexcept { return word_count() * 8; }

  private:
    [[nodiscard]] std::size_t word_count() const noexcept {
        return static_cast<std::size_t>((pages_ + 63) / 64);
    }
    std::uint64_t pages_ = 0;
    std::unique_ptr<std::atomic<std::uint64_t>[]> words_;
};

}  // namespace uffdm::migration
