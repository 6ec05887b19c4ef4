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

// How the source compressed its data runs (SourceOptions::compression).
struct CompressionReport {
    std::string mode = "off";  // off, lz4, zstd:LEVEL or auto, as asked
    std::string accepted;      // what the destination accepted: "lz4,zstd", or "" (none)
    std::uint64_t runs_compressed = 0;
    std::uint64_t runs_not_shrunk = 0;   // tried, and sent raw because they did not shrink
    std::uint64_t raw_bytes = 0;         // guest bytes of the runs sent compressed
    std::uint64_t compressed_bytes = 0;  // what those runs took on the wire
    double compress_seconds = 0;         // CPU time compressing (every try), all threads
    // auto: how often it switched between raw and lz4, and the state at the end.
    std::uint64_t auto_switches = 0;
    bool compressing_at_end = false;
    std::string auto_choice;    // auto: raw, lz4, zstd:-1 or zstd:1 at the end
    std::uint32_t threads = 0;  // helpers compressing beside each bulk loop
};

struct SourceProgress {
    std::uint64_t pages_total = 0;
    std::uint64_t pages_sent = 0;
    std::uint64_t requests = 0;
    std::uint64_t bytes_sent = 0;
    bool connected = false;
};

// One precopy round of a live source: what it sent, and what the guest wrote meanwhile (the
// next round's pages).
struct RoundReport {
    std::uint32_t round = 0;            // 0: every page once
    std::uint64_t pages = 0;            // sent in the round (stream and answers)
    std::uint64_t bytes = 0;            // on the wire, every connection
    double seconds = 0;                 // from its first page to the destination's ROUND_DONE
    std::uint64_t dirty_pages = 0;      // written during the round
    double dirty_pages_per_second = 0;  // the guest's write rate, as tracked
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
    CompressionReport compression;
    // The background stream's cap on the wire (SourceOptions::max_bandwidth), bytes per
    // second (0: none), and the time the stream waited for it.
    std::uint64_t max_bandwidth = 0;
    double capped_seconds = 0;
    // A live source (precopy rounds, then the switchover); empty and zero otherwise.
    bool live = false;
    std::vector<RoundReport> rounds;
    std::string switchover_reason;      // converged, not-shrinking, max-rounds, asked
    std::uint64_t pages_discarded = 0;  // written since sent when the guest paused: discarded there
    // The guest paused here until the destination said its guest runs (RUNNING): the
    // downtime, plus half a round trip.
    double downtime_seconds = 0;
    // A failed live migration: whether this guest may run here again. True only when the
    // destination cannot be running it (SWITCHOVER was never sent, or the destination came
    // back and said it had not applied it); the VMM was then told to resume it.
    bool guest_runnable_here = false;
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
    std::uint32_t placement_threads = 0;  // placing the stream beside the bulk loop (0: in it)
    // The placement chosen per memory kind from what the kernel allows on its registration,
    // e.g. "anonymous: UFFDIO_COPY from the receive ring, zero runs UFFDIO_ZEROPAGE".
    std::string placement;
    std::string grant;  // how the userfaultfd was obtained (device-node, cap-sys-ptrace, ...)
    // Fault latency histogram: (bucket upper bound in ns, faults), for plots.
    std::vector<std::pair<double, std::uint64_t>> latency_buckets;
    std::vector<Pause> pauses;  // every break in the connection, in order
    // From a live source: precopy rounds placed before the guest ran, copies that replaced an
    // earlier one, pages discarded at the switchover (written on the source after they were
    // sent), faults after it, and the time from SWITCHOVER to the guest being allowed to run.
    bool live_source = false;
    std::uint32_t precopy_rounds = 0;
    std::uint64_t pages_replaced = 0;
    std::uint64_t pages_discarded_at_switchover = 0;
    std::uint64_t faults_after_switchover = 0;
    double switchover_seconds = 0;
};

}  // namespace uffdm
