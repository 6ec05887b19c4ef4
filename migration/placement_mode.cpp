// placement_mode.cpp — The placement chosen per memory kind, and why the others were not.
#include "migration/placement_mode.hpp"

namespace uffdm::migration {

std::string PlacementMode::describe() const {
    return std::string("UFFDIO_COPY from the receive ring, zero runs ") +
           (zeropage ? "UFFDIO_ZEROPAGE" : "UFFDIO_COPY of a zero page");
}

std::expected<PlacementMode, std::string> choose_placement(uffd::MemoryKind kind,
                                                           uffd::IoctlSet missing,
                                                           uffd::IoctlSet minor) {
    using uffd::Ioctl;
    if (!missing.has(Ioctl::Copy)) {
        return std::unexpected("the kernel does not allow UFFDIO_COPY on " +
                               std::string(to_string(kind)) + " guest memory");
    }
    PlacementMode mode;
    // hugetlbfs has no ZEROPAGE; a kernel without it elsewhere gets copied zeros, not a refusal.
    mode.zeropage = missing.has(Ioctl::Zeropage);
    if (missing.has(Ioctl::Move) && kind == uffd::MemoryKind::Anonymous) {
        mode.passed_over.push_back(
            "UFFDIO_MOVE of received pages: 0.47x of UFFDIO_COPY, refilling the receive "
            "buffers with fresh pages counted");
    }
    if (minor.has(Ioctl::Continue)) {
        mode.passed_over.push_back(
            "MINOR + UFFDIO_CONTINUE, received into the page cache: 0.70x of UFFDIO_COPY "
            "(measured on shmem; each page faulted and zeroed before the copy it saves)");
    }
    return mode;
}

}  // namespace uffdm::migration
