// source.cpp — uffdm::Source over migration::PageServer.
#include <uffdm/uffdm.hpp>

#include "api/conversions.hpp"
#include "migration/page_server.hpp"

namespace uffdm {

struct Source::Impl {
    api::Credentials credentials;
    migration::GuestMemory memory;
    std::unique_ptr<migration::PageServer> server;
};

Source::Source(std::unique_ptr<Impl> impl) noexcept : impl_(std::move(impl)) {}
Source::Source(Source&&) noexcept = default;
Source& Source::operator=(Source&&) noexcept = default;
Source::~Source() = default;

template <typename Memory>
std::expected<Source, Error> Source::from_memory(Memory memory, SourceOptions options) {
    auto impl = std::make_unique<Impl>(Impl{{}, std::move(memory), nullptr});
    auto credentials = api::load_credentials(options.security, transport::TlsContext::Side::Server);
    if (!credentials) {
        return std::unexpected(credentials.error());
    }
    impl->credentials = std::move(*credentials);
    if (options.security.unix_socket_mode > 0777) {
        return std::unexpected(api::to_error(transport::failure(
            Errc::InvalidArgument, "unix socket mode " +
                                       std::to_string(options.security.unix_socket_mode) +
                                       " is not a permission mode (0 to 0777)")));
    }
    if (options.marking.urgent_dscp > 63 || options.marking.bulk_dscp > 63) {
        return std::unexpected(api::to_error(transport::failure(
            Errc::InvalidArgument, "a DSCP value is 0 to 63 (urgent " +
                                       std::to_string(options.marking.urgent_dscp) + ", bulk " +
                                       std::to_string(options.marking.bulk_dscp) + ")")));
    }
    if (options.compression.codec == Compression::Zstd &&
        (options.compression.zstd_level < -7 || options.compression.zstd_level > 19)) {
        return std::unexpected(api::to_error(transport::failure(
            Errc::InvalidArgument, "zstd level " + std::to_string(options.compression.zstd_level) +
                                       " is out of range (-7 to 19)")));
    }
    if (options.compression.threads < -1 || options.compression.threads > 16) {
        return std::unexpected(api::to_error(transport::failure(
            Errc::InvalidArgument, "compression threads " +
                                       std::to_string(options.compression.threads) +
                                       " is out of range (-1 for one per spare core, 0 to 16)")));
    }
    auto endpoint = transport::parse_endpoint(options.listen);
    if (!endpoint) {
        return std::unexpected(api::to_error(endpoint.error()));
    }
    migration::PageServerOptions server_options{
        .listen = *endpoint,
        .secret = impl->credentials.secret_or_null(),
        .tls = impl->credentials.tls,
        .insecure = options.security.insecure,
        .unix_mode = static_cast<mode_t>(options.security.unix_socket_mode),
        .allowed_uids = {options.security.allowed_uids.begin(),
                         options.security.allowed_uids.end()},
        .liveness = api::to_liveness(options.timeouts),
        .backend = api::to_backend(options.data_path),
        .bulk_run_bytes = options.bulk_run_bytes,
        .max_bulk_channels = static_cast<std::uint8_t>(transport::kMaxBulkChannels),
        .reconnect_timeout = options.reconnect_timeout,
        .on_progress = options.on_progress,
        .live = {.enabled = options.live.enabled,
                 .max_rounds = options.live.max_rounds,
                 .downtime_budget = options.live.downtime_budget,
                 .kinds = options.live.kinds,
                 .dirty_log = options.live.dirty_log,
                 .pause_guest = options.live.pause_guest,
                 .resume_guest = options.live.resume_guest,
                 .on_round = options.live.on_round},
        .compression = {.codec = static_cast<migration::Codec>(options.compression.codec),
                        .zstd_level = options.compression.zstd_level,
                        .answers = options.compression.answers,
                        .threads = api::compression_threads(options.compression.threads)},
        .marking = api::to_marking(options.marking),
        .max_bandwidth = options.max_bandwidth};

    if (options.on_progress) {
        server_options.on_progress = [callback =
                                          options.on_progress](const migration::SourceProgress& p) {
            callback(
                SourceProgress{p.pages_total, p.pages_sent, p.requests, p.bytes_sent, p.connected});
        };
    }
    auto server = migration::PageServer::open(impl->memory, std::move(server_options));
    if (!server) {
        return std::unexpected(api::to_error(server.error()));
    }
    impl->server = std::move(*server);
    return Source(std::move(impl));
}

std::expected<Source, Error> Source::create(
    const std::vector<std::pair<const void*, std::size_t>>& regions, std::size_t page_size,
    SourceOptions options) {
    std::vector<std::span<const std::byte>> spans;
    for (const auto& [address, length] : regions) {
        spans.emplace_back(static_cast<const std::byte*>(address), length);
    }
    auto memory = migration::GuestMemory::external(spans, page_size);
    if (!memory) {
        return std::unexpected(api::to_error(memory.error()));
    }
    return from_memory(std::move(*memory), std::move(options));
}

namespace {

std::expected<void, Error> not_live(const SourceOptions& options) {
    if (options.live.enabled) {
        return std::unexpected(Error{make_error_code(Errc::InvalidArgument),
                                     "a live migration serves the running guest's own memory "
                                     "(Source::create), not a synthetic guest or an image"});
    }
    return {};
}

}  // namespace

std::expected<Source, Error> Source::from_image(const std::string& path, std::size_t page_size,
                                                SourceOptions options) {
    if (auto ok = not_live(options); !ok) {
        return std::unexpected(ok.error());
    }
    auto memory = migration::GuestMemory::image(path, page_size);
    if (!memory) {
        return std::unexpected(api::to_error(memory.error()));
    }
    return from_memory(std::move(*memory), std::move(options));
}

std::expected<Source, Error> Source::synthetic(const SyntheticGuest& guest, SourceOptions options) {
    if (auto ok = not_live(options); !ok) {
        return std::unexpected(ok.error());
    }
    auto memory = migration::GuestMemory::synthetic(api::to_spec(guest));
    if (!memory) {
        return std::unexpected(api::to_error(memory.error()));
    }
    return from_memory(std::move(*memory), std::move(options));
}

std::string Source::endpoint() const {
    return impl_->server->local_endpoint().to_string();
}

SourceStats Source::run() {
    return impl_->server->run();
}

void Source::stop() {
    impl_->server->stop();
}

void Source::switchover_now() {
    impl_->server->switchover_now();
}

SourceProgress Source::progress() const {
    return impl_->server->progress();
}

}  // namespace uffdm
