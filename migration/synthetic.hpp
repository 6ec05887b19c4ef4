// synthetic.hpp — A deterministic synthetic guest: which pages are zero, repeated or unique, and
// their bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "migration/wire.hpp"

namespace uffdm::migration {

// What the non-zero pages hold: Random (xorshift: incompressible, the same on any host) or
// HostFiles (pages of this host's libraries, programs and texts, host_corpus.hpp: compresses
// like a real guest's memory; the same on one host only).
enum class SyntheticContent : std::uint8_t { Random = 0, HostFiles = 1 };

// The same spec and seed give the same guest on any host (HostFiles: on the same host), so a
// destination can check every page it receives without the source's memory.
struct SyntheticSpec {
    std::uint64_t size = 1ULL << 30;  // bytes in all regions together
    std::uint64_t page_size = 4096;
    std::uint32_t regions = 1;  // size split evenly (a VMM's RAM below and above a PCI hole)
    std::uint64_t seed = 1;
    std::uint32_t zero_percent = 50;    // pages that are all zero (a freshly booted guest: most)
    std::uint32_t repeat_percent = 10;  // of the rest, pages whose content one of 16 others share
    SyntheticContent content = SyntheticContent::Random;

    [[nodiscard]] wire::Layout layout() const;
    // Why the spec cannot be a guest ("" when it can).
    [[nodiscard]] std::string problem() const;
};

enum class PageContent : std::uint8_t { Zero, Repeated, Unique };

[[nodiscard]] PageContent content_of(const SyntheticSpec& spec, std::uint32_t region,
                                     std::uint64_t page) noexcept;
// Writes the page's bytes (page_size of them) into out.
void fill_page(const SyntheticSpec& spec, std::uint32_t region, std::uint64_t page,
               std::span<std::byte> out) noexcept;
// Writes every non-zero page of a region of `pages` pages at `base`, fresh zero-filled memory
// that no other thread sees yet, on every core: a 16 GiB guest is built in the time its page
// faults take spread over the cores, not one. ThreadSanitizer does not follow these writes
// (nobody else can see them; its shadow of them alone made a 2 GiB guest take 90 s to build).
void fill_new_region(const SyntheticSpec& spec, std::uint32_t region, std::uint64_t pages,
                     std::byte* base) noexcept;
// The bytes equal what fill_page writes, without a scratch copy.
[[nodiscard]] bool page_matches(const SyntheticSpec& spec, std::uint32_t region, std::uint64_t page,
                                std::span<const std::byte> data) noexcept;

}  // namespace uffdm::migration
