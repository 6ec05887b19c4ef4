// destination.cpp — uffdm::Destination: the privilege gate, capabilities, then a FaultServer.
#include <uffdm/uffdm.hpp>

#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>

#include "api/conversions.hpp"
#include "migration/fault_server.hpp"
#include "migration/layout_probe.hpp"
#include "uffd/capabilities.hpp"
#include "uffd/privilege_probe.hpp"

namespace uffdm {

struct Destination::Impl {
    api::Credentials credentials;
    std::unique_ptr<migration::FaultServer> server;
    std::string grant;
    std::function<void(const DestinationStats&)> on_complete;
    // With on_complete, a watcher waits for the end and keeps the stats for wait().
    std::thread watcher;
    std::mutex mutex;  // guards result; ended says it was set
    std::condition_variable ended;
    std::optional<DestinationStats> result;

    DestinationStats finish() {
        DestinationStats stats = server->wait();
        stats.grant = grant;
        return stats;
    }
    ~Impl() {
        if (watcher.joinable()) {
            server->stop();
            watcher.join();
        }
    }
};

namespace {

// What the regions need from the kernel: MISSING faults on shmem and hugetlbfs are features of
// their own. THREAD_ID names the faulting thread in the report; POISON lets a failed migration
// give missing pages a memory error instead of a hang.
struct WantedFeatures {
    uffd::FeatureSet required;
    // EVENT_REMOVE/UNMAP/REMAP tell the fault thread that guest memory was discarded, unmapped
    // or moved (optional: a handed-over userfaultfd may lack them; then a fault on a page that
    // went is still served, and a placement into memory that moved fails the migration).
    uffd::FeatureSet optional{uffd::Feature::ThreadId, uffd::Feature::Poison,
                              uffd::Feature::EventRemove, uffd::Feature::EventUnmap,
                              uffd::Feature::EventRemap};
};

std::expected<WantedFeatures, Error> features_for(const std::vector<DestinationRegion>& regions) {
    WantedFeatures wanted;
    for (const auto& r : regions) {
        switch (r.kind) {
            case MemoryKind::Shmem:
                wanted.required = wanted.required | uffd::FeatureSet{uffd::Feature::MissingShmem};
                break;
            case MemoryKind::Hugetlb:
                wanted.required =
                    wanted.required | uffd::FeatureSet{uffd::Feature::MissingHugetlbfs};
                break;
            case MemoryKind::Anonymous:
                break;
            case MemoryKind::Invalid:
                return std::unexpected(Error{make_error_code(Errc::InvalidArgument),
                                             "a guest region has no memory kind"});
        }
    }
    return wanted;
}

std::expected<std::pair<uffd::UserfaultFd, std::string>, Error> obtain_userfaultfd(
    const DestinationOptions& options, const WantedFeatures& wanted) {
    if (options.userfaultfd >= 0 && uffd::UserfaultFd::is_device(options.userfaultfd)) {
        // The helper's open /dev/userfaultfd: make this process's own userfaultfd from it.
        uffd::UniqueFd device(options.userfaultfd);
        auto made = uffd::UserfaultFd::from_device(device, wanted.required, wanted.optional);
        if (!made) {
            return std::unexpected(Error{made.error(),
                                         "creating a userfaultfd from the device "
                                         "handed over: " +
                                             made.error().message()});
        }
        return std::pair{std::move(*made), std::string("device-node (handed over)")};
    }
    if (options.userfaultfd >= 0) {
        auto adopted = uffd::UserfaultFd::adopt(uffd::UniqueFd(options.userfaultfd),
                                                wanted.required, wanted.optional);
        if (!adopted) {
            return std::unexpected(Error{adopted.error(), "the userfaultfd handed over (fd " +
                                                              std::to_string(options.userfaultfd) +
                                                              "): " + adopted.error().message()});
        }
        if (options.require_kernel_faults && adopted->user_mode_only()) {
            return std::unexpected(
                Error{make_error_code(Errc::PermissionDenied),
                      "the userfaultfd handed over serves user-mode faults only"});
        }
        return std::pair{std::move(*adopted), std::string("handed-over")};
    }
    auto opened = uffd::open_through_gate(options.require_kernel_faults, wanted.required,
                                          wanted.optional, options.device_path);
    if (!opened) {
        return std::unexpected(Error{opened.error().code, opened.error().message});
    }
    return std::pair{std::move(opened->uffd), std::string(uffd::to_string(opened->decision.grant))};
}

}  // namespace

Destination::Destination(std::unique_ptr<Impl> impl) noexcept : impl_(std::move(impl)) {}
Destination::Destination(Destination&&) noexcept = default;
Destination& Destination::operator=(Destination&&) noexcept = default;
Destination::~Destination() = default;

std::expected<Destination, Error> Destination::create(std::vector<DestinationRegion> regions,
                                                      DestinationOptions options) {
    auto wanted = features_for(regions);
    if (!wanted) {
        return std::unexpected(wanted.error());
    }
    auto endpoint = transport::parse_endpoint(options.connect);
    if (!endpoint) {
        return std::unexpected(api::to_error(endpoint.error()));
    }
    auto credentials = api::load_credentials(options.security, transport::TlsContext::Side::Client);
    if (!credentials) {
        return std::unexpected(credentials.error());
    }
    auto uffd = obtain_userfaultfd(options, *wanted);
    if (!uffd) {
        return std::unexpected(uffd.error());
    }
    if (options.drop_capabilities) {
        // The descriptor is open: nothing else this process does needs privilege.
        if (auto dropped = uffd::drop_all_capabilities(); !dropped) {
            return std::unexpected(
                Error{dropped.error(), "dropping capabilities: " + dropped.error().message()});
        }
    }
    std::vector<migration::GuestRegion> guest;
    for (const auto& r : regions) {
        guest.push_back({static_cast<std::byte*>(r.address), r.length, r.page_size, r.kind,
                         r.kind != MemoryKind::Hugetlb});
    }
    auto impl = std::make_unique<Impl>();
    impl->credentials = std::move(*credentials);
    impl->grant = uffd->second;
    impl->on_complete = std::move(options.on_complete);
    migration::FaultServerOptions server_options{
        .source = *endpoint,
        .secret = impl->credentials.secret_or_null(),
        .tls = impl->credentials.tls,
        .liveness = api::to_liveness(options.timeouts),
        .backend = api::to_backend(options.data_path),
        .bulk_channels = options.bulk_channels,
        .verify_hashes = options.verify,
        .hold_stream = options.hold_stream,
        .reconnect_timeout = options.reconnect_timeout,
        .poison_on_failure = options.poison_on_failure,
        .discarded_pages_read_zero = options.discarded_pages_read_zero,
        .accept_compression = options.accept_compression,
        .marking = api::to_marking(options.marking),
        .on_progress = {},
        .on_pause = options.on_pause,
        .on_resume = options.on_resume};
    server_options.placement_threads = api::placement_threads(options.placement_threads);
    if (options.on_progress) {
        server_options.on_progress = [callback = options.on_progress](
                                         const migration::DestinationProgress& p) { callback(p); };
    }
    auto server = migration::FaultServer::create(std::move(uffd->first), std::move(guest),
                                                 std::move(server_options));
    if (!server) {
        return std::unexpected(api::to_error(server.error()));
    }
    impl->server = std::move(*server);
    return Destination(std::move(impl));
}

std::expected<void, Error> Destination::start() {
    if (auto started = impl_->server->start(); !started) {
        return std::unexpected(api::to_error(started.error()));
    }
    if (impl_->on_complete) {
        impl_->watcher = std::thread([impl = impl_.get()] {
            DestinationStats stats = impl->finish();
            impl->on_complete(stats);  // before wait() returns: what it records is there
            {
                std::lock_guard lock(impl->mutex);
                impl->result = stats;
            }
            impl->ended.notify_all();
        });
    }
    return {};
}

DestinationStats Destination::wait() {
    if (!impl_->watcher.joinable()) {
        return impl_->finish();
    }
    std::unique_lock lock(impl_->mutex);
    impl_->ended.wait(lock, [&] { return impl_->result.has_value(); });
    return *impl_->result;
}

void Destination::stop() {
    impl_->server->stop();
}

std::expected<void, Error> Destination::wait_until_runnable(std::chrono::milliseconds timeout) {
    if (impl_->server->wait_runnable(timeout)) {
        return {};
    }
    return std::unexpected(
        Error{make_error_code(Errc::TimedOut), "the guest may not run yet: no switchover within " +
                                                   std::to_string(timeout.count()) +
                                                   " ms, or the migration "
                                                   "failed (wait() says why)"});
}

void Destination::set_stream_held(bool held) {
    impl_->server->hold_stream(held);
}

DestinationProgress Destination::progress() const {
    return impl_->server->progress();
}

std::string Destination::grant() const {
    return impl_->grant;
}

std::expected<std::vector<RegionLayout>, Error> probe_source(const std::string& connect,
                                                             const Security& security,
                                                             const Timeouts& timeouts) {
    auto endpoint = transport::parse_endpoint(connect);
    if (!endpoint) {
        return std::unexpected(api::to_error(endpoint.error()));
    }
    auto credentials = api::load_credentials(security, transport::TlsContext::Side::Client);
    if (!credentials) {
        return std::unexpected(credentials.error());
    }
    auto layout = migration::probe_layout({.endpoint = *endpoint,
                                           .secret = credentials->secret_or_null(),
                                           .tls = credentials->tls,
                                           .bulk_channels = 0,
                                           .liveness = api::to_liveness(timeouts)});
    if (!layout) {
        return std::unexpected(api::to_error(layout.error()));
    }
    std::vector<RegionLayout> regions;
    for (const auto& r : layout->regions) {
        regions.push_back({r.length, r.page_size});
    }
    return regions;
}

}  // namespace uffdm
