// switchover.hpp — The destination's switchover: pages a live source's guest wrote after they
// were sent are made missing again, before this guest runs.
#pragma once

#include <cstdint>
#include <expected>
#include <vector>

#include "migration/guest_addresses.hpp"
#include "migration/page_bitmap.hpp"
#include "migration/placer.hpp"
#include "uffd/registration.hpp"
#include "uffd/userfault_fd.hpp"

namespace uffdm::migration {

// Marks the pages missing (the placer forgets them), then drops them from memory: anonymous
// memory with MADV_DONTNEED, shmem and hugetlbfs with MADV_REMOVE (a hole punched in the
// file, so the page cache cannot hand the old copy back). The guest's ranges are unregistered
// meanwhile, so that the kernel raises no REMOVE event per range for the fault thread to read
// (each would cost a round trip between threads while the guest waits), and registered again
// afterwards: the guest is not running, so no fault can fall in between. Returns how many
// pages are missing afterwards.
[[nodiscard]] std::expected<std::uint64_t, transport::Failure> discard_stale_pages(
    const uffd::UserfaultFd& uffd, std::vector<uffd::Registration>& registrations, Placer& placer,
    const GuestAddresses& addresses, const std::vector<PageBitmap>& pages);

}  // namespace uffdm::migration
