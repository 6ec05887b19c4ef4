// control.hpp — The transport's control messages (handshake, error, ping): layout and checks.
#pragma once

#include <array>
#include <cstdint>
#include <expected>
#include <span>
#include <string>
#include <vector>

#include "transport/frame.hpp"

namespace uffdm::transport {

inline constexpr std::size_t kNonceSize = 32;
inline constexpr std::size_t kProofSize = 32;  // HMAC-SHA256
inline constexpr std::size_t kMaxBulkChannels = 16;
inline constexpr std::size_t kMaxErrorText = 256;

using Nonce = std::array<std::byte, kNonceSize>;
using Proof = std::array<std::byte, kProofSize>;

enum class Role : std::uint8_t { Invalid = 0, Urgent = 1, Bulk = 2 };
enum class AuthMode : std::uint8_t { Invalid = 0, None = 1, HmacSha256 = 2 };

[[nodiscard]] std::string to_string(Role role);
[[nodiscard]] std::string to_string(AuthMode mode);

// HELLO (64 bytes): u16 min_version, u16 max_version, u8 role, u8 bulk_index, u8 auth_mode,
// u8 reserved, u64 session_id, 32 bytes client nonce, 16 reserved bytes.
// An urgent connection opens a session (session_id 0); bulk connections join one.
struct Hello {
    std::uint16_t min_version = kMinVersion;
    std::uint16_t max_version = kMaxVersion;
    Role role = Role::Invalid;
    std::uint8_t bulk_index = 0;
    AuthMode auth = AuthMode::Invalid;
    std::uint64_t session_id = 0;
    Nonce client_nonce{};
};

// CHALLENGE (64 bytes): server nonce, then the server's proof over the client nonce.
struct Challenge {
    Nonce server_nonce{};
    Proof server_proof{};
};

// RESPONSE (32 bytes): the client's proof over the server nonce.
struct Response {
    Proof client_proof{};
};

// ACCEPT (16 bytes): u64 session_id, u16 version, u8 max_bulk_channels, 5 reserved bytes.
struct Accept {
    std::uint64_t session_id = 0;
    std::uint16_t version = kMaxVersion;
    std::uint8_t max_bulk_channels = 0;
};

enum class ErrorCode : std::uint32_t {
    Invalid = 0,
    BadFrame = 1,
    VersionMismatch = 2,
    AuthFailed = 3,
    UnknownSession = 4,
    Busy = 5,
    Timeout = 6,
    Internal = 7,
    Shutdown = 8,
};
[[nodiscard]] std::string to_string(ErrorCode code);

// ERROR (8..264 bytes): u32 code, u32 text length, then printable ASCII text.
struct ErrorMessage {
    ErrorCode code = ErrorCode::Invalid;
    std::string text;
};

// What an ERROR payload says, for a message: "busy (this source is ...)", or why it is
// malformed.
[[nodiscard]] std::string describe_error(std::span<const std::byte> payload);

// PING / PONG (8 bytes): u64 token echoed back.
struct Ping {
    std::uint64_t token = 0;
};

[[nodiscard]] std::vector<std::byte> encode(const Hello& m);
[[nodiscard]] std::vector<std::byte> encode(const Challenge& m);
[[nodiscard]] std::vector<std::byte> encode(const Response& m);
[[nodiscard]] std::vector<std::byte> encode(const Accept& m);
[[nodiscard]] std::vector<std::byte> encode(const ErrorMessage& m);
[[nodiscard]] std::vector<std::byte> encode_ping(const Ping& m);

[[nodiscard]] std::expected<Hello, FrameError> decode_hello(std::span<const std::byte> payload);
[[nodiscard]] std::expected<Challenge, FrameError> decode_challenge(
    std::span<const std::byte> payload);
[[nodiscard]] std::expected<Response, FrameError> decode_response(
    std::span<const std::byte> payload);
[[nodiscard]] std::expected<Accept, FrameError> decode_accept(std::span<const std::byte> payload);
[[nodiscard]] std::expected<ErrorMessage, FrameError> decode_error(
    std::span<const std::byte> payload);
[[nodiscard]] std::expected<Ping, FrameError> decode_ping(std::span<const std::byte> payload);

// A whole frame for each message (header + payload).
template <typename Message>
[[nodiscard]] std::vector<std::byte> frame_of(FrameType type, const Message& m) {
    return encode_frame(type, encode(m));
}

}  // namespace uffdm::transport
