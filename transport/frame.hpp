// frame.hpp — The transport's fixed-layout frame header: encode, decode and validate.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <expected>
#include <optional>
#include <span>
#include <string>
#include <system_error>
#include <vector>

#include "transport/failure.hpp"

namespace uffdm::transport {

// Every frame: a 16-byte little-endian header, then `length` payload bytes.
//   0  u32 magic     "UFMG"
//   4  u16 version   protocol version of this frame
//   6  u8  type      FrameType
//   7  u8  flags     reserved, must be 0
//   8  u32 length    payload bytes, at most kMaxPayload and the type's own bound
//  12  u32 reserved  must be 0
inline constexpr std::size_t kHeaderSize = 16;
inline constexpr std::uint32_t kMagic = 0x474d4655;  // bytes 'U' 'F' 'M' 'G'
inline constexpr std::uint16_t kMinVersion = 1;
inline constexpr std::uint16_t kMaxVersion = 4;
// The largest payload of any frame: a run of 2 MiB of pages plus its descriptor.
inline constexpr std::uint32_t kMaxPayload = (2U << 20) + 4096;

enum class FrameType : std::uint8_t {
    Invalid = 0,
    Hello = 1,      // client -> server: versions, role, session, client nonce
    Challenge = 2,  // server -> client: server nonce and the server's proof
    Response = 3,   // client -> server: the client's proof
    Accept = 4,     // server -> client: the connection is authenticated and joined
    Error = 5,      // either way: why the connection ends
    Ping = 6,
    Pong = 7,
    Goodbye = 8,  // orderly end of a connection
    // 0x40..0x7f belong to the layer above (migration/): bounded by kMaxPayload and passed up.
    FirstApplication = 0x40,
    LastApplication = 0x7f,
};

[[nodiscard]] bool is_application(FrameType type) noexcept;
[[nodiscard]] std::string to_string(FrameType type);

struct FrameHeader {
    std::uint16_t version = kMaxVersion;
    FrameType type = FrameType::Invalid;
    std::uint32_t length = 0;
};

// Why a frame was refused: the code (Errc::ProtocolViolation), and the field and value,
// e.g. "frame length 9000000 for APP(0x41) outside 0..2101248".
using FrameError = Failure;

[[nodiscard]] std::array<std::byte, kHeaderSize> encode_header(const FrameHeader& header) noexcept;
[[nodiscard]] std::expected<FrameHeader, FrameError> decode_header(
    std::span<const std::byte, kHeaderSize> bytes);

// The payload bound for each type (fixed sizes for control frames).
struct PayloadBound {
    std::uint32_t min = 0;
    std::uint32_t max = 0;
};
[[nodiscard]] PayloadBound payload_bound(FrameType type) noexcept;

// A whole frame, owning its payload.
struct Frame {
    FrameHeader header;
    std::vector<std::byte> payload;
};

// Header followed by payload, ready to send.
[[nodiscard]] std::vector<std::byte> encode_frame(FrameType type,
                                                  std::span<const std::byte> payload);

// Cuts a byte stream into validated frames. Feed it what arrives; take frames out. After the
// first error it stays failed: nothing past a bad frame is used.
class FrameDecoder {
  public:
    explicit FrameDecoder(std::uint32_t max_payload = kMaxPayload) : max_payload_(max_payload) {}

    void feed(std::span<const std::byte> bytes);
    // A frame, std::nullopt-like empty optional when more bytes are needed, or the error.
    [[nodiscard]] std::expected<std::optional<Frame>, FrameError> next();
    [[nodiscard]] std::size_t buffered() const noexcept { return buffer_.size() - consumed_; }
    [[nodiscard]] bool failed() const noexcept { return failed_; }
    // The bytes fed but not yet cut into frames (a peer may send its first frames right behind
    // the handshake); the decoder is empty afterwards.
    [[nodiscard]] std::vector<std::byte> take_buffered();

  private:
    std::vector<std::byte> buffer_;
    std::size_t consumed_ = 0;
    std::uint32_t max_payload_;
    bool failed_ = false;
    FrameError error_;
};

}  // namespace uffdm::transport
