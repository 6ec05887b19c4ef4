// session.cpp — Connecting the urgent connection, then the bulk connections that join it.
#include "transport/session.hpp"

#include <algorithm>

namespace uffdm::transport {

asio::awaitable<std::expected<Session, SessionFailure>> connect_session(SessionOptions options) {
    if (options.bulk_channels > kMaxBulkChannels) {
        co_return std::unexpected(SessionFailure{
            failure(Errc::InvalidArgument, "bulk channels " +
                                               std::to_string(options.bulk_channels) +
                                               " outside 0.." + std::to_string(kMaxBulkChannels)),
            false});
    }
    auto socket = co_await connect_to(options.endpoint, options.liveness);
    if (!socket) {
        // A connect cut on its way (reached) is a break to retry; a refusal is not.
        co_return std::unexpected(SessionFailure{socket.error(), socket.error().reached});
    }
    auto urgent = co_await client_handshake(
        std::move(*socket),
        {.secret = options.secret, .role = Role::Urgent, .max_version = options.max_version},
        options.liveness, options.tls);
    if (!urgent) {
        co_return std::unexpected(SessionFailure{urgent.error(), true});
    }
    std::uint64_t id = urgent->joined().session_id;
    std::size_t wanted =
        std::min<std::size_t>(options.bulk_channels, urgent->joined().max_bulk_channels);
    Session session{id, std::move(*urgent), {}};
    for (std::size_t index = 0; index < wanted; ++index) {
        auto bulk_socket = co_await connect_to(options.endpoint, options.liveness);
        if (!bulk_socket) {
            co_return std::unexpected(SessionFailure{bulk_socket.error(), true});
        }
        auto bulk = co_await client_handshake(std::move(*bulk_socket),
                                              {.secret = options.secret,
                                               .role = Role::Bulk,
                                               .session_id = id,
                                               .bulk_index = static_cast<std::uint8_t>(index),
                                               .max_version = options.max_version},
                                              options.liveness, options.tls);
        if (!bulk) {
            co_return std::unexpected(SessionFailure{
                {bulk.error().code,
                 "bulk connection " + std::to_string(index) + ": " + bulk.error().detail},
                true});
        }
        session.bulk.push_back(std::move(*bulk));
    }
    co_return session;
}

}  // namespace uffdm::transport
