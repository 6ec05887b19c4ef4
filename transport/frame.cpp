// frame.cpp — Header layout, per-type payload bounds and the streaming frame decoder.
#include "transport/frame.hpp"

#include <algorithm>
#include <cstring>
#include <optional>

#include "transport/byte_order.hpp"

namespace uffdm::transport {

namespace {

std::string hex(unsigned value) {
    static const char* digits = "0123456789abcdef";
    std::string out = "0x";
    bool started = false;
    for (int shift = 28; shift >= 0; shift -= 4) {
        unsigned d = (value >> shift) & 0xf;
        if (d != 0 || started || shift == 0) {
            out += digits[d];
            started = true;
        }
    }
    return out;
}

}  // namespace

bool is_application(FrameType type) noexcept {
    auto v = static_cast<unsigned>(type);
    return v >= static_cast<unsigned>(FrameType::FirstApplication) &&
           v <= static_cast<unsigned>(FrameType::LastApplication);
}

std::string to_string(FrameType type) {
    switch (type) {
        case FrameType::Hello:
            return "HELLO";
        case FrameType::Challenge:
            return "CHALLENGE";
        case FrameType::Response:
            return "RESPONSE";
        case FrameType::Accept:
            return "ACCEPT";
        case FrameType::Error:
            return "ERROR";
        case FrameType::Ping:
            return "PING";
        case FrameType::Pong:
            return "PONG";
        case FrameType::Goodbye:
            return "GOODBYE";
        default:
            break;
    }
    return is_application(type) ? "APP(" + hex(static_cast<unsigned>(type)) + ")"
                                : "type " + hex(static_cast<unsigned>(type));
}

PayloadBound payload_bound(FrameType type) noexcept {
    switch (type) {
        case FrameType::Hello:
            return {64, 64};
        case FrameType::Challenge:
            return {64, 64};
        case FrameType::Response:
            return {32, 32};
        case FrameType::Accept:
            return {16, 16};
        case FrameType::Error:
            return {8, 8 + 256};
        case FrameType::Ping:
        case FrameType::Pong:
            return {8, 8};
        case FrameType::Goodbye:
            return {0, 0};
        default:
            break;
    }
    if (is_application(type)) {
        return {0, kMaxPayload};
    }
    return {1, 0};  // empty range: the type itself is invalid
}

std::array<std::byte, kHeaderSize> encode_header(const FrameHeader& header) noexcept {
    std::array<std::byte, kHeaderSize> out{};
    store_le<std::uint32_t>(out, 0, kMagic);
    store_le<std::uint16_t>(out, 4, header.version);
    store_le<std::uint8_t>(out, 6, static_cast<std::uint8_t>(header.type));
    store_le<std::uint8_t>(out, 7, 0);
    store_le<std::uint32_t>(out, 8, header.length);
    store_le<std::uint32_t>(out, 12, 0);
    return out;
}

std::expected<FrameHeader, FrameError> decode_header(std::span<const std::byte, kHeaderSize> b) {
    auto magic = load_le<std::uint32_t>(b, 0);
    if (magic != kMagic) {
        return std::unexpected(violation("frame magic " + hex(magic) + " is not " + hex(kMagic) +
                                         " (not a uffd-migrate peer?)"));
    }
    FrameHeader h;
    h.version = load_le<std::uint16_t>(b, 4);
    if (h.version < kMinVersion || h.version > kMaxVersion) {
        return std::unexpected(violation("frame version " + std::to_string(h.version) +
                                         " outside supported " + std::to_string(kMinVersion) +
                                         ".." + std::to_string(kMaxVersion)));
    }
    h.type = static_cast<FrameType>(load_le<std::uint8_t>(b, 6));
    auto flags = load_le<std::uint8_t>(b, 7);
    if (flags != 0) {
        return std::unexpected(violation("frame flags " + hex(flags) + " have reserved bits set"));
    }
    h.length = load_le<std::uint32_t>(b, 8);
    auto reserved = load_le<std::uint32_t>(b, 12);
    if (reserved != 0) {
        return std::unexpected(violation("frame reserved field " + hex(reserved) + " is not 0"));
    }
    PayloadBound bound = payload_bound(h.type);
    if (bound.min > bound.max) {
        return std::unexpected(
            violation("frame type " + hex(static_cast<unsigned>(h.type)) + " is unknown"));
    }
    if (h.length < bound.min || h.length > bound.max) {
        return std::unexpected(
            violation("frame length " + std::to_string(h.length) + " for " + to_string(h.type) +
                      " outside " + std::to_string(bound.min) + ".." + std::to_string(bound.max)));
    }
    return h;
}

std::vector<std::byte> encode_frame(FrameType type, std::span<const std::byte> payload) {
    auto header = encode_header({.version = kMinVersion,
                                 .type = type,
                                 .length = static_cast<std::uint32_t>(payload.size())});
    std::vector<std::byte> out(kHeaderSize + payload.size());
    std::memcpy(out.data(), header.data(), kHeaderSize);
    if (!payload.empty()) {
        std::memcpy(out.data() + kHeaderSize, payload.data(), payload.size());
    }
    return out;
}

void FrameDecoder::feed(std::span<const std::byte> bytes) {
    if (failed_) {
        return;
    }
    // Compact before growing so the buffer stays bounded by one frame plus one read.
    if (consumed_ > 0 && consumed_ == buffer_.size()) {
        buffer_.clear();
        consumed_ = 0;
    } else if (consumed_ > (1U << 16)) {
        buffer_.erase(buffer_.begin(), buffer_.begin() + static_cast<std::ptrdiff_t>(consumed_));
        consumed_ = 0;
    }
    buffer_.insert(buffer_.end(), bytes.begin(), bytes.end());
}

std::vector<std::byte> FrameDecoder::take_buffered() {
    std::vector<std::byte> rest(buffer_.begin() + static_cast<std::ptrdiff_t>(consumed_),
                                buffer_.end());
    buffer_.clear();
    consumed_ = 0;
    return rest;
}

std::expected<std::optional<Frame>, FrameError> FrameDecoder::next() {
    if (failed_) {
        return std::unexpected(error_);
    }
    std::span<const std::byte> pending(buffer_.data() + consumed_, buffer_.size() - consumed_);
    if (pending.size() < kHeaderSize) {
        return std::optional<Frame>{};
    }
    auto header = decode_header(pending.first<kHeaderSize>());
    if (header && header->length > max_payload_) {
        header = std::unexpected(violation("frame length " + std::to_string(header->length) +
                                           " exceeds this connection's limit " +
                                           std::to_string(max_payload_)));
    }
    if (!header) {
        failed_ = true;
        error_ = header.error();
        return std::unexpected(error_);
    }
    if (pending.size() < kHeaderSize + header->length) {
        return std::optional<Frame>{};
    }
    Frame frame{*header, {}};
    auto body = pending.subspan(kHeaderSize, header->length);
    frame.payload.assign(body.begin(), body.end());
    consumed_ += kHeaderSize + header->length;
    return std::optional<Frame>{std::move(frame)};
}

}  // namespace uffdm::transport
