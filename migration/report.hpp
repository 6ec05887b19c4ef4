// report.hpp — What a migration reports, on each side: progress while it runs, a report at the end.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "migration/latency_histogram.hpp"
#include "transport/failure.hpp"

namespace uffdm::migration {

// Pages by the path that made them present on the destination.
struct PagesByPath {
    std::uint64_t urgent = 0;      // answers to fault requests
    std::uint64_t background = 0;  // the bulk stream
    std::uint64_t zero = 0;        // of those, placed as zero pages (ZEROPAGE, no data sent)
    std::uint64_t duplicate = 0;   // arrived when already present (counted, not placed again)
};

struct DestinationProgress {
    std::uint64_t pages_total = 0;
    std::uint64_t pages_present = 0;
    std::uint64_t bytes_received = 0;
    std::uint64_t faults = 0;
    bool connected = false;
    double seconds = 0;
};

struct DestinationReport {
    std::optional<transport::Failure> failure;  // empty: every page is present
    double seconds = 0;                         // registration until the last page was placed
    std::uint64_t pages_total = 0;
    std::uint64_t bytes_total = 0;  // guest memory size
    PagesByPath pages;
    std::uint64_t faults = 0;    // fault messages read
    std::uint64_t requests = 0;  // REQUEST messages sent (adjacent faults share one)
    std::uint64_t bytes_received = 0;
    LatencySummary fault_latency;      // fault read -> page placed, per fault
    std::uint64_t fault_threads = 0;   // distinct threads that faulted
    double max_thread_blocked_ms = 0;  // the most any one thread waited in total
    std::uint64_t hashes_verified = 0;
    std::uint64_t bookkeeping_bytes = 0;  // bitmaps: 2 bits per page
    std::string data_path;                // io_uring / asio, as the data path describes itself
    // Latency histogram buckets (upper bound ns, count) for plots.
    std::vector<std::pair<double, std::uint64_t>> latency_buckets;

    [[nodiscard]] bool ok() const noexcept { return !failure.has_value(); }
};

struct SourceProgress {
    std::uint64_t pages_total = 0;
    std::uint64_t pages_sent = 0;
    std::uint64_t requests = 0;
    std::uint64_t bytes_sent = 0;
    bool connected = false;
};

struct SourceReport {
    std::optional<transport::Failure> failure;
    double seconds = 0;  // the destination's session joined until DONE
    std::uint64_t pages_total = 0;
    std::uint64_t pages_streamed = 0;  // sent on bulk connections
    std::uint64_t pages_answered = 0;  // sent in answer to requests
    std::uint64_t pages_resent = 0;    // answers for pages already streamed (the destination asked)
    std::uint64_t zero_pages = 0;      // sent as zero runs
    std::uint64_t requests = 0;
    std::uint64_t bytes_sent = 0;
    std::uint64_t bulk_channels = 0;

    [[nodiscard]] bool ok() const noexcept { return !failure.has_value(); }
};

}  // namespace uffdm::migration
