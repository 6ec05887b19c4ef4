// conversions.hpp — Public API values to and from the parts below (security, timeouts, errors).
#pragma once

#include <uffdm/uffdm.hpp>

#include <memory>
#include <optional>

#include "migration/report.hpp"
#include "migration/synthetic.hpp"
#include "transport/auth.hpp"
#include "transport/data_path.hpp"
#include "transport/tls.hpp"
#include "transport/traffic_class.hpp"

namespace uffdm::api {

using migration::to_error;

// The token and TLS context one side needs, owned for as long as the side runs.
struct Credentials {
    std::optional<transport::Secret> secret;
    std::shared_ptr<transport::TlsContext> tls;

    [[nodiscard]] const transport::Secret* secret_or_null() const noexcept {
        return secret ? &*secret : nullptr;
    }
};

[[nodiscard]] std::expected<Credentials, Error> load_credentials(const Security& security,
                                                                 transport::TlsContext::Side side);

[[nodiscard]] transport::LivenessOptions to_liveness(const Timeouts& timeouts);
[[nodiscard]] transport::Backend to_backend(DataPathBackend backend);
[[nodiscard]] migration::SyntheticSpec to_spec(const SyntheticGuest& guest);
[[nodiscard]] transport::TrafficMarking to_marking(const TrafficMarking& marking);
// DestinationOptions::placement_threads: -1 is one per core this process may use beyond two
// (the loops'), at most four: none on two cores.
[[nodiscard]] std::size_t placement_threads(int wanted);
// StreamCompression::threads: -1 is one per core this process may use beyond the first (the
// bulk loop's), at most three.
[[nodiscard]] std::size_t compression_threads(int wanted);

}  // namespace uffdm::api
