// placer.cpp — Sub-runs of missing pages, COPY / ZEROPAGE, EEXIST and EAGAIN, completion.
#include "migration/placer.hpp"

#include <sys/mman.h>

#include <cstring>
#include <thread>

#include "migration/page_hash.hpp"
#include "migration/zero_page.hpp"

namespace uffdm::migration {

namespace {

// EAGAIN: a REMOVE, UNMAP or REMAP event is queued and the kernel refuses placements until the
// fault thread has read it. ENOENT: it was read (the range moved or went) and the fault thread
// has yet to apply it to the addresses. Both pass within microseconds; this bounds a fault
// thread that stopped reading.
constexpr auto kRetryFor = std::chrono::seconds(5);

transport::Failure kernel_failure(const std::string& what, std::error_code code) {
    return transport::Failure{code, what + ": " + code.message()};
}

}  // namespace

Placer::Placer(const uffd::UserfaultFd& uffd, std::vector<GuestRegion> regions,
               const GuestAddresses& addresses, FaultWaits& waits, bool verify_hashes)
    : uffd_(uffd),
      regions_(std::move(regions)),
      addresses_(addresses),
      waits_(waits),
      verify_hashes_(verify_hashes) {
    std::uint64_t largest = 0;
    for (const auto& r : regions_) {
        present_.emplace_back(r.length / r.page_size);
        requested_.emplace_back(r.length / r.page_size);
        total_ += r.length / r.page_size;
        if (!r.zeropage_ioctl) {
            largest = std::max(largest, std::max(r.page_size, wire::kMaxRunBytes));
        }
    }
    zeros_.resize(largest);
}

void Placer::use_zeropage(std::uint32_t region, bool allowed) {
    GuestRegion& r = regions_[region];
    r.zeropage_ioctl = allowed;
    if (!allowed) {
        zeros_.resize(
            std::max<std::size_t>(zeros_.size(), std::max(r.page_size, wire::kMaxRunBytes)));
    }
}

std::expected<void, transport::Failure> Placer::place(const wire::PagesView& run, Path path) {
    const wire::PagesHeader& h = run.header;
    const GuestRegion& region = regions_[h.region];
    bool zero = h.encoding == wire::Encoding::Zero;
    if (!zero && verify_hashes_) {
        if (run.hashes.empty()) {
            return std::unexpected(transport::failure(
                Errc::ProtocolViolation, "the source sent raw pages without the hashes asked for"));
        }
        for (std::uint32_t i = 0; i < h.count; ++i) {
            auto page = run.data.subspan(i * region.page_size, region.page_size);
            if (page_hash(page) != run.hash(i)) {
                return std::unexpected(transport::failure(
                    Errc::ProtocolViolation,
                    "region " + std::to_string(h.region) + " page " +
                        std::to_string(h.first_page + i) +
                        ": content does not match its hash (corrupted or wrong page); not placed"));
            }
        }
        hashes_verified_.fetch_add(h.count, std::memory_order_relaxed);
    }
    if (events_ == nullptr) {
        return place_missing(run, path);
    }
    // Guarded: an event the fault thread must read first (EAGAIN) is waited for without the
    // lock, then the pages still missing are placed.
    auto since = Clock::now();
    for (;;) {
        std::expected<void, transport::Failure> placed;
        {
            std::shared_lock guard(*events_);
            placed = place_missing(run, path);
        }
        if (placed || placed.error().code != Errc::RetryLater || Clock::now() - since > kRetryFor) {
            return placed;
        }
        std::this_thread::yield();
    }
}

std::expected<void, transport::Failure> Placer::place_local(const wire::PagesView& run) {
    return place_missing(run, Path::Urgent);
}

std::expected<void, transport::Failure> Placer::place_missing(const wire::PagesView& run,
                                                              Path path) {
    const wire::PagesHeader& h = run.header;
    const GuestRegion& region = regions_[h.region];
    bool zero = h.encoding == wire::Encoding::Zero;
    // Sub-runs of pages still missing: present ones are duplicates (the other path won).
    PageBitmap& present = present_[h.region];
    bool replacing = replacing_ && replacing_();
    std::uint64_t i = 0;
    while (i < h.count) {
        if (present.test(h.first_page + i)) {
            if (replacing) {
                replace(h.region, h.first_page + i,
                        zero ? nullptr : run.data.data() + i * region.page_size);
            } else {
                duplicate_.fetch_add(1, std::memory_order_relaxed);
            }
            ++i;
            continue;
        }
        std::uint64_t start = i;
        while (i < h.count && !present.test(h.first_page + i)) {
            ++i;
        }
        const std::byte* data = zero ? nullptr : run.data.data() + start * region.page_size;
        if (auto ok = run.zeros_inside
                          ? place_mixed(h.region, h.first_page + start, i - start, data, path)
                          : place_span(h.region, h.first_page + start, i - start, data, zero, path);
            !ok) {
            return ok;
        }
    }
    return {};
}

std::expected<void, transport::Failure> Placer::place_mixed(std::uint32_t region,
                                                            std::uint64_t first,
                                                            std::uint64_t count,
                                                            const std::byte* data, Path path) {
    const std::uint64_t page_size = regions_[region].page_size;
    auto zero_at = [&](std::uint64_t i) { return all_zero({data + i * page_size, page_size}); };
    std::uint64_t i = 0;
    while (i < count) {
        std::uint64_t start = i;
        bool zero = zero_at(i);
        while (++i < count && zero_at(i) == zero) {
        }
        if (auto ok = place_span(region, first + start, i - start,
                                 zero ? nullptr : data + start * page_size, zero, path);
            !ok) {
            return ok;
        }
    }
    return {};
}

std::expected<void, transport::Failure> Placer::place_span(std::uint32_t region_index,
                                                           std::uint64_t first, std::uint64_t count,
                                                           const std::byte* data, bool zero,
                                                           Path path) {
    const GuestRegion& region = regions_[region_index];
    const std::uint64_t page_size = region.page_size;
    std::uint64_t done = 0;
    bool retrying = false;
    Clock::time_point retrying_since{};
    while (done < count) {
        auto where = addresses_.locate(region_index, first + done, count - done);
        if (!where || (retrying && present_[region_index].test(first + done))) {
            // Unmapped (nothing to place, nobody to wake), or marked present while we retried
            // (dropped by an UNMAP the fault thread applied, or placed by the other path).
            ++done;
            continue;
        }
        std::uint64_t dst = where->address;
        std::uint64_t len = where->pages * page_size;
        std::expected<std::uint64_t, std::error_code> result;
        if (zero && region.zeropage_ioctl) {
            result = uffd_.zeropage(dst, len);
        } else {
            const std::byte* src = zero ? zeros_.data() : data + done * page_size;
            len = zero ? std::min<std::uint64_t>(len, zeros_.size()) : len;
            result = uffd_.copy(dst, src, len);
        }
        if (result) {
            std::uint64_t pages = *result / page_size;
            placed(region_index, first + done, pages, zero, path);
            done += pages;
            retrying = false;
            continue;  // a short count: the next call says why that page stopped it
        }
        if (result.error() == Errc::AlreadyPresent) {
            // Placed by the other path between our bitmap check and the ioctl. A failed copy
            // wakes nobody, so wake whoever waits on it.
            (void)uffd_.wake(dst, page_size);
            if (present_[region_index].test_and_set(first + done)) {
                // The other path has not marked it yet: whoever marks a page counts it.
                add_present(1);
            }
            duplicate_.fetch_add(1, std::memory_order_relaxed);
            ++done;
            retrying = false;
            continue;
        }
        bool passing = result.error() == Errc::RetryLater || result.error() == Errc::NotRegistered;
        if (passing && events_ != nullptr && path != Path::Local) {
            // Guarded (place() holds the lock the fault thread needs to read the event).
            return std::unexpected(transport::failure(Errc::RetryLater, "an event is queued"));
        }
        auto now = Clock::now();
        if (passing && (!retrying || now - retrying_since < kRetryFor)) {
            retrying_since = retrying ? retrying_since : now;
            retrying = true;
            std::this_thread::yield();
            continue;
        }
        return std::unexpected(kernel_failure("placing region " + std::to_string(region_index) +
                                                  " pages " + std::to_string(first + done) + ".." +
                                                  std::to_string(first + count - 1),
                                              result.error()));
    }
    return {};
}

std::expected<void, transport::Failure> Placer::place_zeros(const GuestPages& run) {
    PageBitmap& present = present_[run.region];
    std::uint64_t i = 0;
    while (i < run.count) {
        if (present.test(run.first + i)) {
            ++i;
            continue;
        }
        std::uint64_t start = i;
        while (i < run.count && !present.test(run.first + i)) {
            ++i;
        }
        if (auto ok =
                place_span(run.region, run.first + start, i - start, nullptr, true, Path::Local);
            !ok) {
            return ok;
        }
    }
    return {};
}

std::vector<std::uint64_t> Placer::forget(const GuestPages& run) {
    std::vector<std::uint64_t> missing_again;
    PageBitmap& present = present_[run.region];
    for (std::uint64_t p = run.first; p < run.first + run.count; ++p) {
        if (present.test_and_clear(p)) {
            // Page by page, so that the count never lags the bits by more than the page a
            // concurrent placement may be marking right now. Reaching the whole count by this
            // subtraction calls no one: the fault thread, the one caller, checks afterwards.
            present_count_.fetch_sub(1, std::memory_order_acq_rel);
            missing_again.push_back(p);
        }
    }
    return missing_again;
}

void Placer::mark_zero(const GuestPages& run) {
    auto now = Clock::now();
    std::uint64_t newly = 0;
    for (std::uint64_t p = run.first; p < run.first + run.count; ++p) {
        if (present_[run.region].test_and_set(p)) {
            ++newly;
        }
        if (requested_[run.region].test(p)) {
            waits_.complete(run.region, p, now);
        }
    }
    local_.fetch_add(run.count, std::memory_order_relaxed);
    add_present(newly);
}

std::uint64_t Placer::drop(const GuestPages& run) {
    std::uint64_t newly = 0;
    PageBitmap& present = present_[run.region];
    for (std::uint64_t p = run.first; p < run.first + run.count; ++p) {
        if (present.test_and_set(p)) {
            ++newly;
        }
    }
    unmapped_.fetch_add(run.count, std::memory_order_relaxed);
    add_present(newly);
    return newly;
}

void Placer::placed(std::uint32_t region, std::uint64_t first, std::uint64_t count, bool zero,
                    Path path) {
    auto now = Clock::now();
    std::uint64_t newly = 0;
    for (std::uint64_t p = first; p < first + count; ++p) {
        if (present_[region].test_and_set(p)) {
            ++newly;
        }
        if (requested_[region].test(p)) {
            waits_.complete(region, p, now);
        }
    }
    (path == Path::Urgent       ? urgent_
     : path == Path::Background ? background_
                                : local_)
        .fetch_add(count, std::memory_order_relaxed);
    if (zero && path != Path::Local) {
        zero_.fetch_add(count, std::memory_order_relaxed);
    }
    add_present(newly);
}

void Placer::replace(std::uint32_t region, std::uint64_t page, const std::byte* data) {
    auto where = addresses_.locate(region, page, 1);
    if (!where) {
        return;  // unmapped since
    }
    std::uint64_t page_size = regions_[region].page_size;
    auto* to = reinterpret_cast<std::byte*>(where->address);
    if (data == nullptr) {
        std::memset(to, 0, page_size);
    } else {
        std::memcpy(to, data, page_size);
    }
    replaced_.fetch_add(1, std::memory_order_relaxed);
}

void Placer::add_present(std::uint64_t pages) {
    std::uint64_t before = present_count_.fetch_add(pages, std::memory_order_acq_rel);
    if (pages > 0 && before + pages == total_ && on_complete_) {
        on_complete_();
    }
}

PagesByPath Placer::pages() const noexcept {
    return {urgent_.load(), background_.load(), zero_.load(), duplicate_.load()};
}

std::uint64_t Placer::bookkeeping_bytes() const noexcept {
    std::uint64_t bytes = 0;
    for (std::size_t i = 0; i < present_.size(); ++i) {
        bytes += present_[i].bytes() + requested_[i].bytes();
    }
    return bytes;
}

}  // namespace uffdm::migration
