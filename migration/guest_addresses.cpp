// guest_addresses.cpp — Splitting, moving and dropping pieces of guest memory.
#include "migration/guest_addresses.hpp"

#include <algorithm>
#include <mutex>

#include "migration/placer.hpp"

namespace uffdm::migration {

GuestAddresses::GuestAddresses(const std::vector<GuestRegion>& regions) {
    for (std::uint32_t r = 0; r < regions.size(); ++r) {
        const GuestRegion& g = regions[r];
        pieces_.push_back(
            {reinterpret_cast<std::uint64_t>(g.data), g.page_size, {r, 0, g.length / g.page_size}});
    }
    sort();
}

GuestAddresses::GuestAddresses(const std::vector<GuestRegion>& regions,
                               const std::vector<Placed>& pieces) {
    for (const Placed& p : pieces) {
        pieces_.push_back({p.address, regions[p.pages.region].page_size, p.pages});
    }
    sort();
}

void GuestAddresses::sort() {
    std::sort(pieces_.begin(), pieces_.end(),
              [](const Piece& a, const Piece& b) { return a.address < b.address; });
}

std::optional<GuestPages> GuestAddresses::page_at(std::uint64_t address) const {
    std::shared_lock lock(mutex_);
    auto after = std::upper_bound(pieces_.begin(), pieces_.end(), address,
                                  [](std::uint64_t a, const Piece& p) { return a < p.address; });
    if (after == pieces_.begin()) {
        return std::nullopt;
    }
    const Piece& p = *(after - 1);
    if (address >= p.end()) {
        return std::nullopt;
    }
    return GuestPages{p.pages.region, p.pages.first + (address - p.address) / p.page_size, 1};
}

std::optional<GuestAddresses::Located> GuestAddresses::locate(std::uint32_t region,
                                                              std::uint64_t page,
                                                              std::uint64_t wanted) const {
    std::shared_lock lock(mutex_);
    for (const Piece& p : pieces_) {
        if (p.pages.region == region && page >= p.pages.first &&
            page < p.pages.first + p.pages.count) {
            std::uint64_t offset = page - p.pages.first;
            return Located{p.address + offset * p.page_size,
                           std::min(wanted, p.pages.count - offset)};
        }
    }
    return std::nullopt;
}

std::vector<GuestPages> GuestAddresses::pages_in(std::uint64_t start, std::uint64_t end) const {
    std::vector<GuestPages> runs;
    std::shared_lock lock(mutex_);
    for (const Piece& p : pieces_) {
        if (p.end() <= start || p.address >= end) {
            continue;
        }
        std::uint64_t from = std::max(start, p.address);
        std::uint64_t to = std::min(end, p.end());
        std::uint64_t first = (from - p.address) / p.page_size;
        std::uint64_t last = (to - p.address + p.page_size - 1) / p.page_size;
        runs.push_back({p.pages.region, p.pages.first + first, last - first});
    }
    return runs;
}

void GuestAddresses::split_at(std::uint64_t start, std::uint64_t end) {
    std::vector<Piece> cut;
    cut.reserve(pieces_.size() + 2);
    for (const Piece& p : pieces_) {
        // Page-rounded edges inside this piece, in its own page size.
        std::uint64_t edges[2] = {start, end};
        std::vector<std::uint64_t> at;
        for (std::uint64_t e : edges) {
            if (e > p.address && e < p.end()) {
                std::uint64_t page = (e - p.address) / p.page_size;
                if (e == start && (e - p.address) % p.page_size != 0) {
                    // a partly covered first page belongs inside
                } else if ((e - p.address) % p.page_size != 0) {
                    ++page;  // a partly covered last page belongs inside
                }
                if (page > 0 && page < p.pages.count) {
                    at.push_back(page);
                }
            }
        }
        std::sort(at.begin(), at.end());
        at.erase(std::unique(at.begin(), at.end()), at.end());
        std::uint64_t from = 0;
        at.push_back(p.pages.count);
        for (std::uint64_t to : at) {
            cut.push_back({p.address + from * p.page_size,
                           p.page_size,
                           {p.pages.region, p.pages.first + from, to - from}});
            from = to;
        }
    }
    pieces_ = std::move(cut);
}

void GuestAddresses::moved(std::uint64_t from, std::uint64_t to, std::uint64_t length) {
    std::unique_lock lock(mutex_);
    split_at(from, from + length);
    for (Piece& p : pieces_) {
        if (p.address < from + length && p.end() > from) {
            p.address = p.address - from + to;
        }
    }
    sort();
}

std::vector<GuestPages> GuestAddresses::unmapped(std::uint64_t start, std::uint64_t end) {
    std::unique_lock lock(mutex_);
    split_at(start, end);
    std::vector<GuestPages> gone;
    std::erase_if(pieces_, [&](const Piece& p) {
        if (p.address < end && p.end() > start) {
            gone.push_back(p.pages);
            return true;
        }
        return false;
    });
    return gone;
}

}  // namespace uffdm::migration
