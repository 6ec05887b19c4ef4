// residency.cpp — pagemap for anonymous memory, mincore for shmem.
#include "uffd/residency.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>

#include "uffd/unique_fd.hpp"

namespace uffdm::uffd {

namespace {

constexpr std::uint64_t kPagemapPresent = std::uint64_t{1} << 63;
constexpr std::uint64_t kPagemapSwapped = std::uint64_t{1} << 62;

std::unexpected<std::error_code> errno_error() {
    return std::unexpected(std::error_code(errno, std::system_category()));
}

}  // namespace

ResidencyProbe ResidencyProbe::open() noexcept {
    return ResidencyProbe(UniqueFd(::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC)));
}

std::expected<std::vector<Residency>, std::error_code> ResidencyProbe::residency(
    std::uint64_t address, std::uint64_t pages, std::uint64_t page_size, MemoryKind kind) const {
    std::vector<Residency> out(pages, Residency::Unknown);
    if (kind == MemoryKind::Hugetlb || pages == 0) {
        return out;
    }
    auto base = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
    std::uint64_t per_page = page_size / base;  // base pages per page (1 but for huge pages)
    if (kind == MemoryKind::Shmem) {
        std::vector<unsigned char> in_core(pages * per_page);
        if (::mincore(reinterpret_cast<void*>(address), pages * page_size, in_core.data()) < 0) {
            return errno_error();
        }
        for (std::uint64_t p = 0; p < pages; ++p) {
            out[p] = (in_core[p * per_page] & 1) != 0 ? Residency::Present : Residency::Missing;
        }
        return out;
    }
    if (!pagemap_) {
        return std::unexpected(make_error_code(std::errc::bad_file_descriptor));
    }
    std::vector<std::uint64_t> entries(pages * per_page);
    auto offset = static_cast<off_t>(address / base * sizeof(std::uint64_t));
    auto want = static_cast<ssize_t>(entries.size() * sizeof(std::uint64_t));
    ssize_t got = ::pread(pagemap_.get(), entries.data(), static_cast<std::size_t>(want), offset);
    if (got != want) {
        return got < 0 ? errno_error() : std::unexpected(make_error_code(std::errc::io_error));
    }
    for (std::uint64_t p = 0; p < pages; ++p) {
        std::uint64_t e = entries[p * per_page];
        out[p] = (e & (kPagemapPresent | kPagemapSwapped)) != 0 ? Residency::Present
                                                                : Residency::Missing;
    }
    return out;
}

}  // namespace uffdm::uffd
