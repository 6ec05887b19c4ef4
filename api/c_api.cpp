// c_api.cpp — The C ABI (uffdm.h) over the C++ API: argument checks, errno mapping, no throws.
#include <uffdm/uffdm.h>
#include <uffdm/uffdm.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <new>
#include <string>

struct uffdm_destination {
    uffdm::Destination destination;
};

struct uffdm_firecracker {
    uffdm::FirecrackerHandler handler;
};

struct uffdm_source {
    uffdm::Source source;
    uffdm::SourceStats last;  // what run() reported, for uffdm_source_live_stats
};

namespace {

thread_local std::string last_error;

int errno_of(const std::error_code& code) {
    if (code.category() == std::system_category() || code.category() == std::generic_category()) {
        return code.value() != 0 ? code.value() : EIO;
    }
    if (code.category() == uffdm::error_category()) {
        switch (static_cast<uffdm::Errc>(code.value())) {
            case uffdm::Errc::RetryLater:
                return EAGAIN;
            case uffdm::Errc::AlreadyPresent:
                return EEXIST;
            case uffdm::Errc::Unsupported:
                return EOPNOTSUPP;
            case uffdm::Errc::PermissionDenied:
                return EACCES;
            case uffdm::Errc::ProtocolViolation:
                return EPROTO;
            case uffdm::Errc::PeerLost:
                return ECONNRESET;
            case uffdm::Errc::PeerAborted:
                return ECONNABORTED;
            case uffdm::Errc::TimedOut:
                return ETIMEDOUT;
            case uffdm::Errc::NotRegistered:
                return ENOENT;
            case uffdm::Errc::Closed:
                return EBADF;
            case uffdm::Errc::NotMapped:
                return EFAULT;
            case uffdm::Errc::Unaligned:
            case uffdm::Errc::InvalidArgument:
            case uffdm::Errc::Invalid:
                return EINVAL;
        }
    }
    return EIO;
}

int fail(const uffdm::Error& error) {
    last_error = error.message;
    return -errno_of(error.code);
}

int fail(int err, const char* why) {
    last_error = why;
    return -err;
}

// Every entry point: exceptions never cross into C (bad_alloc is the only one expected).
template <typename Fn>
int guarded(Fn&& fn) noexcept {
    try {
        last_error.clear();
        return fn();
    } catch (const std::bad_alloc&) {
        return fail(ENOMEM, "out of memory");
    } catch (const std::exception& e) {
        return fail(EIO, e.what());
    }
}

std::string text(const char* s) {
    return s != nullptr ? s : "";
}

std::expected<uffdm::Security, int> security_of(const uffdm_security& s) {
    if ((s.flags & ~UFFDM_SECURITY_INSECURE) != 0 || s.reserved != 0) {
        return std::unexpected(fail(EINVAL, "uffdm_security: unknown flags or reserved bits set"));
    }
    uffdm::Security out;
    out.token_file = text(s.token_file);
    out.tls_certificate = text(s.tls_certificate);
    out.tls_private_key = text(s.tls_private_key);
    out.tls_ca = text(s.tls_ca);
    out.tls_server_name = text(s.tls_server_name);
    out.insecure = (s.flags & UFFDM_SECURITY_INSECURE) != 0;
    return out;
}

void copy_stats(uffdm_destination_stats& out, const uffdm::DestinationStats& s, int result) {
    out.size = sizeof out;
    out.error = result;
    out.seconds = s.seconds;
    out.pages_total = s.pages_total;
    out.pages_urgent = s.pages_urgent;
    out.pages_background = s.pages_background;
    out.pages_zero = s.pages_zero;
    out.pages_duplicate = s.pages_duplicate;
    out.faults = s.faults;
    out.requests = s.requests;
    out.bytes_received = s.bytes_received;
    out.hashes_verified = s.hashes_verified;
    const uffdm::LatencyStats& l = s.fault_latency;
    out.fault_latency = {l.count, l.mean_us, l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.max_us};
    out.pauses = s.pauses.size();
    out.resumed = static_cast<std::uint64_t>(std::count_if(
        s.pauses.begin(), s.pauses.end(), [](const uffdm::Pause& p) { return p.resumed; }));
}

}  // namespace

extern "C" {

int uffdm_destination_create(const uffdm_destination_options* options, const uffdm_region* regions,
                             size_t count, uffdm_destination** out) noexcept {
    return guarded([&] {
        if (options == nullptr || out == nullptr || (regions == nullptr && count != 0)) {
            return fail(EINVAL, "uffdm_destination_create: NULL argument");
        }
        if (options->size != sizeof(uffdm_destination_options)) {
            return fail(EINVAL, "uffdm_destination_options.size is not sizeof the struct");
        }
        constexpr std::uint32_t known =
            UFFDM_DESTINATION_VERIFY | UFFDM_DESTINATION_DROP_CAPABILITIES |
            UFFDM_DESTINATION_USER_FAULTS_ONLY | UFFDM_DESTINATION_HOLD_STREAM |
            UFFDM_DESTINATION_POISON_ON_FAILURE | UFFDM_DESTINATION_DISCARDS_READ_ZERO |
            UFFDM_DESTINATION_REFUSE_COMPRESSION | UFFDM_DESTINATION_NO_MARKING;
        if ((options->flags & ~known) != 0) {
            return fail(EINVAL, "uffdm_destination_options.flags has unknown bits");
        }
        if (options->placement_threads < -1 || options->placement_threads > 16) {
            return fail(EINVAL,
                        "uffdm_destination_options.placement_threads is not -1 (none), 0 (the "
                        "library's choice) or 1..16");
        }
        auto security = security_of(options->security);
        if (!security) {
            return security.error();
        }
        uffdm::DestinationOptions o;
        o.connect = text(options->connect);
        o.security = *security;
        o.bulk_channels = options->bulk_channels;
        o.placement_threads = options->placement_threads == 0    ? -1
                              : options->placement_threads == -1 ? 0
                                                                 : options->placement_threads;
        o.verify = (options->flags & UFFDM_DESTINATION_VERIFY) != 0;
        o.drop_capabilities = (options->flags & UFFDM_DESTINATION_DROP_CAPABILITIES) != 0;
        o.require_kernel_faults = (options->flags & UFFDM_DESTINATION_USER_FAULTS_ONLY) == 0;
        o.hold_stream = (options->flags & UFFDM_DESTINATION_HOLD_STREAM) != 0;
        o.poison_on_failure = (options->flags & UFFDM_DESTINATION_POISON_ON_FAILURE) != 0;
        o.discarded_pages_read_zero = (options->flags & UFFDM_DESTINATION_DISCARDS_READ_ZERO) != 0;
        o.accept_compression = (options->flags & UFFDM_DESTINATION_REFUSE_COMPRESSION) == 0;
        o.marking.enabled = (options->flags & UFFDM_DESTINATION_NO_MARKING) == 0;
        if (options->reconnect_timeout_ms == UINT32_MAX) {
            o.reconnect_timeout = std::chrono::milliseconds(0);
        } else if (options->reconnect_timeout_ms != 0) {
            o.reconnect_timeout = std::chrono::milliseconds(options->reconnect_timeout_ms);
        }
        o.userfaultfd = options->userfaultfd;
        if (options->on_progress != nullptr) {
            o.on_progress = [fn = options->on_progress,
                             user = options->user](const uffdm::DestinationProgress& p) {
                uffdm_progress progress{p.pages_total, p.pages_present,       p.bytes_received,
                                        p.faults,      p.connected ? 1U : 0U, 0,
                                        p.seconds};
                fn(&progress, user);
            };
        }
        if (options->on_complete != nullptr) {
            o.on_complete = [fn = options->on_complete,
                             user = options->user](const uffdm::DestinationStats& s) {
                uffdm_destination_stats stats{};
                int result = s.ok ? 0 : -errno_of(s.error.code);
                copy_stats(stats, s, result);
                fn(result, &stats, user);
            };
        }
        std::vector<uffdm::DestinationRegion> guest;
        for (size_t i = 0; i < count; ++i) {
            const uffdm_region& r = regions[i];
            if (r.flags != 0 || r.kind < UFFDM_MEMORY_ANONYMOUS || r.kind > UFFDM_MEMORY_HUGETLB) {
                return fail(EINVAL, "uffdm_region: unknown kind or flags set");
            }
            guest.push_back(
                {r.address, r.length, r.page_size, static_cast<uffdm::MemoryKind>(r.kind)});
        }
        auto created = uffdm::Destination::create(std::move(guest), std::move(o));
        if (!created) {
            return fail(created.error());
        }
        *out = new uffdm_destination{std::move(*created)};
        return 0;
    });
}

int uffdm_destination_start(uffdm_destination* d) noexcept {
    return guarded([&] {
        if (d == nullptr) {
            return fail(EINVAL, "uffdm_destination_start: NULL destination");
        }
        auto started = d->destination.start();
        return started ? 0 : fail(started.error());
    });
}

int uffdm_destination_wait(uffdm_destination* d, uffdm_destination_stats* stats) noexcept {
    return guarded([&] {
        if (d == nullptr || (stats != nullptr && stats->size != sizeof(uffdm_destination_stats))) {
            return fail(EINVAL, "uffdm_destination_wait: NULL destination or stats.size wrong");
        }
        uffdm::DestinationStats s = d->destination.wait();
        int result = s.ok ? 0 : fail(s.error);
        if (stats != nullptr) {
            copy_stats(*stats, s, result);
        }
        return result;
    });
}

void uffdm_destination_stop(uffdm_destination* d) noexcept {
    if (d != nullptr) {
        d->destination.stop();
    }
}

void uffdm_destination_hold_stream(uffdm_destination* d, int held) noexcept {
    if (d != nullptr) {
        d->destination.set_stream_held(held != 0);
    }
}

void uffdm_destination_destroy(uffdm_destination* d) noexcept {
    delete d;
}

namespace {

// uffdm_source_create and uffdm_source_create_live: `live` may be NULL.
int create_source(const uffdm_source_options* options, const uffdm_live_options* live,
                  const uffdm_region* regions, size_t count, uffdm_source** out) {
    return guarded([&] {
        if (options == nullptr || out == nullptr || regions == nullptr || count == 0) {
            return fail(EINVAL, "uffdm_source_create: NULL argument or no region");
        }
        constexpr std::uint32_t known = UFFDM_SOURCE_COMPRESS_ANSWERS | UFFDM_SOURCE_NO_MARKING;
        if ((options->size != sizeof(uffdm_source_options) &&
             options->size != UFFDM_SOURCE_OPTIONS_SIZE_V1) ||
            (options->flags & ~known) != 0) {
            return fail(EINVAL,
                        "uffdm_source_options: size is not sizeof the struct (nor the 1.0 one), "
                        "or unknown flags set");
        }
        // A caller built against ABI 1.0 passed the shorter struct: nothing past it is read.
        uffdm_source_options given{};
        std::memcpy(&given, options, options->size);
        options = &given;
        if (given.compression > UFFDM_COMPRESSION_AUTO ||
            (given.zstd_level != 0 && (given.zstd_level < -7 || given.zstd_level > 19))) {
            return fail(EINVAL,
                        "uffdm_source_options: unknown compression or zstd_level "
                        "outside -7..19");
        }
        auto security = security_of(options->security);
        if (!security) {
            return security.error();
        }
        uffdm::SourceOptions o;
        if (options->listen != nullptr) {
            o.listen = options->listen;
        }
        o.compression.codec = static_cast<uffdm::Compression>(given.compression);
        o.compression.zstd_level = given.zstd_level != 0 ? given.zstd_level : 3;
        o.compression.answers = (given.flags & UFFDM_SOURCE_COMPRESS_ANSWERS) != 0;
        o.marking.enabled = (given.flags & UFFDM_SOURCE_NO_MARKING) == 0;
        o.max_bandwidth = given.max_bandwidth;
        o.security = *security;
        if (options->unix_socket_mode != 0) {
            o.security.unix_socket_mode = options->unix_socket_mode;
        }
        if (options->allowed_uid_count != 0) {
            if (options->allowed_uids == nullptr) {
                return fail(EINVAL, "uffdm_source_options: allowed_uid_count without allowed_uids");
            }
            o.security.allowed_uids.assign(options->allowed_uids,
                                           options->allowed_uids + options->allowed_uid_count);
        }
        std::vector<std::pair<const void*, std::size_t>> memory;
        for (size_t i = 0; i < count; ++i) {
            if (regions[i].flags != 0 || regions[i].page_size != regions[0].page_size) {
                return fail(EINVAL, "uffdm_region: flags set, or page sizes differ");
            }
            memory.emplace_back(regions[i].address, regions[i].length);
        }
        if (live != nullptr) {
            if (live->size != sizeof(uffdm_live_options) || live->reserved != 0 ||
                live->pause_guest == nullptr) {
                return fail(EINVAL,
                            "uffdm_live_options: size is not sizeof the struct, reserved set, or "
                            "no pause_guest");
            }
            o.live.enabled = true;
            o.live.max_rounds = live->max_rounds != 0 ? live->max_rounds : 10;
            if (live->downtime_budget_ms != 0) {
                o.live.downtime_budget = std::chrono::milliseconds(live->downtime_budget_ms);
            }
            for (size_t i = 0; i < count; ++i) {
                if (regions[i].kind < UFFDM_MEMORY_ANONYMOUS ||
                    regions[i].kind > UFFDM_MEMORY_HUGETLB) {
                    return fail(EINVAL, "uffdm_region: unknown kind");
                }
                o.live.kinds.push_back(static_cast<uffdm::MemoryKind>(regions[i].kind));
            }
            void* user = live->user;
            o.live.pause_guest = [fn = live->pause_guest, user] { fn(user); };
            if (live->resume_guest != nullptr) {
                o.live.resume_guest = [fn = live->resume_guest, user] { fn(user); };
            }
            if (live->on_round != nullptr) {
                o.live.on_round = [fn = live->on_round, user](const uffdm::RoundReport& r) {
                    uffdm_round round{r.round,
                                      0,
                                      r.pages,
                                      r.bytes,
                                      r.seconds,
                                      r.dirty_pages,
                                      r.dirty_pages_per_second};
                    fn(&round, user);
                };
            }
            if (live->dirty_log != nullptr) {
                o.live.dirty_log = [fn = live->dirty_log, user](std::uint32_t region,
                                                                std::span<std::uint64_t> bits) {
                    return fn(region, bits.data(), bits.size(), user) == 0;
                };
            }
        }
        auto created = uffdm::Source::create(memory, regions[0].page_size, std::move(o));
        if (!created) {
            return fail(created.error());
        }
        *out = new uffdm_source{std::move(*created), {}};
        return 0;
    });
}

}  // namespace

int uffdm_source_create(const uffdm_source_options* options, const uffdm_region* regions,
                        size_t count, uffdm_source** out) noexcept {
    return create_source(options, nullptr, regions, count, out);
}

int uffdm_source_create_live(const uffdm_source_options* options, const uffdm_live_options* live,
                             const uffdm_region* regions, size_t count,
                             uffdm_source** out) noexcept {
    if (live == nullptr) {
        return guarded([] { return fail(EINVAL, "uffdm_source_create_live: NULL live options"); });
    }
    return create_source(options, live, regions, count, out);
}

void uffdm_source_switchover(uffdm_source* s) noexcept {
    if (s != nullptr) {
        s->source.switchover_now();
    }
}

int uffdm_source_live_stats(const uffdm_source* s, uffdm_live_stats* stats) noexcept {
    return guarded([&] {
        if (s == nullptr || stats == nullptr || stats->size != sizeof(uffdm_live_stats)) {
            return fail(EINVAL, "uffdm_source_live_stats: NULL argument or stats.size wrong");
        }
        stats->rounds = static_cast<std::uint32_t>(s->last.rounds.size());
        stats->pages_discarded = s->last.pages_discarded;
        stats->downtime_seconds = s->last.downtime_seconds;
        stats->guest_runnable_here = s->last.guest_runnable_here ? 1 : 0;
        stats->reserved = 0;
        return 0;
    });
}

int uffdm_destination_wait_runnable(uffdm_destination* d, uint32_t timeout_ms) noexcept {
    return guarded([&] {
        if (d == nullptr) {
            return fail(EINVAL, "uffdm_destination_wait_runnable: NULL destination");
        }
        auto runnable = d->destination.wait_until_runnable(
            timeout_ms == 0 ? std::chrono::milliseconds(std::chrono::minutes(10))
                            : std::chrono::milliseconds(timeout_ms));
        return runnable ? 0 : fail(runnable.error());
    });
}

int uffdm_source_endpoint(const uffdm_source* s, char* buffer, size_t size) noexcept {
    return guarded([&] {
        if (s == nullptr || buffer == nullptr) {
            return fail(EINVAL, "uffdm_source_endpoint: NULL argument");
        }
        std::string endpoint = s->source.endpoint();
        if (endpoint.size() + 1 > size) {
            return fail(ERANGE, "uffdm_source_endpoint: buffer too small");
        }
        std::memcpy(buffer, endpoint.c_str(), endpoint.size() + 1);
        return 0;
    });
}

int uffdm_source_run(uffdm_source* s, uffdm_source_stats* stats) noexcept {
    return guarded([&] {
        if (s == nullptr || (stats != nullptr && stats->size != sizeof(uffdm_source_stats) &&
                             stats->size != UFFDM_SOURCE_STATS_SIZE_V1)) {
            return fail(EINVAL, "uffdm_source_run: NULL source or stats.size wrong");
        }
        uffdm::SourceStats r = s->source.run();
        s->last = r;
        int result = r.ok ? 0 : fail(r.error);
        if (stats != nullptr) {
            stats->error = result;
            stats->seconds = r.seconds;
            stats->pages_total = r.pages_total;
            stats->pages_streamed = r.pages_streamed;
            stats->pages_answered = r.pages_answered;
            stats->pages_resent = r.pages_resent;
            stats->zero_pages = r.zero_pages;
            stats->requests = r.requests;
            stats->bytes_sent = r.bytes_sent;
            if (stats->size == sizeof(uffdm_source_stats)) {
                stats->compressed_runs = r.compression.runs_compressed;
                stats->compressed_raw_bytes = r.compression.raw_bytes;
                stats->compressed_bytes = r.compression.compressed_bytes;
                stats->capped_seconds = r.capped_seconds;
            }
        }
        return result;
    });
}

void uffdm_source_stop(uffdm_source* s) noexcept {
    if (s != nullptr) {
        s->source.stop();
    }
}

void uffdm_source_destroy(uffdm_source* s) noexcept {
    delete s;
}

int uffdm_receive_userfaultfd(const char* socket_path) noexcept {
    return guarded([&] {
        if (socket_path == nullptr) {
            return fail(EINVAL, "uffdm_receive_userfaultfd: NULL path");
        }
        auto fd = uffdm::receive_userfaultfd(socket_path);
        return fd ? *fd : fail(fd.error());
    });
}

const char* uffdm_last_error(void) noexcept {
    return last_error.c_str();
}

const char* uffdm_strerror(int error) noexcept {
    const char* description = ::strerrordesc_np(error < 0 ? -error : error);
    return description != nullptr ? description : "unknown error";
}

const char* uffdm_version(void) noexcept {
    return uffdm::version().data();
}

int uffdm_firecracker_create(const uffdm_firecracker_options* options,
                             uffdm_firecracker** out) noexcept {
    return guarded([&] {
        if (options == nullptr || out == nullptr) {
            return fail(EINVAL, "uffdm_firecracker_create: NULL argument");
        }
        if (options->size != sizeof(uffdm_firecracker_options)) {
            return fail(EINVAL, "uffdm_firecracker_options.size is not sizeof the struct");
        }
        constexpr std::uint32_t known =
            UFFDM_FIRECRACKER_VERIFY | UFFDM_FIRECRACKER_KEEP_CAPABILITIES;
        if ((options->flags & ~known) != 0) {
            return fail(EINVAL, "uffdm_firecracker_options.flags has unknown bits");
        }
        auto security = security_of(options->security);
        if (!security) {
            return security.error();
        }
        uffdm::FirecrackerHandlerOptions o;
        o.socket_path = text(options->socket_path);
        o.image = text(options->image);
        o.connect = text(options->connect);
        o.security = *security;
        o.bulk_channels = options->bulk_channels;
        o.verify = (options->flags & UFFDM_FIRECRACKER_VERIFY) != 0;
        o.drop_capabilities = (options->flags & UFFDM_FIRECRACKER_KEEP_CAPABILITIES) == 0;
        o.max_vms = options->max_vms;
        if (options->handshake_timeout_ms != 0) {
            o.handshake_timeout = std::chrono::milliseconds(options->handshake_timeout_ms);
        }
        if (options->reconnect_timeout_ms == UINT32_MAX) {
            o.reconnect_timeout = std::chrono::milliseconds(0);
        } else if (options->reconnect_timeout_ms != 0) {
            o.reconnect_timeout = std::chrono::milliseconds(options->reconnect_timeout_ms);
        }
        if (options->on_vm_end != nullptr) {
            o.on_vm_end = [fn = options->on_vm_end,
                           user = options->user](const uffdm::FirecrackerVm& vm) {
                uffdm_firecracker_vm out{};
                out.id = vm.id;
                out.pid = vm.pid;
                out.result = vm.end == "complete" ? 0 : -errno_of(vm.stats.error.code);
                out.end = vm.end.c_str();
                out.regions = static_cast<std::uint32_t>(vm.regions.size());
                out.remove_events = vm.remove_events ? 1U : 0U;
                copy_stats(out.stats, vm.stats, out.result);
                fn(&out, user);
            };
        }
        auto created = uffdm::FirecrackerHandler::create(std::move(o));
        if (!created) {
            return fail(created.error());
        }
        *out = new uffdm_firecracker{std::move(*created)};
        return 0;
    });
}

int uffdm_firecracker_run(uffdm_firecracker* handler) noexcept {
    return guarded([&] {
        if (handler == nullptr) {
            return fail(EINVAL, "uffdm_firecracker_run: NULL handler");
        }
        for (const auto& vm : handler->handler.run()) {
            if (vm.end != "complete") {
                return fail(uffdm::Error{vm.stats.error.code ? vm.stats.error.code
                                                             : make_error_code(uffdm::Errc::Closed),
                                         "VM " + std::to_string(vm.id) + ": " + vm.end});
            }
        }
        return 0;
    });
}

void uffdm_firecracker_stop(uffdm_firecracker* handler) noexcept {
    if (handler != nullptr) {
        handler->handler.stop();
    }
}

void uffdm_firecracker_destroy(uffdm_firecracker* handler) noexcept {
    delete handler;
}

}  // extern "C"
