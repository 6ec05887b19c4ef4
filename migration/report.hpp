// report.hpp — What a migration reports: the public progress and stats types, and pages by path.
#pragma once

#include <uffdm/report.hpp>

#include <cstdint>

#include "transport/failure.hpp"

namespace uffdm::migration {

// Progress and reports are the public API's value types (include/uffdm), filled here directly.
using uffdm::DestinationProgress;
using uffdm::DestinationStats;
using uffdm::LatencyStats;
using uffdm::Pause;
using uffdm::SourceProgress;
using uffdm::SourceStats;

// Pages by the path that made them present on the destination.
struct PagesByPath {
    std::uint64_t urgent = 0;      // answers to fault requests
    std::uint64_t background = 0;  // the bulk stream
    std::uint64_t zero = 0;        // of those, placed as zero pages (ZEROPAGE, no data sent)
    std::uint64_t duplicate = 0;   // arrived when already present (counted, not placed again)
};

[[nodiscard]] inline Error to_error(const transport::Failure& failure) {
    return Error{failure.code, failure.detail};
}

}  // namespace uffdm::migration
