// common_options.cpp — Shared option wiring, JSON rendering and writing, text summaries.
#include "cli/common_options.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
#include <string_view>

#include "cli/sizes.hpp"

namespace uffdm::cli {

void add_security_options(CLI::App& command, Security& security) {
    command.add_option("--token-file", security.token_file,
                       "Shared secret for HMAC authentication (a file only you can read)");
    command.add_option("--tls-cert", security.tls_certificate,
                       "TLS 1.3: this side's certificate (PEM)");
    command.add_option("--tls-key", security.tls_private_key,
                       "TLS 1.3: its private key (PEM, mode 600)");
    command.add_option("--tls-ca", security.tls_ca, "TLS 1.3: the CA that signs the peer (PEM)");
    command.add_option("--tls-server-name", security.tls_server_name,
                       "TLS 1.3: the name the source's certificate must carry");
}

void add_data_path_option(CLI::App& command, DataPathBackend& backend) {
    command
        .add_option("--data-path", backend, "How bytes move once connected: auto, io_uring or asio")
        ->transform(CLI::CheckedTransformer(
            std::map<std::string, DataPathBackend>{{"auto", DataPathBackend::Auto},
                                                   {"io_uring", DataPathBackend::IoUring},
                                                   {"asio", DataPathBackend::Asio}},
            CLI::ignore_case));
}

std::expected<StreamCompression, std::string> parse_compression(std::string_view text) {
    StreamCompression out;
    if (text == "off") {
        out.codec = Compression::Off;
    } else if (text == "lz4") {
        out.codec = Compression::Lz4;
    } else if (text == "auto") {
        out.codec = Compression::Auto;
    } else if (text == "zstd" || text.starts_with("zstd:")) {
        out.codec = Compression::Zstd;
        if (text.size() > 5) {
            std::string_view level = text.substr(5);
            int value = 0;
            auto [end, ec] = std::from_chars(level.data(), level.data() + level.size(), value);
            if (ec != std::errc() || end != level.data() + level.size() || value < -7 ||
                value > 19) {
                return std::unexpected("zstd level '" + std::string(level) +
                                       "' is not a whole number from -7 to 19");
            }
            out.zstd_level = value;
        }
    } else {
        return std::unexpected("--compress '" + std::string(text) +
                               "' is not one of auto, off, lz4, zstd, zstd:LEVEL");
    }
    return out;
}

void add_marking_options(CLI::App& command, TrafficMarking& marking) {
    command
        .add_option_function<std::string>(
            "--dscp",
            [&marking](const std::string& text) {
                unsigned urgent = 64;
                unsigned bulk = 64;
                char end = 0;
                if (std::sscanf(text.c_str(), "%u,%u%c", &urgent, &bulk, &end) != 2 ||
                    urgent > 63 || bulk > 63) {
                    throw CLI::ValidationError("--dscp '" + text +
                                               "' is not URGENT,BULK with each 0 to 63 (e.g. "
                                               "46,8: EF and CS1)");
                }
                marking.urgent_dscp = static_cast<std::uint8_t>(urgent);
                marking.bulk_dscp = static_cast<std::uint8_t>(bulk);
            },
            "DSCP of the urgent and the bulk connections' packets")
        ->default_str("46,8");
    command.add_flag_callback(
        "--no-marking", [&marking] { marking.enabled = false; },
        "Leave every connection's DSCP, priority and send backlog as the system has them");
}

std::vector<std::string> marking_arguments(const TrafficMarking& marking) {
    if (!marking.enabled) {
        return {"--no-marking"};
    }
    return {"--dscp",
            std::to_string(marking.urgent_dscp) + "," + std::to_string(marking.bulk_dscp)};
}

void add_content_option(CLI::App& command, SyntheticGuest::Content& content) {
    command
        .add_option("--content", content,
                    "Synthetic guest: random (incompressible) or host-files (pages of this "
                    "host's libraries, programs and texts: compresses like a real guest)")
        ->transform(CLI::CheckedTransformer(
            std::map<std::string, SyntheticGuest::Content>{
                {"random", SyntheticGuest::Content::Random},
                {"host-files", SyntheticGuest::Content::HostFiles}},
            CLI::ignore_case))
        ->default_str("random");
}

void add_stream_options(CLI::App& command, SourceOptions& options) {
    command
        .add_option_function<std::string>(
            "--compress",
            [&options](const std::string& text) {
                auto parsed = parse_compression(text);
                if (!parsed) {
                    throw CLI::ValidationError(parsed.error());
                }
                // The codec only: --compress-answers and --compress-threads stay as given.
                options.compression.codec = parsed->codec;
                options.compression.zstd_level = parsed->zstd_level;
            },
            "The stream's data runs: off, lz4, zstd[:LEVEL], or auto (lz4 while it makes the "
            "stream faster: a link that is the bottleneck and a CPU that keeps up)")
        ->default_str("off");
    command.add_flag("--compress-answers", options.compression.answers,
                     "Compress answers to faults too (with lz4 or zstd)");
    command
        .add_option("--compress-threads", options.compression.threads,
                    "Threads compressing the stream beside each bulk loop, in batches with it "
                    "(-1: one per core beyond the first, at most 3)")
        ->default_str("-1")
        ->check(CLI::Range(-1, 16));
    command
        .add_option_function<std::string>(
            "--max-bandwidth",
            [&options](const std::string& text) {
                auto parsed = parse_rate(text);
                if (!parsed) {
                    throw CLI::ValidationError(parsed.error());
                }
                options.max_bandwidth = *parsed;
            },
            "Cap the background stream on the wire (e.g. 500mbit, or 100M bytes per second); "
            "answers to faults are never capped")
        ->default_str("none");
}

std::expected<std::chrono::milliseconds, std::string> parse_duration(std::string_view text) {
    std::string s(text);
    double scale = 1000;
    for (auto [suffix, factor] :
         {std::pair{"ms", 1.0}, std::pair{"s", 1000.0}, std::pair{"m", 60000.0}}) {
        std::string_view unit(suffix);
        if (s.size() > unit.size() && s.ends_with(unit)) {
            s.resize(s.size() - unit.size());
            scale = factor;
            break;
        }
    }
    std::size_t used = 0;
    double value = -1;
    try {
        value = std::stod(s, &used);
    } catch (const std::exception&) {
        used = 0;
    }
    if (used != s.size() || s.empty() || !(value >= 0) || value * scale > 86400000.0) {
        return std::unexpected("duration '" + std::string(text) +
                               "' is not a number of ms, s or m (0 to 24 hours)");
    }
    return std::chrono::milliseconds(static_cast<std::int64_t>(value * scale + 0.5));
}

void add_bulk_channels_option(CLI::App& command, std::size_t& channels) {
    command
        .add_option("--bulk-channels", channels,
                    "Connections for the background stream (0: it shares the urgent one)")
        ->capture_default_str()
        ->check(CLI::Range(0, 16));
}

void add_placement_option(CLI::App& command, int& threads) {
    command
        .add_option("--placement-threads", threads,
                    "Threads placing the background stream while the bulk connections receive "
                    "(0: the receiving loop places; -1: one per usable core beyond two, at "
                    "most 4)")
        ->capture_default_str()
        ->check(CLI::Range(-1, 16));
}

void add_timeout_options(CLI::App& command, Timeouts& timeouts,
                         std::chrono::milliseconds* reconnect) {
    auto add = [&](const char* name, std::chrono::milliseconds& target, const char* what) {
        command
            .add_option_function<std::string>(
                name,
                [&target](const std::string& text) {
                    auto parsed = parse_duration(text);
                    if (!parsed) {
                        throw CLI::ValidationError(parsed.error());
                    }
                    target = *parsed;
                },
                what)
            ->default_str(std::to_string(target.count()) + "ms");
    };
    add("--handshake-timeout", timeouts.handshake, "Connecting and authenticating, per attempt");
    add("--idle-timeout", timeouts.idle,
        "A connection that receives nothing this long is dead (heartbeats keep a healthy one "
        "alive; 0: off)");
    add("--stall-timeout", timeouts.stall, "A peer that reads nothing this long is gone");
    if (reconnect != nullptr) {
        add("--reconnect-timeout", *reconnect,
            "After a break, how long to wait for a new session before failing (0: fail at once)");
    }
}

std::expected<void, std::string> write_json(const std::string& path, const nlohmann::json& report) {
    std::string text = report.dump(2) + "\n";
    std::string temporary = path + ".tmp-" + std::to_string(::getpid());
    int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        return std::unexpected("cannot write the report to " + path + ": " + std::strerror(errno));
    }
    std::size_t written = 0;
    while (written < text.size()) {
        ssize_t n = ::write(fd, text.data() + written, text.size() - written);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            int err = n < 0 ? errno : ENOSPC;
            ::close(fd);
            ::unlink(temporary.c_str());
            return std::unexpected("cannot write the report to " + path + ": " +
                                   std::strerror(err));
        }
        written += static_cast<std::size_t>(n);
    }
    if (::fsync(fd) < 0 || ::close(fd) < 0) {
        int err = errno;
        ::unlink(temporary.c_str());
        return std::unexpected("cannot write the report to " + path + ": " + std::strerror(err));
    }
    if (::rename(temporary.c_str(), path.c_str()) < 0) {
        int err = errno;
        ::unlink(temporary.c_str());
        return std::unexpected("cannot write the report to " + path + ": " + std::strerror(err));
    }
    return {};
}

void report_pauses(DestinationOptions& options, const std::string& command) {
    auto timeout = options.reconnect_timeout;
    // On a terminal the line first clears a progress bar drawn there; into a file or a pipe it
    // is a plain line (no escape sequence in a log).
    const char* clear = ::isatty(STDERR_FILENO) == 1 ? "\r\033[K" : "";
    options.on_pause = [command, timeout, clear](const Pause& p) {
        std::fprintf(stderr, "%s%s: paused at %.3f s: %s; reconnecting (for up to %.1f s)\n", clear,
                     command.c_str(), p.at_seconds, p.reason.c_str(),
                     static_cast<double>(timeout.count()) / 1000.0);
    };
    options.on_resume = [command, clear](const Pause& p) {
        std::fprintf(stderr, "%s%s: resumed after %.3f s\n", clear, command.c_str(), p.seconds);
    };
}

nlohmann::json to_json(const LatencyStats& l) {
    return {{"count", l.count}, {"mean", l.mean_us},  {"p50", l.p50_us}, {"p90", l.p90_us},
            {"p99", l.p99_us},  {"p99.9", l.p999_us}, {"max", l.max_us}};
}

nlohmann::json to_json(const DestinationStats& s) {
    nlohmann::json pauses = nlohmann::json::array();
    for (const Pause& p : s.pauses) {
        pauses.push_back({{"at_seconds", p.at_seconds},
                          {"seconds", p.seconds},
                          {"reason", p.reason},
                          {"resumed", p.resumed}});
    }
    nlohmann::json buckets = nlohmann::json::array();
    for (const auto& [upper_ns, count] : s.latency_buckets) {
        buckets.push_back({upper_ns / 1000.0, count});
    }
    nlohmann::json json = {{"ok", s.ok},
                           {"error", s.ok ? "" : s.error.message},
                           {"total_seconds", s.seconds},
                           {"guest_bytes", s.bytes_total},
                           {"pages", s.pages_total},
                           {"pages_present", s.pages_urgent + s.pages_background},
                           {"fault_latency_us", to_json(s.fault_latency)},
                           {"fault_latency_histogram_us", buckets},
                           {"faults", s.faults},
                           {"requests", s.requests},
                           {"fault_threads", s.fault_threads},
                           {"max_thread_blocked_ms", s.max_thread_blocked_ms},
                           {"pages_by_path",
                            {{"urgent", s.pages_urgent},
                             {"background", s.pages_background},
                             {"zero", s.pages_zero},
                             {"duplicate", s.pages_duplicate},
                             {"discarded", s.pages_discarded},
                             {"unmapped", s.pages_unmapped}}},
                           {"bytes_received", s.bytes_received},
                           {"throughput_bytes_per_s",
                            s.seconds > 0 ? static_cast<double>(s.bytes_total) / s.seconds : 0.0},
                           {"hashes_verified", s.hashes_verified},
                           {"bookkeeping_bytes", s.bookkeeping_bytes},
                           {"data_path", s.data_path},
                           {"placement_threads", s.placement_threads},
                           {"placement", s.placement},
                           {"userfaultfd_grant", s.grant},
                           {"pauses", pauses}};
    if (s.live_source) {
        json["live"] = {{"precopy_rounds", s.precopy_rounds},
                        {"pages_replaced", s.pages_replaced},
                        {"pages_discarded_at_switchover", s.pages_discarded_at_switchover},
                        {"faults_after_switchover", s.faults_after_switchover},
                        {"switchover_seconds", s.switchover_seconds}};
    }
    return json;
}

nlohmann::json to_json(const SourceStats& s) {
    nlohmann::json json = {{"ok", s.ok},
                           {"error", s.ok ? "" : s.error.message},
                           {"seconds", s.seconds},
                           {"pages", s.pages_total},
                           {"pages_streamed", s.pages_streamed},
                           {"pages_answered", s.pages_answered},
                           {"pages_resent", s.pages_resent},
                           {"zero_pages", s.zero_pages},
                           {"requests", s.requests},
                           {"bytes_sent", s.bytes_sent},
                           {"bulk_channels", s.bulk_channels},
                           {"pauses", s.pauses},
                           {"resumes", s.resumes},
                           {"max_bandwidth", s.max_bandwidth},
                           {"capped_seconds", s.capped_seconds}};
    const CompressionReport& c = s.compression;
    json["compression"] = {{"mode", c.mode},
                           {"accepted", c.accepted},
                           {"runs_compressed", c.runs_compressed},
                           {"runs_not_shrunk", c.runs_not_shrunk},
                           {"raw_bytes", c.raw_bytes},
                           {"compressed_bytes", c.compressed_bytes},
                           {"compress_seconds", c.compress_seconds},
                           {"auto_switches", c.auto_switches},
                           {"compressing_at_end", c.compressing_at_end},
                           {"threads", c.threads},
                           {"auto_choice", c.auto_choice}};
    if (s.live) {
        nlohmann::json rounds = nlohmann::json::array();
        for (const RoundReport& r : s.rounds) {
            rounds.push_back({{"round", r.round},
                              {"pages", r.pages},
                              {"bytes", r.bytes},
                              {"seconds", r.seconds},
                              {"dirty_pages", r.dirty_pages},
                              {"dirty_pages_per_second", r.dirty_pages_per_second}});
        }
        json["live"] = {{"rounds", rounds},
                        {"switchover_reason", s.switchover_reason},
                        {"pages_discarded", s.pages_discarded},
                        {"downtime_seconds", s.downtime_seconds},
                        {"guest_runnable_here", s.guest_runnable_here}};
    }
    return json;
}

void print_summary(const DestinationStats& s, std::FILE* out) {
    if (!s.ok) {
        std::fprintf(out, "migration failed: %s\n", s.error.message.c_str());
        std::fprintf(out, "stopped with %llu of %llu pages present\n",
                     static_cast<unsigned long long>(s.pages_urgent + s.pages_background),
                     static_cast<unsigned long long>(s.pages_total));
    }
    std::fprintf(
        out, "guest         %s in %llu pages, %s in %.3f s (%s/s)\n",
        format_bytes(static_cast<double>(s.bytes_total)).c_str(),
        static_cast<unsigned long long>(s.pages_total), s.ok ? "migrated" : "stopped", s.seconds,
        format_bytes(s.seconds > 0 ? static_cast<double>(s.bytes_total) / s.seconds : 0).c_str());
    std::fprintf(out, "pages         %llu urgent, %llu background, %llu zero, %llu duplicate\n",
                 static_cast<unsigned long long>(s.pages_urgent),
                 static_cast<unsigned long long>(s.pages_background),
                 static_cast<unsigned long long>(s.pages_zero),
                 static_cast<unsigned long long>(s.pages_duplicate));
    const LatencyStats& l = s.fault_latency;
    std::fprintf(out,
                 "faults        %llu from %llu threads; latency p50 %.1f us, p90 %.1f, p99 %.1f, "
                 "p99.9 %.1f, max %.1f\n",
                 static_cast<unsigned long long>(s.faults),
                 static_cast<unsigned long long>(s.fault_threads), l.p50_us, l.p90_us, l.p99_us,
                 l.p999_us, l.max_us);
    std::fprintf(out, "wire          %s received over %s; userfaultfd via %s\n",
                 format_bytes(static_cast<double>(s.bytes_received)).c_str(), s.data_path.c_str(),
                 s.grant.c_str());
    if (s.placement_threads > 0) {
        std::fprintf(out, "placement     %u threads beside the bulk loops, from their rings\n",
                     s.placement_threads);
    } else {
        std::fprintf(out, "placement     in the bulk loops, each run as it arrives\n");
    }
    if (!s.placement.empty()) {
        std::fprintf(out, "              %s\n", s.placement.c_str());
    }
    if (!s.pauses.empty()) {
        double longest = 0;
        std::size_t resumed = 0;
        for (const Pause& p : s.pauses) {
            longest = std::max(longest, p.seconds);
            resumed += p.resumed ? 1 : 0;
        }
        std::fprintf(out,
                     "pauses        %zu (the connection broke; %zu resumed), longest %.3f s; "
                     "first: %s\n",
                     s.pauses.size(), resumed, longest, s.pauses.front().reason.c_str());
    }
    if (s.live_source) {
        std::fprintf(
            out,
            "live source   %u precopy rounds, %llu copies replaced; switchover: %llu "
            "pages discarded in %.1f ms, %llu faults after it; %.2f bytes received per "
            "guest byte\n",
            s.precopy_rounds, static_cast<unsigned long long>(s.pages_replaced),
            static_cast<unsigned long long>(s.pages_discarded_at_switchover),
            s.switchover_seconds * 1000, static_cast<unsigned long long>(s.faults_after_switchover),
            s.bytes_total > 0
                ? static_cast<double>(s.bytes_received) / static_cast<double>(s.bytes_total)
                : 0.0);
    }
}

void print_summary(const SourceStats& s, std::FILE* out) {
    if (!s.ok) {
        std::fprintf(out, "serving failed: %s\n", s.error.message.c_str());
    }
    std::fprintf(out,
                 "served        %llu pages in %.3f s: %llu streamed, %llu answered (%llu again), "
                 "%llu zero; %s sent on %llu bulk connections\n",
                 static_cast<unsigned long long>(s.pages_total), s.seconds,
                 static_cast<unsigned long long>(s.pages_streamed),
                 static_cast<unsigned long long>(s.pages_answered),
                 static_cast<unsigned long long>(s.pages_resent),
                 static_cast<unsigned long long>(s.zero_pages),
                 format_bytes(static_cast<double>(s.bytes_sent)).c_str(),
                 static_cast<unsigned long long>(s.bulk_channels));
    if (s.pauses > 0) {
        std::fprintf(out, "pauses        %llu (the destination's session broke), %llu resumed\n",
                     static_cast<unsigned long long>(s.pauses),
                     static_cast<unsigned long long>(s.resumes));
    }
    const CompressionReport& c = s.compression;
    if (c.mode != "off") {
        std::fprintf(
            out,
            "compression   %s (the destination accepts %s): %llu runs, %s -> %s (%.2fx), "
            "%.3f s compressing (the loop and %u helpers), %llu runs sent raw (did not "
            "shrink)%s\n",
            c.mode.c_str(), c.accepted.empty() ? "none" : c.accepted.c_str(),
            static_cast<unsigned long long>(c.runs_compressed),
            format_bytes(static_cast<double>(c.raw_bytes)).c_str(),
            format_bytes(static_cast<double>(c.compressed_bytes)).c_str(),
            c.compressed_bytes > 0
                ? static_cast<double>(c.raw_bytes) / static_cast<double>(c.compressed_bytes)
                : 0.0,
            c.compress_seconds, c.threads, static_cast<unsigned long long>(c.runs_not_shrunk),
            c.mode == "auto" ? (", " + std::to_string(c.auto_switches) + " switches").c_str() : "");
    }
    if (s.max_bandwidth > 0) {
        std::fprintf(out, "bandwidth     stream capped at %s/s, waited %.2f s for the cap\n",
                     format_bytes(static_cast<double>(s.max_bandwidth)).c_str(), s.capped_seconds);
    }
    if (s.live) {
        std::fprintf(out,
                     "live          %zu precopy rounds, switchover (%s): %llu pages discarded, "
                     "guest paused %.1f ms until the destination ran it\n",
                     s.rounds.size(), s.switchover_reason.c_str(),
                     static_cast<unsigned long long>(s.pages_discarded), s.downtime_seconds * 1000);
    }
}

}  // namespace uffdm::cli
