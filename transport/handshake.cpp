// handshake.cpp — Server and client handshake transitions, every field checked before use.
#include "transport/handshake.hpp"

#include <algorithm>

namespace uffdm::transport {

namespace {

AuthMode mode_of(const Secret* secret) {
    return secret != nullptr ? AuthMode::HmacSha256 : AuthMode::None;
}

std::string peer_error_text(const Frame& frame) {
    return "peer refused: " + describe_error(frame.payload);
}

}  // namespace

HandshakeStep ServerHandshake::fail(ErrorCode code, const std::string& to_peer,
                                    std::string detail) {
    state_ = State::Done;
    HandshakeStep step;
    step.send = frame_of(FrameType::Error, ErrorMessage{code, to_peer});
    Errc errc = code == ErrorCode::AuthFailed       ? Errc::PermissionDenied
                : code == ErrorCode::UnknownSession ? Errc::PermissionDenied
                                                    : Errc::ProtocolViolation;
    step.failed = failure(errc, std::move(detail));
    return step;
}

HandshakeStep ServerHandshake::on_frame(const Frame& frame) {
    switch (state_) {
        case State::AwaitHello:
            return on_hello(frame);
        case State::AwaitResponse:
            return on_response(frame);
        case State::Done:
            break;
    }
    return fail(ErrorCode::BadFrame, "handshake already finished",
                "frame " + to_string(frame.header.type) + " after the handshake finished");
}

HandshakeStep ServerHandshake::on_hello(const Frame& frame) {
    if (frame.header.type != FrameType::Hello) {
        return fail(ErrorCode::BadFrame, "expected HELLO",
                    "expected HELLO, got " + to_string(frame.header.type));
    }
    auto hello = decode_hello(frame.payload);
    if (!hello) {
        return fail(ErrorCode::BadFrame, hello.error().detail, hello.error().detail);
    }
    std::uint16_t low = std::max(hello->min_version, kMinVersion);
    std::uint16_t high = std::min(hello->max_version, kMaxVersion);
    if (low > high) {
        std::string text = "client speaks versions " + std::to_string(hello->min_version) + ".." +
                           std::to_string(hello->max_version) + ", server " +
                           std::to_string(kMinVersion) + ".." + std::to_string(kMaxVersion);
        return fail(ErrorCode::VersionMismatch, text, text);
    }
    version_ = high;
    if (hello->auth != mode_of(config_.secret)) {
        std::string text = "client authenticates with " + to_string(hello->auth) +
                           ", server requires " + to_string(mode_of(config_.secret));
        return fail(ErrorCode::AuthFailed, text, text);
    }
    hello_ = *hello;
    server_nonce_ = fresh_nonce();
    Challenge challenge{server_nonce_, {}};
    if (config_.secret != nullptr) {
        challenge.server_proof = server_proof(*config_.secret, hello_, server_nonce_);
    }
    state_ = State::AwaitResponse;
    return HandshakeStep{frame_of(FrameType::Challenge, challenge), std::nullopt, std::nullopt};
}

HandshakeStep ServerHandshake::on_response(const Frame& frame) {
    if (frame.header.type != FrameType::Response) {
        return fail(ErrorCode::BadFrame, "expected RESPONSE",
                    "expected RESPONSE, got " + to_string(frame.header.type));
    }
    auto response = decode_response(frame.payload);
    if (!response) {
        return fail(ErrorCode::BadFrame, response.error().detail, response.error().detail);
    }
    if (config_.secret != nullptr &&
        !proofs_equal(response->client_proof,
                      client_proof(*config_.secret, hello_, server_nonce_))) {
        // The peer learns only that it failed, not why.
        return fail(ErrorCode::AuthFailed, "authentication failed",
                    "client proof does not match: wrong secret, or a replayed handshake");
    }
    Joined joined{.role = hello_.role,
                  .session_id = hello_.session_id,
                  .bulk_index = hello_.bulk_index,
                  .version = version_,
                  .max_bulk_channels = config_.max_bulk_channels};
    if (hello_.role == Role::Bulk) {
        if (hello_.bulk_index >= config_.max_bulk_channels || !config_.may_join ||
            !config_.may_join(hello_.session_id, hello_.bulk_index)) {
            return fail(ErrorCode::UnknownSession, "no such session or bulk slot",
                        "bulk connection for unknown session " + std::to_string(hello_.session_id) +
                            " or taken index " + std::to_string(hello_.bulk_index));
        }
    } else {
        joined.session_id = config_.new_session_id ? config_.new_session_id() : 0;
        if (joined.session_id == 0) {
            return fail(ErrorCode::Busy, "no session available", "no session id could be issued");
        }
    }
    state_ = State::Done;
    Accept accept{joined.session_id, joined.version, joined.max_bulk_channels};
    return HandshakeStep{frame_of(FrameType::Accept, accept), joined, std::nullopt};
}

std::vector<std::byte> ClientHandshake::start() {
    hello_ = Hello{.min_version = kMinVersion,
                   .max_version = config_.max_version,
                   .role = config_.role,
                   .bulk_index = config_.role == Role::Bulk ? config_.bulk_index : std::uint8_t{0},
                   .auth = mode_of(config_.secret),
                   .session_id = config_.role == Role::Bulk ? config_.session_id : 0,
                   .client_nonce = fresh_nonce()};
    state_ = State::AwaitChallenge;
    return frame_of(FrameType::Hello, hello_);
}

HandshakeStep ClientHandshake::fail(std::string detail, Errc code) {
    state_ = State::Done;
    HandshakeStep step;
    step.failed = failure(code, std::move(detail));
    return step;
}

HandshakeStep ClientHandshake::on_frame(const Frame& frame) {
    if (frame.header.type == FrameType::Error) {
        auto text = peer_error_text(frame);
        auto error = decode_error(frame.payload);
        if (error && error->code == ErrorCode::UnknownSession) {
            // Our session ids come from the server's own ACCEPT: one it no longer knows is a
            // session it ended (its urgent connection broke before this one joined), the same as
            // a break, not a refusal of us; the client makes a new session.
            return fail(text + " (the source ended the session this connection joins)",
                        Errc::PeerLost);
        }
        bool refused = error && error->code == ErrorCode::AuthFailed;
        return fail(text, refused ? Errc::PermissionDenied : Errc::ProtocolViolation);
    }
    if (state_ == State::AwaitChallenge) {
        if (frame.header.type != FrameType::Challenge) {
            return fail("expected CHALLENGE, got " + to_string(frame.header.type));
        }
        auto challenge = decode_challenge(frame.payload);
        if (!challenge) {
            return fail(challenge.error().detail);
        }
        Response response{};
        if (config_.secret != nullptr) {
            if (!proofs_equal(challenge->server_proof,
                              server_proof(*config_.secret, hello_, challenge->server_nonce))) {
                return fail("server proof does not match: the server does not hold our secret",
                            Errc::PermissionDenied);
            }
            response.client_proof = client_proof(*config_.secret, hello_, challenge->server_nonce);
        }
        state_ = State::AwaitAccept;
        return HandshakeStep{frame_of(FrameType::Response, response), std::nullopt, std::nullopt};
    }
    if (state_ == State::AwaitAccept) {
        if (frame.header.type != FrameType::Accept) {
            return fail("expected ACCEPT, got " + to_string(frame.header.type));
        }
        auto accept = decode_accept(frame.payload);
        if (!accept) {
            return fail(accept.error().detail);
        }
        if (config_.role == Role::Bulk && accept->session_id != config_.session_id) {
            return fail("ACCEPT for session " + std::to_string(accept->session_id) +
                        ", asked to join " + std::to_string(config_.session_id));
        }
        state_ = State::Done;
        return HandshakeStep{{},
                             Joined{config_.role, accept->session_id, hello_.bulk_index,
                                    accept->version, accept->max_bulk_channels},
                             std::nullopt};
    }
    return fail("frame " + to_string(frame.header.type) + " outside the handshake");
}

}  // namespace uffdm::transport
