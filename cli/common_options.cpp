// common_options.cpp — Shared option wiring, JSON rendering and writing, text summaries.
#include "cli/common_options.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

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

nlohmann::json to_json(const LatencyStats& l) {
    return {{"count", l.count}, {"mean", l.mean_us},  {"p50", l.p50_us}, {"p90", l.p90_us},
            {"p99", l.p99_us},  {"p99.9", l.p999_us}, {"max", l.max_us}};
}

nlohmann::json to_json(const DestinationStats& s) {
    nlohmann::json buckets = nlohmann::json::array();
    for (const auto& [upper_ns, count] : s.latency_buckets) {
        buckets.push_back({upper_ns / 1000.0, count});
    }
    return {{"ok", s.ok},
            {"error", s.ok ? "" : s.error.message},
            {"total_seconds", s.seconds},
            {"guest_bytes", s.bytes_total},
            {"pages", s.pages_total},
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
              {"duplicate", s.pages_duplicate}}},
            {"bytes_received", s.bytes_received},
            {"throughput_bytes_per_s",
             s.seconds > 0 ? static_cast<double>(s.bytes_total) / s.seconds : 0.0},
            {"hashes_verified", s.hashes_verified},
            {"bookkeeping_bytes", s.bookkeeping_bytes},
            {"data_path", s.data_path},
            {"userfaultfd_grant", s.grant}};
}

nlohmann::json to_json(const SourceStats& s) {
    return {{"ok", s.ok},
            {"error", s.ok ? "" : s.error.message},
            {"seconds", s.seconds},
            {"pages", s.pages_total},
            {"pages_streamed", s.pages_streamed},
            {"pages_answered", s.pages_answered},
            {"pages_resent", s.pages_resent},
            {"zero_pages", s.zero_pages},
            {"requests", s.requests},
            {"bytes_sent", s.bytes_sent},
            {"bulk_channels", s.bulk_channels}};
}

void print_summary(const DestinationStats& s, std::FILE* out) {
    if (!s.ok) {
        std::fprintf(out, "migration failed: %s\n", s.error.message.c_str());
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
}

}  // namespace uffdm::cli
