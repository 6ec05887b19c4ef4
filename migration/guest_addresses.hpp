// guest_addresses.hpp — Where each guest page lives in this process now, as mremap and munmap
// move and drop parts of the guest's memory during the migration.
#pragma once

#include <cstdint>
#include <optional>
#include <shared_mutex>
#include <vector>

namespace uffdm::migration {

struct GuestRegion;

// A run of pages of one region: a page never leaves its region, whatever its address.
struct GuestPages {
    std::uint32_t region = 0;
    std::uint64_t first = 0;
    std::uint64_t count = 0;
};

// Starts as the regions as registered, one piece each. A REMAP event moves pieces (splitting a
// piece when only part of it moved), an UNMAP event drops them. Thread-safe: the fault thread
// changes it while the data path loops look pages up for placement.
class GuestAddresses {
  public:
    explicit GuestAddresses(const std::vector<GuestRegion>& regions);
    // Pages of the regions at addresses of their own (memory another process maps, where one
    // region may lie in several places).
    struct Placed {
        std::uint64_t address = 0;
        GuestPages pages;
    };
    GuestAddresses(const std::vector<GuestRegion>& regions, const std::vector<Placed>& pieces);

    // The page at an address, if guest memory is mapped there.
    [[nodiscard]] std::optional<GuestPages> page_at(std::uint64_t address) const;
    // The address of a page and how many pages of its region follow it contiguously there
    // (from 1 up to `wanted`); nullopt once the page is unmapped.
    struct Located {
        std::uint64_t address = 0;
        std::uint64_t pages = 0;
    };
    [[nodiscard]] std::optional<Located> locate(std::uint32_t region, std::uint64_t page,
                                                std::uint64_t wanted) const;
    // The guest pages in [start, end): whole pages, as runs (a page partly inside counts).
    [[nodiscard]] std::vector<GuestPages> pages_in(std::uint64_t start, std::uint64_t end) const;

    // mremap moved [from, from + length) to `to`.
    void moved(std::uint64_t from, std::uint64_t to, std::uint64_t length);
    // munmap dropped [start, end): the guest pages that were there, now nowhere.
    std::vector<GuestPages> unmapped(std::uint64_t start, std::uint64_t end);

  private:
    struct Piece {
        std::uint64_t address = 0;
        std::uint64_t page_size = 0;
        GuestPages pages;
        [[nodiscard]] std::uint64_t end() const { return address + pages.count * page_size; }
    };
    // The pieces overlapping [start, end) cut at its edges (page-rounded outwards): afterwards
    // every piece is either wholly inside or wholly outside. Holds mutex_ exclusively.
    void split_at(std::uint64_t start, std::uint64_t end);
    void sort();

    mutable std::shared_mutex mutex_;  // guards pieces_
    std::vector<Piece> pieces_;        // sorted by address, never overlapping
};

}  // namespace uffdm::migration
