// guest_memory.cpp — uffdm::GuestMemory over uffd::Mapping, memory kinds, the synthetic guest.
#include <uffdm/uffdm.hpp>

#include "api/conversions.hpp"
#include "migration/synthetic.hpp"
#include "uffd/mapping.hpp"

namespace uffdm {

std::expected<MemoryKind, Error> parse_memory_kind(std::string_view text) {
    for (MemoryKind kind : {MemoryKind::Anonymous, MemoryKind::Shmem, MemoryKind::Hugetlb}) {
        if (text == to_string(kind)) {
            return kind;
        }
    }
    return std::unexpected(
        Error{make_error_code(Errc::InvalidArgument),
              "memory kind '" + std::string(text) + "' is not anonymous, shmem or hugetlb"});
}

struct GuestMemory::Impl {
    uffd::Mapping mapping;
    MemoryKind kind;
};

GuestMemory::GuestMemory(std::unique_ptr<Impl> impl) noexcept : impl_(std::move(impl)) {}
GuestMemory::GuestMemory(GuestMemory&&) noexcept = default;
GuestMemory& GuestMemory::operator=(GuestMemory&&) noexcept = default;
GuestMemory::~GuestMemory() = default;

std::expected<GuestMemory, Error> GuestMemory::allocate(MemoryKind kind, std::size_t length) {
    uffd::MemoryKind inner = kind == MemoryKind::Shmem       ? uffd::MemoryKind::Shmem
                             : kind == MemoryKind::Hugetlb   ? uffd::MemoryKind::Hugetlb
                             : kind == MemoryKind::Anonymous ? uffd::MemoryKind::Anonymous
                                                             : uffd::MemoryKind::Invalid;
    auto mapping = uffd::Mapping::create(inner, length);
    if (!mapping) {
        std::string hint = kind == MemoryKind::Hugetlb
                               ? " (are enough 2 MiB huge pages reserved? see vm.nr_hugepages)"
                               : "";
        return std::unexpected(
            Error{mapping.error(), "cannot map " + std::to_string(length) + " bytes of " +
                                       std::string(to_string(kind)) +
                                       " memory: " + mapping.error().message() + hint});
    }
    return GuestMemory(std::make_unique<Impl>(Impl{std::move(*mapping), kind}));
}

std::byte* GuestMemory::data() const noexcept {
    return impl_->mapping.data();
}
std::size_t GuestMemory::size() const noexcept {
    return impl_->mapping.size();
}
std::size_t GuestMemory::page_size() const noexcept {
    return impl_->mapping.page_size();
}
MemoryKind GuestMemory::kind() const noexcept {
    return impl_->kind;
}

std::vector<std::uint64_t> synthetic_region_lengths(const SyntheticGuest& guest) {
    std::vector<std::uint64_t> lengths;
    for (const auto& region : api::to_spec(guest).layout().regions) {
        lengths.push_back(region.length);
    }
    return lengths;
}

bool synthetic_page_matches(const SyntheticGuest& guest, std::uint32_t region, std::uint64_t page,
                            const void* data) noexcept {
    return migration::page_matches(api::to_spec(guest), region, page,
                                   {static_cast<const std::byte*>(data), guest.page_size});
}

void synthetic_page_fill(const SyntheticGuest& guest, std::uint32_t region, std::uint64_t page,
                         void* data) noexcept {
    migration::fill_page(api::to_spec(guest), region, page,
                         {static_cast<std::byte*>(data), guest.page_size});
}

}  // namespace uffdm
