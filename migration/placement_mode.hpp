// placement_mode.hpp — How a destination places pages into one kind of guest memory, chosen
// from the ioctls the kernel allows on its registration (what `uffd-migrate check` lists).
#pragma once

#include <expected>
#include <string>
#include <vector>

#include "uffd/features.hpp"
#include "uffd/mapping.hpp"

namespace uffdm::migration {

// Pages with content are copied from the receive ring (UFFDIO_COPY: one copy, the page
// allocated and filled by the kernel in one step). The ways with no second copy the kernel
// offers were measured against it on the same data path and are slower on this project's
// benchmark machine (BENCHMARKS.md, "Receive-and-place floors" and "Placement pipeline"), so
// they are named, not taken: UFFDIO_MOVE of received pages pays a fresh page for every refill
// of the buffer it moved out of; MINOR + UFFDIO_CONTINUE receives through a second mapping of
// the file, which faults and zeroes a page-cache page before the copy it saves.
struct PlacementMode {
    bool zeropage = true;  // zero runs by UFFDIO_ZEROPAGE; else UFFDIO_COPY from a zero page
    // Ways the kernel offers here that were measured and not chosen, each with the reason.
    std::vector<std::string> passed_over;

    // One line: "UFFDIO_COPY from the receive ring, zero runs UFFDIO_ZEROPAGE".
    [[nodiscard]] std::string describe() const;
};

// missing: the ioctls of a MISSING registration of this kind; minor: those of a MINOR one
// (empty where the kernel has none). Fails, naming the ioctl, where the kernel does not allow
// UFFDIO_COPY: nothing could place a page.
[[nodiscard]] std::expected<PlacementMode, std::string> choose_placement(uffd::MemoryKind kind,
                                                                         uffd::IoctlSet missing,
                                                                         uffd::IoctlSet minor);

}  // namespace uffdm::migration
