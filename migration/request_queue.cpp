// request_queue.cpp — Queueing, merging and re-asking the destination's REQUESTs.
#include "migration/request_queue.hpp"

#include <bit>

namespace uffdm::migration {

bool RequestQueue::request(std::uint32_t region, std::uint64_t page) {
    if (!placer_.requested(region).test_and_set(page)) {
        return false;  // asked for already: only waited for
    }
    std::lock_guard lock(mutex_);
    push(region, page);
    return true;
}

bool RequestQueue::request_again(std::uint32_t region, const std::vector<std::uint64_t>& pages) {
    std::lock_guard lock(mutex_);
    for (std::uint64_t page : pages) {
        (void)placer_.requested(region).test_and_set(page);  // an answer to it is asked for
        push(region, page);
    }
    return !pages.empty();
}

// The stream has ended on every bulk connection, so every page it sent is here or on its way on
// the urgent connection. Whatever is still missing and unrequested would otherwise wait for a
// fault: ask for it. Normally nothing is; it is the safety net under recovery.
bool RequestQueue::request_missing() {
    bool any = false;
    for (std::uint32_t r = 0; r < layout_.regions.size(); ++r) {
        PageBitmap& present = placer_.present(r);
        PageBitmap& requested = placer_.requested(r);
        for (std::uint64_t p = present.next_clear(0); p < present.size();
             p = present.next_clear(p + 1)) {
            if (requested.test_and_set(p)) {
                std::lock_guard lock(mutex_);
                push(r, p);
                any = true;
            }
        }
    }
    return any;
}

bool RequestQueue::request_again() {
    {
        std::lock_guard lock(mutex_);
        requests_.clear();
    }
    bool any = false;
    for (std::uint32_t r = 0; r < layout_.regions.size(); ++r) {
        PageBitmap& requested = placer_.requested(r);
        PageBitmap& present = placer_.present(r);
        std::lock_guard lock(mutex_);
        for (std::size_t w = 0; w < requested.words(); ++w) {
            std::uint64_t wanted = requested.word(w) & ~present.word(w);
            while (wanted != 0) {
                auto bit = static_cast<std::uint64_t>(std::countr_zero(wanted));
                wanted &= wanted - 1;
                push(r, w * 64 + bit);
                any = true;
            }
        }
    }
    return any;
}

std::optional<wire::Request> RequestQueue::next() {
    std::lock_guard lock(mutex_);
    while (!requests_.empty()) {
        wire::Request out = requests_.front();
        requests_.pop_front();
        // The stream (or an earlier answer) brought these while the request waited.
        const PageBitmap& present = placer_.present(out.region);
        while (out.count > 0 && present.test(out.first_page)) {
            ++out.first_page;
            --out.count;
        }
        if (out.count == 0) {
            continue;
        }
        // Faults on consecutive pages (a sequential scan) share one request.
        std::uint64_t limit = wire::max_pages_per_frame(layout_.regions[out.region].page_size);
        while (!requests_.empty() && requests_.front().region == out.region &&
               requests_.front().first_page == out.first_page + out.count &&
               out.count + requests_.front().count <= limit) {
            out.count += requests_.front().count;
            requests_.pop_front();
        }
        ++sent_;
        return out;
    }
    return std::nullopt;
}

std::optional<std::uint64_t> RequestQueue::first_unrequested(const wire::PagesView& run) const {
    // Marked before its REQUEST was queued, and never cleared: an honest answer always finds
    // its bits set.
    const PageBitmap& requested = placer_.requested(run.header.region);
    for (std::uint64_t p = run.header.first_page; p < run.header.first_page + run.header.count;
         ++p) {
        if (!requested.test(p)) {
            return p;
        }
    }
    return std::nullopt;
}

std::uint64_t RequestQueue::sent() const {
    std::lock_guard lock(mutex_);
    return sent_;
}

void RequestQueue::push(std::uint32_t region, std::uint64_t page) {
    std::uint64_t limit = wire::max_pages_per_frame(layout_.regions[region].page_size);
    if (!requests_.empty() && requests_.back().region == region &&
        requests_.back().first_page + requests_.back().count == page &&
        requests_.back().count < limit) {
        ++requests_.back().count;
        return;
    }
    requests_.push_back({region, 1, page});
}

}  // namespace uffdm::migration
