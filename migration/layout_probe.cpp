// layout_probe.cpp — One urgent connection, one LAYOUT frame, goodbye.
#include "migration/layout_probe.hpp"

#include <optional>

#include "transport/connection.hpp"

namespace uffdm::migration {

std::expected<wire::Layout, transport::Failure> probe_layout(
    const transport::SessionOptions& options) {
    namespace asio = transport::asio;
    asio::io_context io;
    std::optional<std::expected<wire::Layout, transport::Failure>> result;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
            auto socket = co_await transport::connect_to(options.endpoint, options.liveness);
            if (!socket) {
                result.emplace(std::unexpected(socket.error()));
                co_return;
            }
            auto connection = co_await transport::client_handshake(
                std::move(*socket), {.secret = options.secret, .role = transport::Role::Urgent},
                options.liveness, options.tls);
            if (!connection) {
                result.emplace(std::unexpected(connection.error()));
                co_return;
            }
            transport::Deadline deadline(connection->socket(), options.liveness.handshake_timeout);
            auto frame = co_await connection->read_frame();
            if (!frame) {
                result.emplace(std::unexpected(frame.error()));
                co_return;
            }
            if (frame->header.type != wire::frame_type(wire::MessageType::Layout)) {
                result.emplace(std::unexpected(transport::failure(
                    Errc::ProtocolViolation, "the source's first message is " +
                                                 transport::to_string(frame->header.type) +
                                                 ", not LAYOUT")));
                co_return;
            }
            result.emplace(wire::decode_layout(frame->payload));
        },
        asio::detached);
    io.run_for(options.liveness.handshake_timeout * 3);
    if (!result) {
        return std::unexpected(transport::failure(
            Errc::PeerLost, "no layout from " + options.endpoint.to_string() + " within " +
                                std::to_string(3 * options.liveness.handshake_timeout.count()) +
                                " ms"));
    }
    return *result;
}

}  // namespace uffdm::migration
