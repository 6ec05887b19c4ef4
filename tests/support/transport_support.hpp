// transport_support.hpp — Test helpers for transport/: secrets from text, one-shot client joins.
#pragma once

#include <future>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "transport/auth.hpp"
#include "transport/connection.hpp"
#include "transport/listener.hpp"

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

namespace uffdm::test {

// Two ends of one authenticated, joined connection: a real listener and a real client
// handshake on a private io_context, which lives as long as this object (the connections'
// sockets belong to it until a data path takes them). The client uses `secret` unless
// client_secret is given.
struct JoinedPair {
    transport::asio::io_context io;
    std::optional<transport::Connection> client;
    std::optional<transport::Connection> server;
    std::string error;
    // The client's own failure, if it failed, and the listener's verdict: a refusal is told
    // apart from a timeout (refused vs timed_out) and from a pair that never finished.
    std::optional<transport::Failure> client_failure;
    transport::ListenerStats server_stats;
};

inline std::unique_ptr<JoinedPair> joined_pair(
    const std::string& where = "tcp:127.0.0.1:0", const transport::Secret* secret = nullptr,
    std::shared_ptr<transport::TlsContext> server_tls = nullptr,
    std::shared_ptr<transport::TlsContext> client_tls = nullptr,
    std::optional<const transport::Secret*> client_secret = std::nullopt) {
    using namespace transport;
    auto pair = std::make_unique<JoinedPair>();
    ListenerOptions options;
    options.endpoint = *parse_endpoint(where);
    options.secret = secret;
    options.tls = std::move(server_tls);
    auto listener = Listener::open(
        pair->io, options, [p = pair.get()](Connection c) { p->server.emplace(std::move(c)); });
    if (!listener) {
        pair->error = listener.error().detail;
        return pair;
    }
    (*listener)->start();
    Endpoint remote = (*listener)->local_endpoint();
    asio::co_spawn(
        pair->io,
        [p = pair.get(), remote, secret = client_secret.value_or(secret),
         client_tls]() -> asio::awaitable<void> {
            auto socket = co_await connect_to(remote, {});
            if (!socket) {
                p->client_failure = socket.error();
                p->error = socket.error().detail;
                co_return;
            }
            auto c = co_await client_handshake(
                std::move(*socket), {.secret = secret, .role = Role::Urgent}, {}, client_tls);
            if (!c) {
                p->client_failure = c.error();
                p->error = c.error().detail;
                co_return;
            }
            p->client.emplace(std::move(*c));
        },
        asio::detached);
    // Until both joined, or the client failed and the listener has given its verdict on the
    // one connection (joined, refused or timed out).
    auto server_done = [&] {
        auto s = (*listener)->stats();
        return s.joined + s.refused + s.timed_out + s.refused_peers + s.shed >= 1;
    };
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!(pair->client && pair->server) && !(pair->client_failure && server_done()) &&
           std::chrono::steady_clock::now() < deadline) {
        pair->io.run_one_for(std::chrono::milliseconds(100));
    }
    (*listener)->stop();
    pair->io.poll();
    pair->server_stats = (*listener)->stats();
    if (pair->error.empty() && (!pair->client || !pair->server)) {
        pair->error = "the pair did not join within 10 s";
    }
    return pair;
}

}  // namespace uffdm::test
