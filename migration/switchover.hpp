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
// file, so the page cache cannot hand the old copy back). Returns how many pages are missing
// afterwards.
//
// `unregistered`: the guest's ranges are unregistered meanwhile and registered again after,
// so that the kernel raises no REMOVE event per range for the fault thread to read (each costs
// a round trip between threads while the guest waits: 13059 ranges took 0.8-1.2 s that way,
// 41 ms this way). Unregistering wakes every thread blocked on a fault there, which would then
// find an empty page: so only on the fault thread, with no event left unread and every page
// present (FaultServer::discard_at_switchover), when no thread can be blocked on any page.
// Otherwise the ranges stay registered and the fault thread reads the events.
[[nodiscard]] std::expected<std::uint64_t, transport::Failure> discard_stale_pages(
    const uffd::UserfaultFd& uffd, std::vector<uffd::Registration>& registrations, Placer& placer,
    const GuestAddresses& addresses, const std::vector<PageBitmap>& pages, bool unregistered);

}  // namespace uffdm::migration
