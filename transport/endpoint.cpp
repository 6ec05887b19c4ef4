// endpoint.cpp — Endpoint syntax, port range, and the loopback test for --insecure.
#include "transport/endpoint.hpp"

#include <arpa/inet.h>
#include <sys/un.h>

#include <charconv>

namespace uffdm::transport {

namespace {

Failure bad(std::string_view text, const std::string& why) {
    return failure(Errc::InvalidArgument,
                   "bad endpoint '" + std::string(text) + "': " + why +
                       " (expected tcp:HOST:PORT, tcp:[IPV6]:PORT or unix:PATH)");
}

}  // namespace

std::string Endpoint::to_string() const {
    if (kind == Kind::Unix) {
        return "unix:" + path;
    }
    bool v6 = host.find(':') != std::string::npos;
    std::string out = "tcp:";
    out.append(v6 ? "[" : "").append(host).append(v6 ? "]" : "").append(":");
    out.append(std::to_string(port));
    return out;
}

bool Endpoint::is_loopback() const {
    if (kind == Kind::Unix) {
        return true;
    }
    if (host == "localhost") {
        return true;
    }
    in_addr v4{};
    if (::inet_pton(AF_INET, host.c_str(), &v4) == 1) {
        return (ntohl(v4.s_addr) >> 24) == 127;
    }
    in6_addr v6{};
    if (::inet_pton(AF_INET6, host.c_str(), &v6) == 1) {
        return IN6_IS_ADDR_LOOPBACK(&v6);
    }
    return false;
}

std::expected<Endpoint, Failure> parse_endpoint(std::string_view text) {
    Endpoint e;
    if (text.starts_with("unix:")) {
        e.kind = Endpoint::Kind::Unix;
        e.path = std::string(text.substr(5));
        if (e.path.empty()) {
            return std::unexpected(bad(text, "empty socket path"));
        }
        if (e.path.size() >= sizeof(sockaddr_un{}.sun_path)) {
            return std::unexpected(
                bad(text, "socket path longer than " +
                              std::to_string(sizeof(sockaddr_un{}.sun_path) - 1) + " bytes"));
        }
        return e;
    }
    if (!text.starts_with("tcp:")) {
        return std::unexpected(bad(text, "unknown scheme"));
    }
    std::string_view rest = text.substr(4);
    std::string_view host;
    std::string_view port;
    if (rest.starts_with("[")) {
        auto close = rest.find(']');
        if (close == std::string_view::npos || close + 1 >= rest.size() || rest[close + 1] != ':') {
            return std::unexpected(bad(text, "IPv6 address needs [ADDR]:PORT"));
        }
        host = rest.substr(1, close - 1);
        port = rest.substr(close + 2);
        in6_addr v6{};
        if (::inet_pton(AF_INET6, std::string(host).c_str(), &v6) != 1) {
            return std::unexpected(bad(text, "'" + std::string(host) + "' is not an IPv6 address"));
        }
    } else {
        auto colon = rest.rfind(':');
        if (colon == std::string_view::npos) {
            return std::unexpected(bad(text, "missing :PORT"));
        }
        host = rest.substr(0, colon);
        port = rest.substr(colon + 1);
        if (host.find(':') != std::string_view::npos) {
            return std::unexpected(bad(text, "IPv6 addresses go in brackets"));
        }
    }
    if (host.empty()) {
        return std::unexpected(bad(text, "empty host"));
    }
    unsigned value = 0;
    auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (port.empty() || ec != std::errc{} || end != port.data() + port.size() || value > 65535) {
        return std::unexpected(bad(text, "port '" + std::string(port) + "' is not 0..65535"));
    }
    e.kind = Endpoint::Kind::Tcp;
    e.host = std::string(host);
    e.port = static_cast<std::uint16_t>(value);
    return e;
}

}  // namespace uffdm::transport
