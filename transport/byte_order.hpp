// byte_order.hpp — Little-endian loads and stores on byte spans, independent of the host.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace uffdm::transport {

template <typename T>
[[nodiscard]] constexpr T load_le(std::span<const std::byte> bytes, std::size_t offset) noexcept {
    T value = 0;
    for (std::size_t i = 0; i < sizeof(T); ++i) {
        value |= static_cast<T>(static_cast<T>(bytes[offset + i]) << (8 * i));
    }
    return value;
}

template <typename T>
constexpr void store_le(std::span<std::byte> bytes, std::size_t offset, T value) noexcept {
    for (std::size_t i = 0; i < sizeof(T); ++i) {
        bytes[offset + i] = static_cast<std::byte>((value >> (8 * i)) & 0xff);
    }
}

}  // namespace uffdm::transport
