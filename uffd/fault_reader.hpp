// fault_reader.hpp — Drains userfaultfd messages in batches and decodes them into events.
#pragma once

#include <cstdint>
#include <expected>
#include <mutex>
#include <shared_mutex>
#include <span>
#include <system_error>
#include <variant>
#include <vector>

#include "uffd/event_fd.hpp"
#include "uffd/uapi.hpp"
#include "uffd/unique_fd.hpp"
#include "uffd/userfault_fd.hpp"

namespace uffdm::uffd {

// A thread touched a page that is missing (or write-protected, or minor-missing).
struct PageFault {
    std::uint64_t address = 0;  // exact with EXACT_ADDRESS, else page-aligned by the kernel
    bool write = false;
    bool write_protect = false;   // a write to a write-protected page
    bool minor = false;           // page cache has the page; the page table entry is missing
    std::uint32_t thread_id = 0;  // 0 unless the THREAD_ID feature was granted

    [[nodiscard]] std::uint64_t page(std::uint64_t page_size) const noexcept {
        return address & ~(page_size - 1);
    }
};

// The process forked; the child's registered ranges are reported on a new userfaultfd.
struct ForkEvent {
    UniqueFd child_uffd;
};

// mremap moved a registered range.
struct RemapEvent {
    std::uint64_t from = 0;
    std::uint64_t to = 0;
    std::uint64_t length = 0;
};

// madvise(MADV_DONTNEED/MADV_REMOVE) dropped pages: they are missing again. Faults queued
// before it for [start, end) may now need a fresh page.
struct RemoveEvent {
    std::uint64_t start = 0;
    std::uint64_t end = 0;
};

// munmap removed part of a registered range.
struct UnmapEvent {
    std::uint64_t start = 0;
    std::uint64_t end = 0;
};

// A message this build does not know (a newer kernel): reported, never silently dropped.
struct UnknownEvent {
    std::uint8_t event = 0;
};

using FaultEvent =
    std::variant<PageFault, ForkEvent, RemapEvent, RemoveEvent, UnmapEvent, UnknownEvent>;

// Decodes one kernel message. For FORK the new descriptor becomes owned by the event.
[[nodiscard]] FaultEvent decode(const uffd_msg& msg) noexcept;

// Reads from one userfaultfd until stopped. Not thread-safe: one reader per userfaultfd.
// The userfaultfd and the stop eventfd must outlive the reader.
class FaultReader {
  public:
    static constexpr std::size_t kDefaultBatch = 64;

    FaultReader(const UserfaultFd& uffd, const EventFd& stop, std::size_t batch = kDefaultBatch);
    // Also returns (nudged) when `nudge` is signalled, consuming it: the owner has something to
    // do between reads.
    FaultReader(const UserfaultFd& uffd, const EventFd& stop, const EventFd& nudge,
                std::size_t batch = kDefaultBatch);

    struct Batch {
        std::span<FaultEvent> events;  // valid until the next call to next()
        bool stopped = false;          // the stop eventfd was signalled (it stays signalled)
        bool timed_out = false;
        bool nudged = false;  // the nudge eventfd was signalled (and is consumed)
    };

    // Waits until at least one message is queued, the stop eventfd fires, or timeout_ms
    // passes (-1: no timeout), then drains up to the batch size in one read(2).
    [[nodiscard]] std::expected<Batch, std::error_code> next(int timeout_ms = -1);

    // From here on every read(2) takes `guard` exclusively first and holds it until the next
    // call or release_guard(): the batch is applied before anyone holding it shared goes on.
    void guard_reads(std::shared_mutex* guard) noexcept { guard_ = guard; }
    void release_guard() noexcept;
    // Messages read so far, and read(2) calls that returned at least one.
    [[nodiscard]] std::uint64_t messages_read() const noexcept { return messages_read_; }
    [[nodiscard]] std::uint64_t reads() const noexcept { return reads_; }

  private:
    const UserfaultFd& uffd_;
    const EventFd& stop_;
    const EventFd* nudge_ = nullptr;
    std::vector<uffd_msg> buffer_;
    std::vector<FaultEvent> events_;
    std::shared_mutex* guard_ = nullptr;
    std::unique_lock<std::shared_mutex> held_;
    std::uint64_t messages_read_ = 0;
    std::uint64_t reads_ = 0;
};

}  // namespace uffdm::uffd
