// request_queue.hpp — The destination's REQUESTs to the source: queued once per page, merged.
#pragma once

#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <vector>

#include "migration/placer.hpp"
#include "migration/wire.hpp"

namespace uffdm::migration {

// Every request the destination makes goes through here: a fault on a missing page, every
// page still wanted after a RESUME, every page still missing when the stream has ended.
// A page is requested once (the placer's requested bitmap says so); consecutive pages share one
// REQUEST, up to a frame's worth.
// Thread-safe: the fault thread and both data path loops use it.
class RequestQueue {
  public:
    RequestQueue(Placer& placer, const wire::Layout& layout) : placer_(placer), layout_(layout) {}

    // A thread waits for `page`: true when this queued its REQUEST (the first wait for it).
    bool request(std::uint32_t region, std::uint64_t page);
    // Pages missing again (the guest discarded them): asked for once more, whatever was asked
    // before. True when any was queued.
    bool request_again(std::uint32_t region, const std::vector<std::uint64_t>& pages);
    // Every page missing and never requested (the stream has ended: nothing else will bring
    // it). True when any was queued.
    bool request_missing();
    // A new session has resumed: the queue is rebuilt from the bitmaps, every page requested
    // and not present, whether its REQUEST was lost with the old session or queued in the
    // break. True when any was.
    bool request_again();
    // The next REQUEST to send: pages that arrived while it waited are left out of its front.
    [[nodiscard]] std::optional<wire::Request> next();
    // The first page of an answer that was never asked for, if any.
    [[nodiscard]] std::optional<std::uint64_t> first_unrequested(const wire::PagesView& run) const;
    // REQUESTs handed to the urgent connection so far.
    [[nodiscard]] std::uint64_t sent() const;

  private:
    // Appends one page, growing the last request when it continues it. Holds mutex_.
    void push(std::uint32_t region, std::uint64_t page);

    Placer& placer_;
    const wire::Layout& layout_;
    mutable std::mutex mutex_;  // guards requests_ and sent_
    std::deque<wire::Request> requests_;
    std::uint64_t sent_ = 0;
};

}  // namespace uffdm::migration
