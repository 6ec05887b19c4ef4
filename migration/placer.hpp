// placer.hpp — Places validated runs of pages into the destination's registered guest memory.
#pragma once

#include <atomic>
#include <cstdint>
#include <expected>
#include <functional>
#include <shared_mutex>
#include <vector>

#include "migration/fault_waits.hpp"
#include "migration/guest_addresses.hpp"
#include "migration/page_bitmap.hpp"
#include "migration/report.hpp"
#include "migration/wire.hpp"
#include "uffd/mapping.hpp"
#include "uffd/userfault_fd.hpp"

namespace uffdm::migration {

// Guest memory on the destination: mapped, registered (MISSING), not yet touched.
struct GuestRegion {
    std::byte* data = nullptr;
    std::uint64_t length = 0;
    std::uint64_t page_size = 0;
    uffd::MemoryKind kind = uffd::MemoryKind::Anonymous;
    bool zeropage_ioctl = true;  // UFFDIO_ZEROPAGE allowed here (not on hugetlbfs); the kernel's
                                 // answer at registration has the last word (Placer::use_zeropage)
};

// Where a placed page came from: an answer, the stream, or this host (zeros for a page the
// guest discarded).
enum class Path : std::uint8_t { Urgent, Background, Local };

// Called from the urgent and bulk loop threads at once: every shared count is atomic, and the
// present bitmap is the single truth of what is there (a page placed by the other thread is
// found by the bitmap, or by the kernel's EEXIST).
class Placer {
  public:
    Placer(const uffd::UserfaultFd& uffd, std::vector<GuestRegion> regions,
           const GuestAddresses& addresses, FaultWaits& waits, bool verify_hashes);

    // Hashes are checked for every page of the run before any of it is placed: a page whose
    // content does not match is never placed (Errc::ProtocolViolation naming it). EAGAIN (a
    // REMOVE, UNMAP or REMAP event is queued) and ENOENT (one was read, not yet applied) are
    // retried for a while; other kernel errors, and those for too long, end the migration.
    [[nodiscard]] std::expected<void, transport::Failure> place(const wire::PagesView& run,
                                                                Path path);
    // A run read from this host's copy of the memory (no wire, no hashes), placed as an answer,
    // by the fault thread while it holds the events lock (guard_with): no lock taken here.
    [[nodiscard]] std::expected<void, transport::Failure> place_local(const wire::PagesView& run);

    // From here on place() holds `events` shared from its check of the present bitmap to the
    // end of its ioctls; the fault thread holds it exclusively from reading an event batch to
    // having applied it. So no copy lands after a REMOVE was read and before its pages are
    // marked (zeros, for memory another process maps: a copy landing after the kernel dropped
    // those pages would bring back what the guest discarded). Set before any placement.
    void guard_with(std::shared_mutex* events) noexcept { events_ = events; }

    [[nodiscard]] const std::vector<GuestRegion>& regions() const noexcept { return regions_; }
    // Whether zero runs of a region are placed by UFFDIO_ZEROPAGE or copied from a zero page,
    // as the kernel allows on its registration. Before any placement.
    void use_zeropage(std::uint32_t region, bool allowed);
    [[nodiscard]] PageBitmap& present(std::uint32_t region) noexcept { return present_[region]; }
    [[nodiscard]] PageBitmap& requested(std::uint32_t region) noexcept {
        return requested_[region];
    }
    // Zeros in place of pages still missing, for whoever waits on them (no wire involved).
    [[nodiscard]] std::expected<void, transport::Failure> place_zeros(const GuestPages& run);
    // The guest discarded these pages (a REMOVE event): those marked present are missing
    // again, and are returned. Their requested bits stay: an answer already on its way is
    // still one that was asked for.
    std::vector<std::uint64_t> forget(const GuestPages& run);
    // These pages read zeros from now on and are placed when touched: marked present (nothing
    // from the source is placed there), whoever waits on them is done waiting.
    void mark_zero(const GuestPages& run);
    // A page of zeros at least as large as the largest page where ZEROPAGE is not allowed.
    [[nodiscard]] const std::byte* zeros() const noexcept { return zeros_.data(); }
    // These pages were unmapped: nothing will be placed there and nobody can wait on them, so
    // they count as present. Returns how many were missing.
    std::uint64_t drop(const GuestPages& run);

    [[nodiscard]] std::uint64_t total_pages() const noexcept { return total_; }
    [[nodiscard]] std::uint64_t present_pages() const noexcept {
        return present_count_.load(std::memory_order_acquire);
    }
    [[nodiscard]] bool complete() const noexcept { return present_pages() == total_; }
    [[nodiscard]] PagesByPath pages() const noexcept;
    [[nodiscard]] std::uint64_t hashes_verified() const noexcept { return hashes_verified_.load(); }
    [[nodiscard]] std::uint64_t bookkeeping_bytes() const noexcept;
    [[nodiscard]] std::uint64_t unmapped_pages() const noexcept { return unmapped_.load(); }
    // Called by the thread that made the count whole (placed the last missing page, or dropped
    // it). Again if the count dropped (a discard) and became whole once more.
    void on_complete(std::function<void()> callback) { on_complete_ = std::move(callback); }
    // A live source's precopy, while the guest has not run: a page already present gets the
    // newer copy written over it (the source sends a page again only when it was written
    // after it was sent). Asked per run; never once the guest may run.
    void replace_while(std::function<bool()> precopy) { replacing_ = std::move(precopy); }
    [[nodiscard]] std::uint64_t replaced_pages() const noexcept { return replaced_.load(); }

  private:
    std::expected<void, transport::Failure> place_missing(const wire::PagesView& run, Path path);
    // Pages of a run expanded from a compressed one: its zero pages as zero pages (no memory
    // of their own), the others copied.
    std::expected<void, transport::Failure> place_mixed(std::uint32_t region, std::uint64_t first,
                                                        std::uint64_t count, const std::byte* data,
                                                        Path path);
    std::expected<void, transport::Failure> place_span(std::uint32_t region, std::uint64_t first,
                                                       std::uint64_t count, const std::byte* data,
                                                       bool zero, Path path);
    void placed(std::uint32_t region, std::uint64_t first, std::uint64_t count, bool zero,
                Path path);
    // Counts pages newly marked present; the one that makes the count whole calls on_complete.
    void add_present(std::uint64_t pages);
    // Precopy: the newer copy over a present page (the guest is not running).
    void replace(std::uint32_t region, std::uint64_t page, const std::byte* data);

    const uffd::UserfaultFd& uffd_;
    std::vector<GuestRegion> regions_;
    const GuestAddresses& addresses_;
    FaultWaits& waits_;
    bool verify_hashes_;
    std::vector<PageBitmap> present_;
    std::vector<PageBitmap> requested_;
    std::uint64_t total_ = 0;
    std::vector<std::byte> zeros_;  // the source of zero runs where ZEROPAGE is not allowed
    std::function<void()> on_complete_;
    std::function<bool()> replacing_;
    std::shared_mutex* events_ = nullptr;

    std::atomic<std::uint64_t> present_count_{0};
    std::atomic<std::uint64_t> urgent_{0};
    std::atomic<std::uint64_t> background_{0};
    std::atomic<std::uint64_t> zero_{0};
    std::atomic<std::uint64_t> duplicate_{0};
    std::atomic<std::uint64_t> hashes_verified_{0};
    std::atomic<std::uint64_t> local_{0};
    std::atomic<std::uint64_t> unmapped_{0};
    std::atomic<std::uint64_t> replaced_{0};
};

}  // namespace uffdm::migration
