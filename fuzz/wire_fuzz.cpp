// wire_fuzz.cpp — libFuzzer target: every decoder of the migration messages (protocol.md),
// version 1's, the live source's and compressed runs (expanded too), against one fixed guest
// layout.
#include <cstdint>
#include <cstdlib>
#include <span>

#include "migration/compression.hpp"
#include "migration/wire.hpp"

namespace {

using namespace uffdm::migration::wire;

const Layout& guest() {
    // Two regions: 256 pages of 4 KiB, 4 pages of 2 MiB.
    static const Layout layout{{{0, 4096, 1 << 20}, {1, 2 << 20, 8 << 20}}};
    return layout;
}

void same(const std::vector<std::byte>& encoded, std::span<const std::byte> payload) {
    if (encoded != std::vector<std::byte>(payload.begin(), payload.end())) {
        std::abort();  // accepted bytes that encoding would never produce
    }
}

// A decoded message must re-encode to exactly the bytes it came from.
template <typename Message>
void round_trip(const std::expected<Message, uffdm::transport::Failure>& decoded,
                std::span<const std::byte> payload) {
    if (decoded) {
        same(encode(*decoded), payload);
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) {
        return 0;
    }
    // The first byte picks the message (its type's low bits), the rest is its payload.
    std::span<const std::byte> p(reinterpret_cast<const std::byte*>(data) + 1, size - 1);
    switch (static_cast<MessageType>(0x40 + data[0] % 14)) {
        case MessageType::Layout:
            round_trip(decode_layout(p), p);
            break;
        case MessageType::Start:
            round_trip(decode_start(p), p);
            break;
        case MessageType::Request:
            round_trip(decode_request(p, guest()), p);
            break;
        case MessageType::Pages: {
            auto view = decode_pages(
                p, guest(), Start::kAcceptLz4 | Start::kAcceptZstd | Start::kAcceptZeroMap);
            if (view) {
                auto head = encode(view->header);
                same(std::vector<std::byte>(head.begin(), head.end()), p.first(kPagesHeaderSize));
                std::uint64_t page = guest().regions[view->header.region].page_size;
                std::uint64_t raw_bytes = view->header.count * page;
                bool raw = view->header.encoding == Encoding::Raw;
                bool packed = compressed(view->header.encoding);
                if ((packed ? view->data.empty() || view->data.size() >= raw_bytes
                            : view->data.size() != (raw ? raw_bytes : 0)) ||
                    kPagesHeaderSize + view->zero_map.size() + view->hashes.size() +
                            view->data.size() !=
                        p.size() ||
                    (!view->zero_map.empty() && !packed)) {
                    std::abort();
                }
                // An expanded run is exactly the run's pages, whatever the block said.
                static uffdm::migration::RunExpander expander;
                auto expanded = expander.expand(*view, guest());
                if (expanded && (expanded->header.encoding != Encoding::Raw && packed)) {
                    std::abort();
                }
                if (expanded && packed && expanded->data.size() != raw_bytes) {
                    std::abort();
                }
            }
            break;
        }
        case MessageType::StreamEnd:
            round_trip(decode_stream_end(p), p);
            break;
        case MessageType::Done:
            round_trip(decode_done(p), p);
            break;
        case MessageType::Stream:
            round_trip(decode_stream(p), p);
            break;
        case MessageType::Bitmap:
            round_trip(decode_bitmap(p, guest()), p);
            break;
        case MessageType::Resume:
            round_trip(decode_resume(p), p);
            break;
        case MessageType::RoundEnd:
            round_trip(decode_round_end(p), p);
            break;
        case MessageType::RoundDone:
            round_trip(decode_round_done(p), p);
            break;
        case MessageType::Discard:
            round_trip(decode_discard(p, guest()), p);
            break;
        case MessageType::Switchover:
            round_trip(decode_switchover(p), p);
            break;
        case MessageType::Running:
            round_trip(decode_running(p), p);
            break;
        case MessageType::Invalid:
            break;
    }
    return 0;
}
