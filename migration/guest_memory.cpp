// guest_memory.cpp — Anonymous mappings, read-only file mappings with a hole map, VMM regions.
#include "migration/guest_memory.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "migration/zero_page.hpp"

namespace uffdm::migration {

namespace {

transport::Failure system_failure(const std::string& what, int err) {
    return transport::Failure{std::error_code(err, std::system_category()),
                              what + ": " + std::strerror(err)};
}

}  // namespace

struct GuestMemory::Region {
    std::byte* data = nullptr;
    std::uint64_t length = 0;
    bool owned = false;  // munmap on destruction
    // Data extents [start, end) of a sparse image, sorted; everything else is a hole.
    std::optional<std::vector<std::pair<std::uint64_t, std::uint64_t>>> extents;

    ~Region() {
        if (owned && data != nullptr) {
            ::munmap(data, length);
        }
    }
};

GuestMemory::GuestMemory(GuestMemory&&) noexcept = default;
GuestMemory& GuestMemory::operator=(GuestMemory&&) noexcept = default;
GuestMemory::~GuestMemory() = default;

std::expected<GuestMemory, transport::Failure> GuestMemory::synthetic(const SyntheticSpec& spec) {
    if (std::string problem = spec.problem(); !problem.empty()) {
        return std::unexpected(
            transport::failure(Errc::InvalidArgument, "synthetic guest: " + problem));
    }
    GuestMemory memory;
    memory.layout_ = spec.layout();
    memory.spec_ = spec;
    for (const auto& info : memory.layout_.regions) {
        void* p = ::mmap(nullptr, info.length, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) {
            return std::unexpected(system_failure(
                "mapping " + std::to_string(info.length) + " bytes of synthetic guest", errno));
        }
        auto region = std::make_unique<Region>();
        region->data = static_cast<std::byte*>(p);
        region->length = info.length;
        region->owned = true;
        fill_new_region(spec, info.id, info.pages(), region->data);
        memory.regions_.push_back(std::move(region));
    }
    return memory;
}

std::expected<GuestMemory, transport::Failure> GuestMemory::image(const std::string& path,
                                                                  std::uint64_t page_size) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return std::unexpected(system_failure("cannot open image " + path, errno));
    }
    struct stat st {};
    if (::fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        ::close(fd);
        return std::unexpected(
            transport::failure(Errc::InvalidArgument, "image " + path + " is not a regular file"));
    }
    auto size = static_cast<std::uint64_t>(st.st_size);
    wire::Layout layout{{{0, page_size, size}}};
    if (auto ok = wire::validate(layout); !ok) {
        ::close(fd);
        return std::unexpected(transport::failure(
            Errc::InvalidArgument, "image " + path + " of " + std::to_string(size) +
                                       " bytes cannot be a guest of " + std::to_string(page_size) +
                                       "-byte pages (truncated?): " + ok.error().detail));
    }
    auto region = std::make_unique<Region>();
    // Find the data extents before mapping: a sparse 16 GiB image with little data is then
    // served without touching its holes.
    std::vector<std::pair<std::uint64_t, std::uint64_t>> extents;
    off_t at = 0;
    bool holes_known = true;
    while (static_cast<std::uint64_t>(at) < size) {
        off_t data = ::lseek(fd, at, SEEK_DATA);
        if (data < 0) {
            holes_known = errno == ENXIO;  // ENXIO: no data after at; others: unsupported
            break;
        }
        off_t hole = ::lseek(fd, data, SEEK_HOLE);
        if (hole < 0) {
            holes_known = false;
            break;
        }
        extents.emplace_back(static_cast<std::uint64_t>(data), static_cast<std::uint64_t>(hole));
        at = hole;
    }
    if (holes_known) {
        region->extents = std::move(extents);
    }
    void* p = ::mmap(nullptr, size, PROT_READ, MAP_SHARED | MAP_NORESERVE, fd, 0);
    int err = errno;
    ::close(fd);
    if (p == MAP_FAILED) {
        return std::unexpected(system_failure("mapping image " + path, err));
    }
    region->data = static_cast<std::byte*>(p);
    region->length = size;
    region->owned = true;
    GuestMemory memory;
    memory.layout_ = layout;
    memory.regions_.push_back(std::move(region));
    return memory;
}

std::expected<GuestMemory, transport::Failure> GuestMemory::external(
    const std::vector<std::span<const std::byte>>& regions, std::uint64_t page_size) {
    GuestMemory memory;
    for (std::size_t i = 0; i < regions.size(); ++i) {
        memory.layout_.regions.push_back(
            {static_cast<std::uint32_t>(i), page_size, regions[i].size()});
        auto region = std::make_unique<Region>();
        region->data = const_cast<std::byte*>(regions[i].data());
        region->length = regions[i].size();
        memory.regions_.push_back(std::move(region));
    }
    if (auto ok = wire::validate(memory.layout_); !ok) {
        return std::unexpected(
            transport::failure(Errc::InvalidArgument, "source regions: " + ok.error().detail));
    }
    for (const auto& r : memory.regions_) {
        if (reinterpret_cast<std::uintptr_t>(r->data) % page_size != 0) {
            return std::unexpected(transport::failure(
                Errc::Unaligned, "a source region does not start on a page boundary"));
        }
    }
    return memory;
}

std::span<const std::byte> GuestMemory::pages(std::uint32_t region, std::uint64_t first,
                                              std::uint64_t count) const noexcept {
    std::uint64_t page_size = layout_.regions[region].page_size;
    return {regions_[region]->data + first * page_size, count * page_size};
}

bool GuestMemory::is_zero(std::uint32_t region, std::uint64_t page) const noexcept {
    if (spec_) {
        return content_of(*spec_, region, page) == PageContent::Zero;
    }
    const Region& r = *regions_[region];
    std::uint64_t page_size = layout_.regions[region].page_size;
    if (r.extents) {
        std::uint64_t start = page * page_size;
        std::uint64_t end = start + page_size;
        // The first extent ending after start: the page is a hole when it begins at or after end.
        auto it = std::upper_bound(r.extents->begin(), r.extents->end(), start,
                                   [](std::uint64_t v, const auto& e) { return v < e.second; });
        if (it == r.extents->end() || it->first >= end) {
            return true;
        }
    }
    return all_zero(pages(region, page, 1));
}

}  // namespace uffdm::migration
