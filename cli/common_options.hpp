// common_options.hpp — The options serve, receive and demo share: security, timeouts, reports.
#pragma once

#include <CLI/CLI.hpp>
#include <uffdm/uffdm.hpp>

#include <nlohmann/json.hpp>
#include <string>

namespace uffdm::cli {

// --token-file, --tls-cert, --tls-key, --tls-ca, --tls-server-name.
void add_security_options(CLI::App& command, Security& security);
// --data-path auto|io_uring|asio.
void add_data_path_option(CLI::App& command, DataPathBackend& backend);
// --bulk-channels N: connections for the background stream, 0..16.
void add_bulk_channels_option(CLI::App& command, std::size_t& channels);
// --placement-threads N: threads placing the stream beside the bulk loops (-1: by the cores).
void add_placement_option(CLI::App& command, int& threads);
// --handshake-timeout, --idle-timeout, --stall-timeout and, with reconnect, --reconnect-timeout:
// durations such as 500ms, 2s or 1m.
void add_timeout_options(CLI::App& command, Timeouts& timeouts,
                         std::chrono::milliseconds* reconnect);
// --dscp URGENT,BULK and --no-marking (urgent traffic first on the wire).
void add_marking_options(CLI::App& command, TrafficMarking& marking);
// The same as arguments for another uffd-migrate command (demo's source).
[[nodiscard]] std::vector<std::string> marking_arguments(const TrafficMarking& marking);
// --content random|host-files: what a synthetic guest's non-zero pages hold.
void add_content_option(CLI::App& command, SyntheticGuest::Content& content);
// --compress auto|off|lz4|zstd[:LEVEL], --compress-answers, --max-bandwidth RATE.
void add_stream_options(CLI::App& command, SourceOptions& options);
// "off", "lz4", "zstd", "zstd:LEVEL" or "auto".
[[nodiscard]] std::expected<StreamCompression, std::string> parse_compression(
    std::string_view text);
// "250ms", "2s", "1.5s", "1m" (a bare number is seconds).
[[nodiscard]] std::expected<std::chrono::milliseconds, std::string> parse_duration(
    std::string_view text);

// Writes the report to path (atomically: a temporary file renamed into place). A full disk or an
// unwritable directory is an error message, never a half-written file.
[[nodiscard]] std::expected<void, std::string> write_json(const std::string& path,
                                                          const nlohmann::json& report);

[[nodiscard]] nlohmann::json to_json(const DestinationStats& stats);
[[nodiscard]] nlohmann::json to_json(const SourceStats& stats);
[[nodiscard]] nlohmann::json to_json(const LatencyStats& latency);

// Progress lines for each break and resumption: on_pause and on_resume print to stderr.
void report_pauses(DestinationOptions& options, const std::string& command);

// A few lines for people.
void print_summary(const DestinationStats& stats, std::FILE* out);
void print_summary(const SourceStats& stats, std::FILE* out);

}  // namespace uffdm::cli
