// layout_probe.hpp — Asks a source for its guest layout without starting a migration.
#pragma once

#include <expected>

#include "migration/wire.hpp"
#include "transport/session.hpp"

namespace uffdm::migration {

// Connects and authenticates as a destination would, reads the LAYOUT the source sends first,
// and hangs up before START: nothing is sent, and the source waits for the real session. A
// destination that has no guest memory yet (uffd-migrate receive) learns what to map this way.
[[nodiscard]] std::expected<wire::Layout, transport::Failure> probe_layout(
    const transport::SessionOptions& options);

}  // namespace uffdm::migration
