// connection.cpp — Connecting, framed I/O, and the client handshake under a deadline.
#include "transport/connection.hpp"

#include <optional>

#include "transport/byte_order.hpp"

namespace uffdm::transport {

namespace {

// A socket that fails to read or write has lost its peer, whatever the errno (a reset, an
// abort by SOCK_DESTROY, an unreachable network): as the data paths say too. A protocol
// violation is bytes we refused, never an error from the kernel.
Failure peer_failure(const boost::system::error_code& ec, const char* doing) {
    return failure(Errc::PeerLost, std::string(doing) + ": " + ec.message());
}

}  // namespace

asio::awaitable<std::expected<Frame, Failure>> read_frame_from(Socket& socket,
                                                               FrameDecoder& decoder,
                                                               std::span<std::byte> scratch,
                                                               TlsSession* tls) {
    std::vector<std::byte> plain(tls != nullptr ? 16 * 1024 : 0);
    for (;;) {
        auto next = decoder.next();
        if (!next) {
            co_return std::unexpected(next.error());
        }
        if (next->has_value()) {
            co_return std::move(**next);
        }
        if (tls != nullptr) {
            // Records already received may hold the next frame: decrypt before reading more.
            long n = tls->decrypt(plain);
            if (!tls->output().empty()) {
                if (auto sent = co_await write_all(socket, {}, tls); !sent) {
                    co_return std::unexpected(sent.error());
                }
            }
            if (n < 0) {
                co_return std::unexpected(failure(Errc::ProtocolViolation, tls->error()));
            }
            if (n > 0) {
                decoder.feed(std::span(plain).first(static_cast<std::size_t>(n)));
                continue;
            }
        }
        boost::system::error_code ec;
        std::size_t n =
            co_await socket.async_read_some(asio::buffer(scratch.data(), scratch.size()),
                                            asio::redirect_error(asio::use_awaitable, ec));
        if (ec) {
            std::string doing = decoder.buffered() > 0
                                    ? "connection ended inside a frame (" +
                                          std::to_string(decoder.buffered()) + " bytes buffered)"
                                    : "reading a frame";
            co_return std::unexpected(peer_failure(ec, doing.c_str()));
        }
        if (tls != nullptr) {
            tls->feed(scratch.first(n));
        } else {
            decoder.feed(scratch.first(n));
        }
    }
}

asio::awaitable<std::expected<void, Failure>> write_all(Socket& socket,
                                                        std::span<const std::byte> bytes,
                                                        TlsSession* tls) {
    if (tls != nullptr) {
        if (!bytes.empty() && !tls->encrypt(bytes)) {
            co_return std::unexpected(failure(Errc::ProtocolViolation, tls->error()));
        }
        bytes = tls->output();
    }
    boost::system::error_code ec;
    co_await asio::async_write(socket, asio::buffer(bytes.data(), bytes.size()),
                               asio::redirect_error(asio::use_awaitable, ec));
    if (tls != nullptr) {
        tls->consume_output(bytes.size());
    }
    if (ec) {
        co_return std::unexpected(peer_failure(ec, "writing"));
    }
    co_return std::expected<void, Failure>{};
}

asio::awaitable<std::expected<void, Failure>> tls_handshake(Socket& socket, TlsSession& tls) {
    std::vector<std::byte> scratch(16 * 1024);
    bool first_read = true;
    for (;;) {
        TlsSession::Progress progress = tls.handshake();
        if (!tls.output().empty()) {
            auto sent = co_await write_all(socket, {}, &tls);
            if (!sent && progress != TlsSession::Progress::Failed) {
                co_return std::unexpected(sent.error());
            }
        }
        if (progress == TlsSession::Progress::Done) {
            co_return std::expected<void, Failure>{};
        }
        if (progress == TlsSession::Progress::Failed) {
            co_return std::unexpected(failure(Errc::PermissionDenied, tls.error()));
        }
        boost::system::error_code ec;
        std::size_t n =
            co_await socket.async_read_some(asio::buffer(scratch.data(), scratch.size()),
                                            asio::redirect_error(asio::use_awaitable, ec));
        if (ec) {
            co_return std::unexpected(peer_failure(ec, "during the TLS handshake"));
        }
        if (first_read && n >= sizeof kMagic &&
            load_le<std::uint32_t>(std::span<const std::byte>(scratch), 0) == kMagic) {
            // A plain frame where a TLS record belongs: one side has TLS and the other not. Say
            // so in words (in plain text, which the peer can read), not as a record error.
            if (tls.is_server()) {
                auto refusal = frame_of(
                    FrameType::Error,
                    ErrorMessage{
                        ErrorCode::AuthFailed,
                        "this server accepts only TLS 1.3 connections; give the client --tls-ca"});
                (void)co_await write_all(socket, refusal, nullptr);
                co_return std::unexpected(
                    failure(Errc::PermissionDenied,
                            "the client does not use TLS; this server requires it"));
            }
            co_return std::unexpected(
                failure(Errc::PermissionDenied,
                        "the server answered without TLS: it is not set up for TLS (give both "
                        "sides TLS, or neither)"));
        }
        first_read = false;
        tls.feed(std::span(scratch).first(n));
    }
}

asio::awaitable<std::expected<Frame, Failure>> Connection::read_frame() {
    return read_frame_from(socket_, decoder_, read_buffer_, tls_.get());
}

asio::awaitable<std::expected<void, Failure>> Connection::write(std::span<const std::byte> bytes) {
    if (tls_) {
        if (!tls_->encrypt(bytes)) {
            co_return std::unexpected(failure(Errc::ProtocolViolation, tls_->error()));
        }
        std::vector<std::byte> cipher(tls_->output().begin(), tls_->output().end());
        tls_->consume_output(cipher.size());
        co_return co_await write_plain(cipher);
    }
    co_return co_await write_plain(bytes);
}

asio::awaitable<std::expected<void, Failure>> Connection::write_plain(
    std::span<const std::byte> bytes) {
    std::size_t written = 0;
    while (written < bytes.size()) {
        // Each write_some must make progress before the stall deadline; a slow but moving
        // peer is fine, a stopped one is not.
        Deadline deadline(socket_, liveness_.stall_timeout);
        boost::system::error_code ec;
        std::size_t n = co_await socket_.async_write_some(
            asio::buffer(bytes.data() + written, bytes.size() - written),
            asio::redirect_error(asio::use_awaitable, ec));
        if (ec) {
            if (deadline.fired()) {
                co_return std::unexpected(failure(
                    Errc::PeerLost, "peer stopped reading: no progress for " +
                                        std::to_string(liveness_.stall_timeout.count()) +
                                        " ms with " + std::to_string(bytes.size() - written) +
                                        " bytes unsent"));
            }
            co_return std::unexpected(peer_failure(ec, "writing"));
        }
        written += n;
    }
    co_return std::expected<void, Failure>{};
}

namespace {

ConnectFailure connect_failure(const Endpoint& endpoint, const boost::system::error_code& ec) {
    namespace error = asio::error;
    bool cut = ec == error::connection_aborted || ec == error::connection_reset;
    return {
        failure(Errc::PeerLost, "cannot connect to " + endpoint.to_string() + ": " + ec.message()),
        cut};
}

}  // namespace

asio::awaitable<std::expected<Socket, ConnectFailure>> connect_to(const Endpoint& endpoint,
                                                                  const LivenessOptions& liveness) {
    auto executor = co_await asio::this_coro::executor;
    boost::system::error_code ec;
    if (endpoint.kind == Endpoint::Kind::Unix) {
        asio::local::stream_protocol::socket local(executor);
        co_await local.async_connect(asio::local::stream_protocol::endpoint(endpoint.path),
                                     asio::redirect_error(asio::use_awaitable, ec));
        if (ec) {
            co_return std::unexpected(connect_failure(endpoint, ec));
        }
        co_return Socket(std::move(local));
    }
    asio::ip::tcp::socket tcp(executor);
    boost::system::error_code literal;
    auto address = asio::ip::make_address(endpoint.host, literal);
    if (!literal) {
        // An address literal needs no resolver, and so no resolver thread: a destination that
        // drops its capabilities must still have one thread when it does.
        co_await tcp.async_connect({address, endpoint.port},
                                   asio::redirect_error(asio::use_awaitable, ec));
    } else {
        asio::ip::tcp::resolver resolver(executor);
        auto results =
            co_await resolver.async_resolve(endpoint.host, std::to_string(endpoint.port),
                                            asio::redirect_error(asio::use_awaitable, ec));
        if (ec) {
            co_return std::unexpected(ConnectFailure{failure(
                Errc::InvalidArgument, "cannot resolve " + endpoint.host + ": " + ec.message())});
        }
        co_await asio::async_connect(tcp, results, asio::redirect_error(asio::use_awaitable, ec));
    }
    if (ec) {
        co_return std::unexpected(connect_failure(endpoint, ec));
    }
    if (auto ok = apply_liveness(tcp.native_handle(), liveness); !ok) {
        co_return std::unexpected(ConnectFailure{
            failure(Errc::InvalidArgument, "socket options: " + ok.error().message())});
    }
    co_return Socket(std::move(tcp));
}

asio::awaitable<std::expected<Connection, Failure>> client_handshake(
    Socket socket, ClientHandshakeConfig config, LivenessOptions liveness,
    std::shared_ptr<TlsContext> tls_context) {
    Deadline deadline(socket, liveness.handshake_timeout);
    auto timed_out = [&](Failure f) {
        if (deadline.fired()) {
            f = failure(Errc::PeerLost, "handshake timed out after " +
                                            std::to_string(liveness.handshake_timeout.count()) +
                                            " ms");
        }
        return std::unexpected(std::move(f));
    };
    std::unique_ptr<TlsSession> tls;
    if (tls_context) {
        auto session = TlsSession::create(std::move(tls_context));
        if (!session) {
            co_return std::unexpected(session.error());
        }
        tls = std::move(*session);
        if (auto ok = co_await tls_handshake(socket, *tls); !ok) {
            co_return timed_out(ok.error());
        }
    }
    ClientHandshake handshake(config);
    FrameDecoder decoder(kMaxPayload);
    std::vector<std::byte> scratch(16 * 1024);
    std::vector<std::byte> out = handshake.start();
    for (;;) {
        if (!out.empty()) {
            if (auto sent = co_await write_all(socket, out, tls.get()); !sent) {
                // A server that refuses us may close before it reads what we send: its ERROR
                // then waits unread in our receive queue. Say what it said, not "Broken pipe".
                auto said = co_await read_frame_from(socket, decoder, scratch, tls.get());
                if (said && said->header.type == FrameType::Error) {
                    if (auto refused = handshake.on_frame(*said).failed) {
                        co_return std::unexpected(*refused);
                    }
                }
                co_return timed_out(
                    Failure{sent.error().code, "sending the handshake: " + sent.error().detail});
            }
        }
        auto frame = co_await read_frame_from(socket, decoder, scratch, tls.get());
        if (!frame) {
            co_return timed_out(frame.error());
        }
        HandshakeStep step = handshake.on_frame(*frame);
        if (step.failed) {
            co_return std::unexpected(*step.failed);
        }
        if (step.joined) {
            co_return Connection(std::move(socket), *step.joined, std::move(decoder), liveness,
                                 std::move(tls));
        }
        out = std::move(step.send);
    }
}

}  // namespace uffdm::transport
