// handshake_fuzz.cpp — libFuzzer target: hostile bytes against both handshake state machines.
#include <cstdint>
#include <cstdlib>
#include <span>

#include "transport/handshake.hpp"

namespace {

using namespace uffdm::transport;

const Secret& shared_secret() {
    static const Secret secret = [] {
        std::vector<std::byte> key(32, std::byte{0x42});
        return std::move(*Secret::from_bytes(key));
    }();
    return secret;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 1) {
        return 0;
    }
    // First byte: with or without a secret, and which side receives the bytes.
    bool with_secret = (data[0] & 1) != 0;
    bool as_server = (data[0] & 2) != 0;
    const Secret* secret = with_secret ? &shared_secret() : nullptr;
    std::span<const std::byte> input(reinterpret_cast<const std::byte*>(data + 1), size - 1);

    ServerHandshake server(
        {.secret = secret,
         .max_bulk_channels = 4,
         .may_join = [](std::uint64_t session, std::uint8_t) { return session == 1; },
         .new_session_id = [] { return std::uint64_t{1}; }});
    ClientHandshake client({.secret = secret, .role = Role::Urgent});
    (void)client.start();

    FrameDecoder decoder(64 * 1024);
    decoder.feed(input);
    for (;;) {
        auto next = decoder.next();
        if (!next || !next->has_value()) {
            break;
        }
        HandshakeStep step = as_server ? server.on_frame(**next) : client.on_frame(**next);
        // With a secret, no byte string an attacker can make without it may join, on either
        // side: the server must see the client's proof over its fresh nonce, and the client
        // the server's proof over its own (a client that joined a fake server would hand it
        // the guest's faults).
        if (with_secret && step.joined) {
            std::abort();
        }
        if (step.failed && step.joined) {
            std::abort();
        }
        if (step.failed) {
            break;
        }
    }
    return 0;
}
