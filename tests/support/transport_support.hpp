// transport_support.hpp — Test helpers for transport/: secrets from text, one-shot client joins.
#pragma once

#include <future>
#include <string>
#include <vector>

#include "transport/auth.hpp"
#include "transport/connection.hpp"

namespace uffdm::test {

inline transport::Secret secret_of(const std::string& text) {
    std::vector<std::byte> key;
    for (char c : text) {
        key.push_back(static_cast<std::byte>(c));
    }
    return *transport::Secret::from_bytes(key);
}

// Connects and handshakes on a private io_context, optionally sends bytes after joining, and
// returns the joined connection's facts (the connection is closed on return).
inline std::expected<transport::Joined, transport::Failure> join(
    const transport::Endpoint& endpoint, transport::ClientHandshakeConfig config,
    transport::LivenessOptions liveness = {}, std::vector<std::byte> then_send = {}) {
    using namespace transport;
    asio::io_context io;
    auto result = asio::co_spawn(
        io,
        [&]() -> asio::awaitable<std::expected<Joined, Failure>> {
            auto socket = co_await connect_to(endpoint, liveness);
            if (!socket) {
                co_return std::unexpected(socket.error());
            }
            auto connection = co_await client_handshake(std::move(*socket), config, liveness);
            if (!connection) {
                co_return std::unexpected(connection.error());
            }
            if (!then_send.empty()) {
                (void)co_await connection->write(then_send);
            }
            co_return connection->joined();
        },
        asio::use_future);
    io.run();
    return result.get();
}

}  // namespace uffdm::test
