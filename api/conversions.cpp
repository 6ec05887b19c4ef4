// conversions.cpp — Loading token files and TLS contexts; mapping options and summaries.
#include "api/conversions.hpp"

#include <sched.h>

#include <algorithm>

namespace uffdm::api {

namespace {

int usable_cores() {
    cpu_set_t cpus;
    CPU_ZERO(&cpus);
    return ::sched_getaffinity(0, sizeof cpus, &cpus) == 0 ? CPU_COUNT(&cpus) : 1;
}

}  // namespace

std::size_t compression_threads(int wanted) {
    if (wanted >= 0) {
        return static_cast<std::size_t>(wanted);
    }
    // They work only while the stream is compressed, when the link, not the CPU, is the
    // bottleneck: the cores beside the bulk loop are then idle enough to help it.
    return static_cast<std::size_t>(std::clamp(usable_cores() - 1, 0, 3));
}

std::size_t placement_threads(int wanted) {
    if (wanted >= 0) {
        return static_cast<std::size_t>(wanted);
    }
    int usable = usable_cores();
    // Two cores are taken by the bulk loop and whoever sends (or the vCPUs); on two cores a
    // third busy thread only adds hand-offs (BENCHMARKS.md, "Placement pipeline").
    return static_cast<std::size_t>(std::clamp(usable - 2, 0, 4));
}

std::expected<Credentials, Error> load_credentials(const Security& security,
                                                   transport::TlsContext::Side side) {
    Credentials credentials;
    if (!security.token_file.empty()) {
        auto secret = transport::Secret::from_token_file(security.token_file);
        if (!secret) {
            return std::unexpected(to_error(secret.error()));
        }
        credentials.secret.emplace(std::move(*secret));
    }
    bool tls = !security.tls_certificate.empty() || !security.tls_private_key.empty() ||
               !security.tls_ca.empty();
    if (tls) {
        auto context =
            transport::TlsContext::create(side, {.certificate = security.tls_certificate,
                                                 .private_key = security.tls_private_key,
                                                 .trusted_ca = security.tls_ca,
                                                 .server_name = security.tls_server_name});
        if (!context) {
            return std::unexpected(to_error(context.error()));
        }
        credentials.tls = std::move(*context);
    }
    return credentials;
}

transport::LivenessOptions to_liveness(const Timeouts& timeouts) {
    transport::LivenessOptions liveness;
    liveness.handshake_timeout = timeouts.handshake;
    liveness.stall_timeout = timeouts.stall;
    liveness.idle_timeout = timeouts.idle;
    // A healthy idle connection must never reach the idle timeout: heartbeat well within it.
    if (timeouts.idle.count() > 0) {
        liveness.heartbeat_interval =
            std::min(liveness.heartbeat_interval,
                     std::max(timeouts.idle / 4, std::chrono::milliseconds(10)));
    }
    return liveness;
}

transport::Backend to_backend(DataPathBackend backend) {
    switch (backend) {
        case DataPathBackend::IoUring:
            return transport::Backend::IoUring;
        case DataPathBackend::Asio:
            return transport::Backend::Asio;
        case DataPathBackend::Auto:
            break;
    }
    return transport::Backend::Auto;
}

migration::SyntheticSpec to_spec(const SyntheticGuest& g) {
    return {g.size,
            g.page_size,
            g.regions,
            g.seed,
            g.zero_percent,
            g.repeat_percent,
            static_cast<migration::SyntheticContent>(g.content)};
}

transport::TrafficMarking to_marking(const TrafficMarking& m) {
    transport::TrafficMarking out;
    out.enabled = m.enabled;
    out.urgent_dscp = m.urgent_dscp;
    out.bulk_dscp = m.bulk_dscp;
    out.bulk_unsent_bytes = m.bulk_unsent_bytes;
    return out;
}

}  // namespace uffdm::api
