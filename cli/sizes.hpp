// sizes.hpp — Byte sizes as people write them ("1G", "512M", "4K") and as they read them.
#pragma once

#include <cstdint>
#include <expected>
#include <string>
#include <string_view>

namespace uffdm::cli {

// "4096", "64K", "512M", "1G", "2T", also with "iB" or "B" after the letter. Refused with a
// sentence that says why: an empty or negative number, an unknown suffix, an overflow.
[[nodiscard]] std::expected<std::uint64_t, std::string> parse_size(std::string_view text);
// A link rate in bytes per second: "1gbit", "800mbit", "10Gbit" (decimal bits, as tc writes
// them), or bytes per second as parse_size reads them ("100M": 100 MiB/s).
[[nodiscard]] std::expected<std::uint64_t, std::string> parse_rate(std::string_view text);
// "1.5 GiB", "64 MiB", "4 KiB", "512 B".
[[nodiscard]] std::string format_bytes(double bytes);

}  // namespace uffdm::cli
