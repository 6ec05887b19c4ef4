// report.hpp — What a migration reports while it runs and when it ends: progress and stats.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <uffdm/error.hpp>

// Plain value types, shared by the public API (uffdm.hpp) and the library's parts, which fill
// them directly; nothing here needs the API's classes.
namespace uffdm {

struct LatencyStats {
    std::uint64_t count = 0;
    double mean_us = 0;
    double p50_us = 0;
    double p90_us = 0;
    double p99_us = 0;
    double p999_us = 0;
    double max_us = 0;
};

// ---- Source -------------------------------------------------------------------------------

struct SourceProgress {
    std::uint64_t pages_total = 0;
    std::uint64_t pages_sent = 0;
    std::uint64_t requests = 0;
    std::uint64_t bytes_sent = 0;
    bool connected = false;
};

struct SourceStats {
    bool ok = false;
    Error error;
    double seconds = 0;
    std::uint64_t pages_total = 0;
    std::uint64_t pages_streamed = 0;
    std::uint64_t pages_answered = 0;
    std::uint64_t pages_resent = 0;
    std::uint64_t zero_pages = 0;
    std::uint64_t requests = 0;
    std::uint64_t bytes_sent = 0;
    std::uint64_t bulk_channels = 0;
    std::uint64_t pauses = 0;   // sessions that broke and were waited for
    std::uint64_t resumes = 0;  // destinations that came back with RESUME
};

// ---- Destination --------------------------------------------------------------------------

// A break in the connection to the source, and what became of it.
struct Pause {
    double at_seconds = 0;  // since start()
    double seconds = 0;     // until the new session resumed (or until the end)
    std::string reason;     // what broke
    bool resumed = false;
};

struct DestinationProgress {
    std::uint64_t pages_total = 0;
    std::uint64_t pages_present = 0;
    std::uint64_t bytes_received = 0;
    std::uint64_t faults = 0;
    bool connected = false;
    double seconds = 0;
    bool paused = false;  // the session broke; reconnecting
    std::uint64_t pauses = 0;
};

struct DestinationStats {
    bool ok = false;
    Error error;
    double seconds = 0;
    std::uint64_t pages_total = 0;
    std::uint64_t bytes_total = 0;
    std::uint64_t pages_urgent = 0;
    std::uint64_t pages_background = 0;
    std::uint64_t pages_zero = 0;
    std::uint64_t pages_duplicate = 0;
    // Pages the guest discarded while present (each then fetched again, or zero-filled: see
    // DestinationOptions::discarded_pages_read_zero), and pages unmapped before they arrived.
    std::uint64_t pages_discarded = 0;
    std::uint64_t pages_unmapped = 0;
    std::uint64_t faults = 0;
    std::uint64_t requests = 0;
    std::uint64_t bytes_received = 0;
    std::uint64_t hashes_verified = 0;
    std::uint64_t bookkeeping_bytes = 0;
    std::uint64_t fault_threads = 0;
    double max_thread_blocked_ms = 0;
    LatencyStats fault_latency;
    std::string data_path;  // how bytes moved, e.g. "io_uring (receive rings as fixed buffers)"
    std::string grant;      // how the userfaultfd was obtained (device-node, cap-sys-ptrace, ...)
    // Fault latency histogram: (bucket upper bound in ns, faults), for plots.
    std::vector<std::pair<double, std::uint64_t>> latency_buckets;
    std::vector<Pause> pauses;  // every break in the connection, in order
};

}  // namespace uffdm
