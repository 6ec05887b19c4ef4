// control.cpp — Encoding and strict decoding of HELLO, CHALLENGE, RESPONSE, ACCEPT, ERROR, PING.
#include "transport/control.hpp"

#include <algorithm>

#include "transport/byte_order.hpp"

namespace uffdm::transport {

namespace {

std::expected<void, FrameError> check_size(std::span<const std::byte> payload, std::size_t want,
                                           const char* what) {
    if (payload.size() != want) {
        return std::unexpected(violation(std::string(what) + " payload is " +
                                         std::to_string(payload.size()) + " bytes, not " +
                                         std::to_string(want)));
    }
    return {};
}

std::expected<void, FrameError> check_zero(std::span<const std::byte> bytes, const char* field) {
    if (std::any_of(bytes.begin(), bytes.end(), [](std::byte b) { return b != std::byte{0}; })) {
        return std::unexpected(violation(std::string(field) + " has reserved bytes set"));
    }
    return {};
}

template <std::size_t N>
std::array<std::byte, N> take(std::span<const std::byte> payload, std::size_t offset) {
    std::array<std::byte, N> out{};
    std::copy_n(payload.begin() + static_cast<std::ptrdiff_t>(offset), N, out.begin());
    return out;
}

template <std::size_t N>
void put(std::vector<std::byte>& out, std::size_t offset, const std::array<std::byte, N>& a) {
    std::copy(a.begin(), a.end(), out.begin() + static_cast<std::ptrdiff_t>(offset));
}

}  // namespace

std::string to_string(Role role) {
    switch (role) {
        case Role::Urgent:
            return "urgent";
        case Role::Bulk:
            return "bulk";
        case Role::Invalid:
            break;
    }
    return "invalid role " + std::to_string(static_cast<unsigned>(role));
}

std::string to_string(AuthMode mode) {
    switch (mode) {
        case AuthMode::None:
            return "none";
        case AuthMode::HmacSha256:
            return "hmac-sha256";
        case AuthMode::Invalid:
            break;
    }
    return "invalid auth mode " + std::to_string(static_cast<unsigned>(mode));
}

std::string to_string(ErrorCode code) {
    switch (code) {
        case ErrorCode::BadFrame:
            return "bad frame";
        case ErrorCode::VersionMismatch:
            return "version mismatch";
        case ErrorCode::AuthFailed:
            return "authentication failed";
        case ErrorCode::UnknownSession:
            return "unknown session";
        case ErrorCode::Busy:
            return "busy";
        case ErrorCode::Timeout:
            return "timeout";
        case ErrorCode::Internal:
            return "internal error";
        case ErrorCode::Shutdown:
            return "shutting down";
        case ErrorCode::Invalid:
            break;
    }
    return "error code " + std::to_string(static_cast<unsigned>(code));
}

std::vector<std::byte> encode(const Hello& m) {
    std::vector<std::byte> out(64);
    store_le<std::uint16_t>(out, 0, m.min_version);
    store_le<std::uint16_t>(out, 2, m.max_version);
    store_le<std::uint8_t>(out, 4, static_cast<std::uint8_t>(m.role));
    store_le<std::uint8_t>(out, 5, m.bulk_index);
    store_le<std::uint8_t>(out, 6, static_cast<std::uint8_t>(m.auth));
    store_le<std::uint64_t>(out, 8, m.session_id);
    put(out, 16, m.client_nonce);
    return out;
}

std::expected<Hello, FrameError> decode_hello(std::span<const std::byte> p) {
    if (auto ok = check_size(p, 64, "HELLO"); !ok) {
        return std::unexpected(ok.error());
    }
    Hello m;
    m.min_version = load_le<std::uint16_t>(p, 0);
    m.max_version = load_le<std::uint16_t>(p, 2);
    if (m.min_version == 0 || m.min_version > m.max_version) {
        return std::unexpected(violation("HELLO version range " + std::to_string(m.min_version) +
                                         ".." + std::to_string(m.max_version) + " is empty"));
    }
    m.role = static_cast<Role>(load_le<std::uint8_t>(p, 4));
    if (m.role != Role::Urgent && m.role != Role::Bulk) {
        return std::unexpected(violation("HELLO role " + to_string(m.role)));
    }
    m.bulk_index = load_le<std::uint8_t>(p, 5);
    if ((m.role == Role::Urgent && m.bulk_index != 0) || m.bulk_index >= kMaxBulkChannels) {
        return std::unexpected(violation("HELLO bulk_index " + std::to_string(m.bulk_index) +
                                         " invalid for role " + to_string(m.role)));
    }
    m.auth = static_cast<AuthMode>(load_le<std::uint8_t>(p, 6));
    if (m.auth != AuthMode::None && m.auth != AuthMode::HmacSha256) {
        return std::unexpected(violation("HELLO " + to_string(m.auth)));
    }
    if (auto ok = check_zero(p.subspan(7, 1), "HELLO byte 7"); !ok) {
        return std::unexpected(ok.error());
    }
    m.session_id = load_le<std::uint64_t>(p, 8);
    if ((m.role == Role::Urgent) != (m.session_id == 0)) {
        return std::unexpected(violation("HELLO session_id " + std::to_string(m.session_id) +
                                         " invalid for role " + to_string(m.role)));
    }
    m.client_nonce = take<kNonceSize>(p, 16);
    if (auto ok = check_zero(p.subspan(48, 16), "HELLO bytes 48..63"); !ok) {
        return std::unexpected(ok.error());
    }
    return m;
}

std::vector<std::byte> encode(const Challenge& m) {
    std::vector<std::byte> out(64);
    put(out, 0, m.server_nonce);
    put(out, 32, m.server_proof);
    return out;
}

std::expected<Challenge, FrameError> decode_challenge(std::span<const std::byte> p) {
    if (auto ok = check_size(p, 64, "CHALLENGE"); !ok) {
        return std::unexpected(ok.error());
    }
    return Challenge{take<kNonceSize>(p, 0), take<kProofSize>(p, 32)};
}

std::vector<std::byte> encode(const Response& m) {
    return std::vector<std::byte>(m.client_proof.begin(), m.client_proof.end());
}

std::expected<Response, FrameError> decode_response(std::span<const std::byte> p) {
    if (auto ok = check_size(p, 32, "RESPONSE"); !ok) {
        return std::unexpected(ok.error());
    }
    return Response{take<kProofSize>(p, 0)};
}

std::vector<std::byte> encode(const Accept& m) {
    std::vector<std::byte> out(16);
    store_le<std::uint64_t>(out, 0, m.session_id);
    store_le<std::uint16_t>(out, 8, m.version);
    store_le<std::uint8_t>(out, 10, m.max_bulk_channels);
    return out;
}

std::expected<Accept, FrameError> decode_accept(std::span<const std::byte> p) {
    if (auto ok = check_size(p, 16, "ACCEPT"); !ok) {
        return std::unexpected(ok.error());
    }
    Accept m;
    m.session_id = load_le<std::uint64_t>(p, 0);
    m.version = load_le<std::uint16_t>(p, 8);
    m.max_bulk_channels = load_le<std::uint8_t>(p, 10);
    if (m.session_id == 0) {
        return std::unexpected(violation("ACCEPT session_id 0"));
    }
    if (m.version < kMinVersion || m.version > kMaxVersion) {
        return std::unexpected(violation("ACCEPT version " + std::to_string(m.version)));
    }
    if (m.max_bulk_channels > kMaxBulkChannels) {
        return std::unexpected(
            violation("ACCEPT max_bulk_channels " + std::to_string(m.max_bulk_channels)));
    }
    if (auto ok = check_zero(p.subspan(11, 5), "ACCEPT bytes 11..15"); !ok) {
        return std::unexpected(ok.error());
    }
    return m;
}

std::vector<std::byte> encode(const ErrorMessage& m) {
    std::string text = m.text.substr(0, kMaxErrorText);
    for (char& c : text) {
        if (c < 0x20 || c > 0x7e) {
            c = '?';
        }
    }
    std::vector<std::byte> out(8 + text.size());
    store_le<std::uint32_t>(out, 0, static_cast<std::uint32_t>(m.code));
    store_le<std::uint32_t>(out, 4, static_cast<std::uint32_t>(text.size()));
    std::transform(text.begin(), text.end(), out.begin() + 8,
                   [](char c) { return static_cast<std::byte>(c); });
    return out;
}

std::expected<ErrorMessage, FrameError> decode_error(std::span<const std::byte> p) {
    if (p.size() < 8 || p.size() > 8 + kMaxErrorText) {
        return std::unexpected(violation("ERROR payload is " + std::to_string(p.size()) +
                                         " bytes, outside 8.." +
                                         std::to_string(8 + kMaxErrorText)));
    }
    ErrorMessage m;
    auto code = load_le<std::uint32_t>(p, 0);
    if (code == 0 || code > static_cast<std::uint32_t>(ErrorCode::Shutdown)) {
        return std::unexpected(violation("ERROR code " + std::to_string(code) + " is unknown"));
    }
    m.code = static_cast<ErrorCode>(code);
    auto length = load_le<std::uint32_t>(p, 4);
    if (length != p.size() - 8) {
        return std::unexpected(violation("ERROR text length " + std::to_string(length) + " but " +
                                         std::to_string(p.size() - 8) + " bytes follow"));
    }
    for (std::byte b : p.subspan(8)) {
        auto c = static_cast<char>(b);
        if (c < 0x20 || c > 0x7e) {
            return std::unexpected(violation("ERROR text has a non-printable byte"));
        }
        m.text += c;
    }
    return m;
}

std::string describe_error(std::span<const std::byte> payload) {
    auto error = decode_error(payload);
    if (!error) {
        return "a malformed ERROR (" + error.error().detail + ")";
    }
    return to_string(error->code) + (error->text.empty() ? "" : " (" + error->text + ")");
}

std::vector<std::byte> encode_ping(const Ping& m) {
    std::vector<std::byte> out(8);
    store_le<std::uint64_t>(out, 0, m.token);
    return out;
}

std::expected<Ping, FrameError> decode_ping(std::span<const std::byte> p) {
    if (auto ok = check_size(p, 8, "PING"); !ok) {
        return std::unexpected(ok.error());
    }
    return Ping{load_le<std::uint64_t>(p, 0)};
}

}  // namespace uffdm::transport
