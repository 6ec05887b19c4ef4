// endpoint.hpp — Parsing "tcp:HOST:PORT" and "unix:PATH" addresses.
#pragma once

#include <cstdint>
#include <expected>
#include <string>
#include <string_view>

#include "transport/failure.hpp"

namespace uffdm::transport {

struct Endpoint {
    enum class Kind : std::uint8_t { Invalid = 0, Tcp, Unix };
    Kind kind = Kind::Invalid;
    std::string host;        // Tcp: name, IPv4 or IPv6 literal (without brackets)
    std::uint16_t port = 0;  // Tcp; 0 lets a listener pick one
    std::string path;        // Unix

    [[nodiscard]] std::string to_string() const;
    // Unix sockets, localhost, 127.0.0.0/8 and ::1: nothing off this host can connect.
    [[nodiscard]] bool is_loopback() const;
};

// tcp:127.0.0.1:4000, tcp:[::1]:4000, tcp:localhost:0, unix:/run/uffdm.sock
[[nodiscard]] std::expected<Endpoint, Failure> parse_endpoint(std::string_view text);

}  // namespace uffdm::transport
