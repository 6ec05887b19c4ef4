// guest_memory.hpp — The memory a source serves: its layout, each page's bytes, which are zero.
#pragma once

#include <cstdint>
#include <expected>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "migration/synthetic.hpp"
#include "migration/wire.hpp"

namespace uffdm::migration {

class GuestMemory {
  public:
    // A synthetic guest materialised in anonymous memory; only non-zero pages are written, so
    // the source's RSS is its non-zero pages.
    [[nodiscard]] static std::expected<GuestMemory, transport::Failure> synthetic(
        const SyntheticSpec& spec);
    // A memory image file (one region), mapped read-only and never read whole: holes of a
    // sparse file (SEEK_HOLE) are known to be zero without reading them. Its size must be a
    // non-zero multiple of page_size (a truncated image is refused).
    [[nodiscard]] static std::expected<GuestMemory, transport::Failure> image(
        const std::string& path, std::uint64_t page_size);
    // Regions a VMM already has mapped (read while serving; they must stay mapped).
    [[nodiscard]] static std::expected<GuestMemory, transport::Failure> external(
        const std::vector<std::span<const std::byte>>& regions, std::uint64_t page_size);

    GuestMemory(GuestMemory&&) noexcept;
    GuestMemory& operator=(GuestMemory&&) noexcept;
    ~GuestMemory();

    [[nodiscard]] const wire::Layout& layout() const noexcept { return layout_; }
    [[nodiscard]] std::span<const std::byte> pages(std::uint32_t region, std::uint64_t first,
                                                   std::uint64_t count) const noexcept;
    // Whether the page is all zero: from what is known (a hole, the synthetic spec) or by
    // reading it.
    [[nodiscard]] bool is_zero(std::uint32_t region, std::uint64_t page) const noexcept;
    // The spec, for a synthetic guest.
    [[nodiscard]] const std::optional<SyntheticSpec>& spec() const noexcept { return spec_; }

  private:
    struct Region;
    GuestMemory() = default;

    wire::Layout layout_;
    std::vector<std::unique_ptr<Region>> regions_;
    std::optional<SyntheticSpec> spec_;
};

}  // namespace uffdm::migration
