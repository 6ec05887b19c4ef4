// frame_fuzz.cpp — libFuzzer target: the frame decoder and every control-message decoder.
#include <cstdint>
#include <cstdlib>
#include <span>

#include "transport/control.hpp"
#include "transport/frame.hpp"

namespace {

using namespace uffdm::transport;

// A decoded message must re-encode to exactly the bytes it came from: decoding accepts
// nothing that encoding would not produce.
template <typename Message>
void check_round_trip(const std::expected<Message, FrameError>& decoded,
                      std::span<const std::byte> payload) {
    if (decoded && encode(*decoded) != std::vector<std::byte>(payload.begin(), payload.end())) {
        std::abort();
    }
}

void decode_payload(const Frame& frame) {
    const auto& p = frame.payload;
    switch (frame.header.type) {
        case FrameType::Hello:
            check_round_trip(decode_hello(p), p);
            break;
        case FrameType::Challenge:
            check_round_trip(decode_challenge(p), p);
            break;
        case FrameType::Response:
            check_round_trip(decode_response(p), p);
            break;
        case FrameType::Accept:
            check_round_trip(decode_accept(p), p);
            break;
        case FrameType::Error:
            check_round_trip(decode_error(p), p);
            break;
        case FrameType::Ping:
        case FrameType::Pong:
            if (auto ping = decode_ping(p); ping && encode_ping(*ping) != p) {
                std::abort();
            }
            break;
        default:
            if (!is_application(frame.header.type) && frame.header.type != FrameType::Goodbye) {
                std::abort();  // the header decoder let an unknown type through
            }
            break;
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    // Feed in two pieces split by the first byte, so partial frames are exercised too.
    std::span<const std::byte> input(reinterpret_cast<const std::byte*>(data), size);
    std::size_t split = size == 0 ? 0 : static_cast<std::size_t>(data[0]) % (size + 1);
    FrameDecoder decoder(64 * 1024);
    decoder.feed(input.first(split));
    for (int pass = 0; pass < 2; ++pass) {
        for (;;) {
            auto next = decoder.next();
            if (!next || !next->has_value()) {
                break;
            }
            decode_payload(**next);
        }
        if (pass == 0) {
            decoder.feed(input.subspan(split));
        }
    }
    return 0;
}
