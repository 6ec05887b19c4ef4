// sizes.cpp — Suffix parsing with overflow checks; binary units for output.
#include "cli/sizes.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdio>
#include <iterator>
#include <utility>

namespace uffdm::cli {

std::expected<std::uint64_t, std::string> parse_size(std::string_view text) {
    std::uint64_t number = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), number);
    std::string_view suffix(end, static_cast<std::size_t>(text.data() + text.size() - end));
    auto bad = [&](const std::string& why) {
        return std::unexpected("invalid size '" + std::string(text) + "': " + why +
                               " (use a whole number with K, M, G or T, e.g. 512M)");
    };
    if (text.empty() || ec == std::errc::invalid_argument) {
        return bad("no number");
    }
    if (ec == std::errc::result_out_of_range) {
        return bad("too large");
    }
    std::string unit;
    for (char c : suffix) {
        unit += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    }
    // Binary multiples whatever the spelling: guest memory comes in pages.
    static constexpr std::pair<std::string_view, unsigned> kUnits[] = {
        {"", 0},     {"B", 0},  {"K", 10},  {"KB", 10},  {"KIB", 10}, {"M", 20},  {"MB", 20},
        {"MIB", 20}, {"G", 30}, {"GB", 30}, {"GIB", 30}, {"T", 40},   {"TB", 40}, {"TIB", 40}};
    const auto* found = std::find_if(std::begin(kUnits), std::end(kUnits),
                                     [&](const auto& u) { return u.first == unit; });
    if (found == std::end(kUnits)) {
        return bad("unknown unit '" + std::string(suffix) + "'");
    }
    unsigned shift = found->second;
    if (shift > 0 && number > (~std::uint64_t{0} >> shift)) {
        return bad("too large");
    }
    return number << shift;
}

std::expected<std::uint64_t, std::string> parse_rate(std::string_view text) {
    std::string lower;
    for (char c : text) {
        lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    if (!lower.ends_with("bit")) {
        return parse_size(text);
    }
    std::string_view number(lower.data(), lower.size() - 3);
    std::uint64_t scale = 1;
    if (!number.empty() && (number.back() == 'k' || number.back() == 'm' || number.back() == 'g')) {
        scale = number.back() == 'k' ? 1000 : number.back() == 'm' ? 1000000 : 1000000000;
        number.remove_suffix(1);
    }
    std::uint64_t bits = 0;
    auto [end, ec] = std::from_chars(number.data(), number.data() + number.size(), bits);
    if (number.empty() || ec != std::errc() || end != number.data() + number.size() || bits == 0 ||
        bits > (~std::uint64_t{0}) / scale) {
        return std::unexpected("invalid rate '" + std::string(text) +
                               "' (e.g. 1gbit, 800mbit, or bytes per second: 100M)");
    }
    return bits * scale / 8;
}

std::string format_bytes(double bytes) {
    const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int unit = 0;
    while (bytes >= 1024 && unit < 4) {
        bytes /= 1024;
        ++unit;
    }
    char buffer[32];
    std::snprintf(buffer, sizeof buffer, unit == 0 ? "%.0f %s" : "%.1f %s", bytes, units[unit]);
    return buffer;
}

}  // namespace uffdm::cli
