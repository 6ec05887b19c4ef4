// listener.cpp — The accept loop, the server handshake under a deadline, the session table.
#include "transport/listener.hpp"

#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

namespace uffdm::transport {

Listener::Listener(asio::io_context& io, ListenerOptions options, OnJoined on_joined)
    : io_(io), options_(std::move(options)), on_joined_(std::move(on_joined)), acceptor_(io) {}

std::expected<std::shared_ptr<Listener>, Failure> Listener::open(asio::io_context& io,
                                                                 ListenerOptions options,
                                                                 OnJoined on_joined) {
    const Endpoint where = options.endpoint;  // a copy: options is moved below
    bool clients_authenticated =
        options.secret != nullptr || (options.tls && options.tls->verifies_peer());
    if (!clients_authenticated && !where.is_loopback() && !options.insecure) {
        return std::unexpected(failure(
            Errc::PermissionDenied,
            "refusing to listen on " + where.to_string() +
                " without authenticating clients: anyone who can reach it could read or write "
                "guest memory (give a token file, or TLS with a CA for client certificates, or "
                "--insecure on a network you trust)"));
    }
    if (options.tls && options.tls->side() != TlsContext::Side::Server) {
        return std::unexpected(
            failure(Errc::InvalidArgument, "the listener's TLS context is a client's"));
    }
    std::shared_ptr<Listener> self(new Listener(io, std::move(options), std::move(on_joined)));
    boost::system::error_code ec;
    asio::generic::stream_protocol::endpoint bind_to;
    if (where.kind == Endpoint::Kind::Unix) {
        struct stat st {};
        // A socket file left by a previous run would make bind fail; nothing else is removed.
        if (::lstat(where.path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) {
            ::unlink(where.path.c_str());
        }
        bind_to = asio::local::stream_protocol::endpoint(where.path);
    } else {
        asio::ip::tcp::resolver resolver(io);
        auto results = resolver.resolve(where.host, std::to_string(where.port),
                                        asio::ip::tcp::resolver::passive, ec);
        if (ec || results.empty()) {
            return std::unexpected(failure(Errc::InvalidArgument,
                                           "cannot resolve " + where.host + ": " + ec.message()));
        }
        bind_to = results.begin()->endpoint();
    }
    auto& acceptor = self->acceptor_;
    acceptor.open(bind_to.protocol(), ec);
    if (!ec && where.kind == Endpoint::Kind::Tcp) {
        acceptor.set_option(asio::socket_base::reuse_address(true), ec);
    }
    const mode_t mode = self->options_.unix_mode & 0777;
    if (!ec && where.kind == Endpoint::Kind::Unix &&
        ::fchmod(acceptor.native_handle(), mode) != 0) {
        // bind(2) creates the socket file with the socket inode's mode less the umask: set
        // first, the file never exists with a wider mode, whatever the umask.
        ec.assign(errno, boost::system::system_category());
    }
    if (!ec) {
        acceptor.bind(bind_to, ec);
    }
    if (!ec && where.kind == Endpoint::Kind::Unix && ::chmod(where.path.c_str(), mode) != 0) {
        // Exactly the mode asked for: the umask may have taken bits the caller wanted.
        ec.assign(errno, boost::system::system_category());
    }
    if (!ec) {
        acceptor.listen(asio::socket_base::max_listen_connections, ec);
    }
    if (ec) {
        return std::unexpected(failure(
            Errc::InvalidArgument, "cannot listen on " + where.to_string() + ": " + ec.message()));
    }
    self->local_ = where;
    if (where.kind == Endpoint::Kind::Tcp) {
        auto bound = acceptor.local_endpoint();
        asio::ip::tcp::endpoint tcp;
        std::memcpy(tcp.data(), bound.data(), bound.size());
        self->local_.port = tcp.port();
    }
    return self;
}

void Listener::start() {
    asio::co_spawn(
        io_, [self = shared_from_this()] { return self->accept_loop(); }, asio::detached);
}

void Listener::stop() {
    asio::post(io_, [self = shared_from_this()] {
        boost::system::error_code ignored;
        self->acceptor_.close(ignored);
    });
}

void Listener::end_session(std::uint64_t session_id) {
    asio::post(io_, [self = shared_from_this(), session_id] { self->sessions_.erase(session_id); });
}

ListenerStats Listener::stats() const {
    return {counters_.accepted.load(),      counters_.joined.load(),    counters_.refused.load(),
            counters_.refused_peers.load(), counters_.timed_out.load(), counters_.shed.load()};
}

std::uint64_t Listener::new_session_id() {
    for (;;) {
        Nonce random = fresh_nonce();
        std::uint64_t id = 0;
        std::memcpy(&id, random.data(), sizeof id);
        if (id != 0 && !sessions_.contains(id)) {
            return id;
        }
    }
}

asio::awaitable<void> Listener::accept_loop() {
    auto self = shared_from_this();
    for (;;) {
        boost::system::error_code ec;
        Socket socket =
            co_await acceptor_.async_accept(asio::redirect_error(asio::use_awaitable, ec));
        if (ec == asio::error::operation_aborted || !acceptor_.is_open()) {
            co_return;
        }
        if (ec) {
            continue;  // EMFILE, ECONNABORTED...: keep serving the others
        }
        counters_.accepted++;
        if (pending_ >= options_.max_pending_handshakes) {
            counters_.shed++;
            socket.close(ec);
            continue;
        }
        if (local_.kind == Endpoint::Kind::Tcp) {
            (void)apply_liveness(socket.native_handle(), options_.liveness);
        } else if (!peer_allowed(socket)) {
            counters_.refused_peers++;
            socket.close(ec);
            continue;
        }
        ++pending_;
        asio::co_spawn(io_, handshake(std::move(socket)), asio::detached);
    }
}

bool Listener::peer_allowed(Socket& socket) {
    ucred peer{};
    socklen_t length = sizeof peer;
    if (::getsockopt(socket.native_handle(), SOL_SOCKET, SO_PEERCRED, &peer, &length) != 0) {
        return false;
    }
    const auto& allowed = options_.allowed_uids;
    if (peer.uid == ::geteuid() || peer.uid == 0 ||
        std::find(allowed.begin(), allowed.end(), peer.uid) != allowed.end()) {
        return true;
    }
    // Told why, without waiting: a refused peer must not hold the accept loop.
    auto refusal =
        frame_of(FrameType::Error,
                 ErrorMessage{ErrorCode::AuthFailed,
                              "uid " + std::to_string(peer.uid) + " may not connect to " +
                                  local_.to_string() + " (allowed: uid " +
                                  std::to_string(::geteuid()) + ", root and --allow-uid)"});
    (void)::send(socket.native_handle(), refusal.data(), refusal.size(),
                 MSG_DONTWAIT | MSG_NOSIGNAL);
    return false;
}

asio::awaitable<void> Listener::handshake(Socket socket) {
    auto self = shared_from_this();
    std::optional<Connection> joined;
    {
        Deadline deadline(socket, options_.liveness.handshake_timeout);
        ServerHandshake server({.secret = options_.secret,
                                .max_bulk_channels = options_.max_bulk_channels,
                                .may_join =
                                    [this](std::uint64_t id, std::uint8_t index) {
                                        auto it = sessions_.find(id);
                                        return it != sessions_.end() &&
                                               (it->second & (1U << index)) == 0;
                                    },
                                .new_session_id = [this] { return new_session_id(); }});
        std::unique_ptr<TlsSession> tls;
        bool tls_failed = false;
        if (options_.tls) {
            auto session = TlsSession::create(options_.tls);
            tls_failed = !session || !co_await tls_handshake(socket, **session);
            if (session) {
                tls = std::move(*session);
            }
        }
        FrameDecoder decoder(4096);  // nothing in a handshake is larger
        std::vector<std::byte> scratch(16 * 1024);
        while (!tls_failed) {
            auto frame = co_await read_frame_from(socket, decoder, scratch, tls.get());
            HandshakeStep step;
            if (frame) {
                step = server.on_frame(*frame);
            } else {
                step.failed = frame.error();
                if (frame.error().code == Errc::ProtocolViolation) {
                    step.send = frame_of(FrameType::Error,
                                         ErrorMessage{ErrorCode::BadFrame, frame.error().detail});
                }
            }
            if (!step.send.empty()) {
                (void)co_await write_all(socket, step.send, tls.get());
            }
            if (step.failed) {
                (deadline.fired() ? counters_.timed_out : counters_.refused)++;
                break;
            }
            if (step.joined) {
                if (step.joined->role == Role::Urgent) {
                    sessions_[step.joined->session_id] = 0;
                } else {
                    sessions_[step.joined->session_id] |= 1U << step.joined->bulk_index;
                }
                counters_.joined++;
                joined.emplace(std::move(socket), *step.joined, std::move(decoder),
                               options_.liveness, std::move(tls));
                break;
            }
        }
        if (tls_failed) {
            (deadline.fired() ? counters_.timed_out : counters_.refused)++;
        }
    }
    --pending_;
    if (joined) {
        on_joined_(std::move(*joined));
    }
}

}  // namespace uffdm::transport
