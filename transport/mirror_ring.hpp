// mirror_ring.hpp — A receive ring mapped twice back to back, so every frame in it is contiguous.
#pragma once

#include <cstddef>
#include <cstdint>
#include <expected>
#include <span>

#include "transport/failure.hpp"

namespace uffdm::transport {

// The same memfd pages are mapped at [base, base+capacity) and [base+capacity, base+2*capacity).
// Bytes written past the end of the first view appear at the start of it, so the free space
// and any run of buffered bytes are always one contiguous span: a frame that wraps is read,
// validated and handed to UFFDIO_COPY in place, with no bounce copy.
//
// Single producer (the receive into free_space()), single consumer; not thread-safe. The
// consumer has two cursors: what it has parsed (consumed()) and what it no longer needs
// (released()): a frame handed on and held stays in the ring, unwritten, until released.
class MirrorRing {
  public:
    // capacity is rounded up to the page size.
    [[nodiscard]] static std::expected<MirrorRing, Failure> create(std::size_t capacity);

    MirrorRing(MirrorRing&& other) noexcept;
    MirrorRing& operator=(MirrorRing&& other) noexcept;
    MirrorRing(const MirrorRing&) = delete;
    MirrorRing& operator=(const MirrorRing&) = delete;
    ~MirrorRing();

    [[nodiscard]] std::size_t capacity() const noexcept { return capacity_; }
    [[nodiscard]] std::size_t size() const noexcept {
        return static_cast<std::size_t>(tail_ - head_);
    }
    [[nodiscard]] bool full() const noexcept { return size() == capacity_; }

    // Where the next received bytes go: everything not yet buffered, contiguous.
    [[nodiscard]] std::span<std::byte> free_space() const noexcept;
    // The bytes received and not yet consumed, contiguous.
    [[nodiscard]] std::span<const std::byte> data() const noexcept;
    void produced(std::size_t bytes) noexcept { tail_ += bytes; }
    // Parsed: data() starts after them. Their space is free again once released.
    void consumed(std::size_t bytes) noexcept { parsed_ += bytes; }
    // Bytes produced since creation up to the end of what is parsed: a position for released().
    [[nodiscard]] std::uint64_t parsed() const noexcept { return parsed_; }
    // Every byte before this position (at most parsed()) may be written over again.
    void released(std::uint64_t position) noexcept { head_ = position; }

    // Both views, for registering with io_uring as one fixed buffer.
    [[nodiscard]] std::span<std::byte> whole_mapping() const noexcept {
        return {base_, 2 * capacity_};
    }

  private:
    MirrorRing(std::byte* base, std::size_t capacity) noexcept : base_(base), capacity_(capacity) {}
    void unmap() noexcept;

    std::byte* base_ = nullptr;
    std::size_t capacity_ = 0;
    std::uint64_t head_ = 0;    // bytes released since creation
    std::uint64_t parsed_ = 0;  // bytes consumed (parsed) since creation
    std::uint64_t tail_ = 0;    // bytes produced since creation
};

}  // namespace uffdm::transport
