// channel_core.cpp — Frame cutting in the ring, the send window, heartbeats and deadlines.
#include "transport/channel_core.hpp"

#include <cstring>

#include <sys/socket.h>

#include "transport/backends.hpp"
#include "transport/control.hpp"

namespace uffdm::transport {

namespace {

// Room beyond the handler's window for PONG, PING and GOODBYE, which must never wait for it.
constexpr std::size_t kControlSlots = 3;

std::string millis(std::chrono::milliseconds ms) {
    return std::to_string(ms.count()) + " ms";
}

}  // namespace

bool OutgoingFrame::set_inline(std::span<const std::byte> bytes) noexcept {
    if (bytes.size() > kMaxInline) {
        return false;
    }
    if (!bytes.empty()) {  // an empty span may have a null data(), which memcpy may not take
        std::memcpy(inline_bytes.data(), bytes.data(), bytes.size());
    }
    inline_size = static_cast<std::uint32_t>(bytes.size());
    return true;
}

ChannelCore::ChannelCore(ChannelId id, ChannelHandler& handler, MirrorRing ring,
                         const DataPathOptions& options, Clock::time_point now,
                         std::unique_ptr<TlsSession> tls)
    : id_(id),
      handler_(handler),
      ring_(std::move(ring)),
      options_(options),
      slots_(options.send_window_frames + kControlSlots),
      last_received_(now),
      last_sent_(now),
      send_since_(now),
      tls_(std::move(tls)) {
    iovecs_.reserve(slots_.size() * 3);
    if (tls_) {
        cipher_in_.resize(64 * 1024);
    }
}

void ChannelCore::preload(std::span<const std::byte> bytes, Clock::time_point now) {
    // Plaintext the handshake's decoder already holds goes straight to the ring.
    last_received_ = now;
    backlog_.insert(backlog_.end(), bytes.begin(), bytes.end());
    take_backlog();
    if (tls_) {
        decrypt_into_ring();  // records that came with the handshake
    }
}

void ChannelCore::take_backlog() {
    std::size_t taken = 0;
    while (taken < backlog_.size() && !done()) {
        auto space = ring_.free_space();
        if (space.empty()) {
            break;  // the ring is full of kept frames: the rest goes in on a release
        }
        std::size_t n = std::min(space.size(), backlog_.size() - taken);
        std::memcpy(space.data(), backlog_.data() + taken, n);
        taken += n;
        ring_.produced(n);
        deliver_frames();
    }
    backlog_.erase(backlog_.begin(), backlog_.begin() + static_cast<std::ptrdiff_t>(taken));
}

void ChannelCore::release(std::uint64_t ticket) {
    if (ticket < kept_base_ || ticket - kept_base_ >= kept_.size()) {
        return;  // not a kept frame of this channel (a second release): nothing to free
    }
    kept_[ticket - kept_base_].kept = false;
    release_ring();
    if (done()) {
        return;
    }
    take_backlog();
    if (tls_ && backlog_.empty()) {
        decrypt_into_ring();  // plaintext OpenSSL held while the ring was full
    }
}

void ChannelCore::release_ring() {
    while (!kept_.empty() && !kept_.front().kept) {
        ring_.released(kept_.front().end);
        kept_.pop_front();
        ++kept_base_;
    }
    if (kept_.empty()) {
        ring_.released(ring_.parsed());
    }
}

void ChannelCore::on_received(std::size_t n, Clock::time_point now) {
    stats_.bytes_received += n;
    last_received_ = now;
    if (tls_) {
        tls_->feed(std::span(cipher_in_).first(n));
        decrypt_into_ring();
        return;
    }
    ring_.produced(n);
    deliver_frames();
}

void ChannelCore::decrypt_into_ring() {
    while (!done() && !ring_.free_space().empty()) {
        long n = tls_->decrypt(ring_.free_space());
        if (n < 0) {
            abort(failure(Errc::ProtocolViolation, tls_->error()));
            return;
        }
        if (n == 0) {
            return;
        }
        ring_.produced(static_cast<std::size_t>(n));
        deliver_frames();
    }
}

void ChannelCore::deliver_frames() {
    while (!done()) {
        auto data = ring_.data();
        if (data.size() < kHeaderSize) {
            return;
        }
        auto header = decode_header(data.first<kHeaderSize>());
        if (!header) {
            protocol_violation(header.error().detail);
            return;
        }
        if (header->length > options_.max_payload) {
            protocol_violation("frame length " + std::to_string(header->length) + " for " +
                               to_string(header->type) + " exceeds this channel's limit " +
                               std::to_string(options_.max_payload));
            return;
        }
        std::size_t whole = kHeaderSize + header->length;
        if (data.size() < whole) {
            return;
        }
        auto payload = data.subspan(kHeaderSize, header->length);
        ++stats_.frames_received;
        bool kept = false;
        if (is_application(header->type)) {
            // After our GOODBYE the handler has asked to end; late frames are not its concern.
            if (state_ != State::Draining) {
                handler_.on_frame(id_, FrameView{.type = header->type,
                                                 .version = header->version,
                                                 .payload = payload,
                                                 .kept = &kept,
                                                 .ticket = kept_base_ + kept_.size()});
            }
        } else {
            handle_transport_frame(*header, payload);
        }
        ring_.consumed(whole);
        if (kept || !kept_.empty()) {
            kept_.push_back({ring_.parsed(), kept});
        }
        release_ring();
    }
}

void ChannelCore::handle_transport_frame(const FrameHeader& header,
                                         std::span<const std::byte> payload) {
    switch (header.type) {
        case FrameType::Ping: {
            if (auto ping = decode_ping(payload); ping && state_ != State::Draining) {
                push_control(FrameType::Pong, payload);
            }
            return;
        }
        case FrameType::Pong:
            return;
        case FrameType::Goodbye:
            fail(Failure{});  // orderly: the peer sends nothing more and closes
            return;
        case FrameType::Error: {
            // A peer that stops on purpose or refuses what it got (Shutdown, BadFrame, ...)
            // meant to end it; one that gave up on a broken session (Internal) may be back.
            auto error = decode_error(payload);
            bool deliberate =
                error && error->code != ErrorCode::Internal && error->code != ErrorCode::Timeout;
            // A peer that cannot speak our version never will: no reconnection helps.
            bool unsupported = error && error->code == ErrorCode::VersionMismatch;
            fail(failure(unsupported  ? Errc::Unsupported
                         : deliberate ? Errc::PeerAborted
                                      : Errc::PeerLost,
                         "peer ended the connection: " + describe_error(payload)));
            return;
        }
        default:
            protocol_violation(to_string(header.type) + " frame after the handshake");
            return;
    }
}

void ChannelCore::protocol_violation(std::string detail) {
    abort(failure(Errc::ProtocolViolation, std::move(detail)));
}

void ChannelCore::abort(Failure why) {
    if (done()) {
        return;
    }
    ErrorCode code =
        why.code == Errc::ProtocolViolation || why.code == Errc::InvalidArgument
            ? ErrorCode::BadFrame
        : why.code == Errc::Closed || why.code == Errc::PeerAborted || why.code == Errc::TimedOut
            ? ErrorCode::Shutdown
            : ErrorCode::Internal;
    farewell_ = frame_of(FrameType::Error, ErrorMessage{code, why.detail});
    if (tls_) {
        // Behind whatever ciphertext is still unsent, so the peer can decrypt it in order.
        farewell_ = tls_->encrypt(farewell_)
                        ? std::vector<std::byte>(tls_->output().begin(), tls_->output().end())
                        : std::vector<std::byte>{};
    }
    fail(std::move(why));
}

void ChannelCore::on_receive_error(int err) {
    if (done()) {
        return;
    }
    if (err == 0) {
        if (state_ == State::Draining) {
            fail(Failure{});
        } else if (!ring_.data().empty()) {
            fail(failure(Errc::PeerLost, "connection ended inside a frame (" +
                                             std::to_string(ring_.data().size()) +
                                             " bytes buffered)"));
        } else {
            fail(failure(Errc::PeerLost, "peer closed the connection"));
        }
        return;
    }
    fail(failure(Errc::PeerLost, std::string("reading: ") + std::strerror(err)));
}

bool ChannelCore::push(const OutgoingFrame& frame, bool from_handler) {
    if (count_ == slots_.size()) {
        return false;
    }
    Slot& slot = slots_[(front_ + count_) % slots_.size()];
    auto header = encode_header({.version = version_,
                                 .type = frame.type,
                                 .length = static_cast<std::uint32_t>(frame.payload_size())});
    std::memcpy(slot.head.data(), header.data(), kHeaderSize);
    std::memcpy(slot.head.data() + kHeaderSize, frame.inline_bytes.data(), frame.inline_size);
    slot.head_size = kHeaderSize + frame.inline_size;
    slot.borrowed = frame.borrowed;
    slot.token = frame.token;
    slot.from_handler = from_handler;
    slot.total = slot.head_size + frame.borrowed[0].size() + frame.borrowed[1].size();
    ++count_;
    if (from_handler) {
        ++handler_frames_;
    } else if (frame.type == FrameType::Goodbye) {
        goodbye_queued_ = true;
    }
    return true;
}

void ChannelCore::push_control(FrameType type, std::span<const std::byte> payload) {
    OutgoingFrame frame{.type = type};
    (void)frame.set_inline(payload);
    (void)push(frame, false);  // no room: three control frames are already waiting
}

void ChannelCore::pull_from_handler() {
    while (state_ == State::Open && handler_frames_ < options_.send_window_frames &&
           count_ < slots_.size()) {
        auto frame = handler_.next_frame(id_);
        if (!frame) {
            return;
        }
        if (frame->payload_size() > options_.max_payload || !is_application(frame->type)) {
            // A bug in the layer above, never the peer's doing: refuse loudly.
            fail(failure(Errc::InvalidArgument, "cannot send " + to_string(frame->type) + " of " +
                                                    std::to_string(frame->payload_size()) +
                                                    " bytes on a data channel"));
            return;
        }
        (void)push(*frame, true);
        ++stats_.frames_sent;
    }
}

std::span<const iovec> ChannelCore::send_iovecs() {
    iovecs_.clear();
    if (done()) {
        return {};
    }
    if (tls_ && !tls_->output().empty()) {
        // Ciphertext not yet on the wire goes first, and nothing more is encrypted until it is:
        // the TLS output buffer stays bounded by one batch.
        auto out = tls_->output();
        cipher_out_ = iovec{const_cast<std::byte*>(out.data()), out.size()};
        return {&cipher_out_, 1};
    }
    pull_from_handler();
    if (state_ == State::Flushing && handler_frames_ == 0 && !goodbye_queued_) {
        push_control(FrameType::Goodbye, {});
    }
    std::size_t bytes = 0;
    std::size_t skip = offset_;
    for (std::size_t i = 0; i < count_ && (i == 0 || bytes < options_.send_batch_bytes); ++i) {
        const Slot& slot = slots_[(front_ + i) % slots_.size()];
        std::span<const std::byte> pieces[3] = {
            {slot.head.data(), slot.head_size}, slot.borrowed[0], slot.borrowed[1]};
        for (auto piece : pieces) {
            if (skip >= piece.size()) {
                skip -= piece.size();
                continue;
            }
            piece = piece.subspan(skip);
            skip = 0;
            iovecs_.push_back(
                iovec{const_cast<std::byte*>(piece.data()), piece.size()});  // sendmsg: const
            bytes += piece.size();
        }
    }
    return tls_ && !iovecs_.empty() ? encrypt_batch() : std::span<const iovec>(iovecs_);
}

std::span<const iovec> ChannelCore::encrypt_batch() {
    // One SSL_write for the whole batch: OpenSSL cuts full 16 KiB records instead of a record per
    // 16-byte header.
    plain_batch_.clear();
    for (const iovec& v : iovecs_) {
        auto* data = static_cast<const std::byte*>(v.iov_base);
        plain_batch_.insert(plain_batch_.end(), data, data + v.iov_len);
    }
    iovecs_.clear();
    if (!tls_->encrypt(plain_batch_)) {
        abort(failure(Errc::ProtocolViolation, tls_->error()));
        return {};
    }
    account_sent(plain_batch_.size());
    auto out = tls_->output();
    cipher_out_ = iovec{const_cast<std::byte*>(out.data()), out.size()};
    return {&cipher_out_, 1};
}

void ChannelCore::send_started(Clock::time_point now) noexcept {
    send_since_ = now;
    ++stats_.send_calls;
}

void ChannelCore::on_sent(std::size_t n, Clock::time_point now) {
    stats_.bytes_sent += n;
    last_sent_ = now;
    send_since_ = now;
    if (tls_) {
        tls_->consume_output(n);  // the frames were accounted for when encrypted
        return;
    }
    account_sent(n);
}

void ChannelCore::account_sent(std::size_t n) {
    while (n > 0 && count_ > 0) {
        Slot& slot = slots_[front_];
        std::size_t remaining = slot.total - offset_;
        if (n < remaining) {
            offset_ += n;
            return;
        }
        n -= remaining;
        offset_ = 0;
        front_ = (front_ + 1) % slots_.size();
        --count_;
        if (slot.from_handler) {
            --handler_frames_;
            if (!done()) {
                handler_.on_sent(id_, slot.token);
            }
        } else if (slot.head_size >= kHeaderSize &&
                   static_cast<FrameType>(slot.head[6]) == FrameType::Goodbye &&
                   state_ == State::Flushing) {
            state_ = State::Draining;
        }
    }
}

void ChannelCore::on_send_error(int err) {
    fail(failure(Errc::PeerLost, std::string("writing: ") + std::strerror(err)));
}

void ChannelCore::request_close() noexcept {
    if (state_ == State::Open) {
        state_ = State::Flushing;
    }
}

void ChannelCore::fail(Failure why) noexcept {
    if (done()) {
        return;
    }
    state_ = State::Done;
    why_ = std::move(why);
}

void ChannelCore::finish(int fd, DataPathStats& retired) {
    if (!farewell_.empty()) {
        // The peer learns why, if its buffer has room.
        (void)::send(fd, farewell_.data(), farewell_.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    }
    accumulate(retired, stats_);
    handler_.on_closed(id_, why_);
}

void ChannelCore::on_tick(Clock::time_point now, bool send_in_flight) {
    if (done()) {
        return;
    }
    const LivenessOptions& live = options_.liveness;
    if (send_in_flight && now - send_since_ > live.stall_timeout) {
        std::size_t unsent = 0;
        for (std::size_t i = 0; i < count_; ++i) {
            unsent += slots_[(front_ + i) % slots_.size()].total;
        }
        fail(failure(Errc::PeerLost, "peer stopped reading: no progress for " +
                                         millis(live.stall_timeout) + " with " +
                                         std::to_string(unsent - offset_) + " bytes unsent"));
        return;
    }
    if (state_ == State::Draining) {
        if (now - last_sent_ > live.stall_timeout) {
            fail(Failure{});  // GOODBYE went out; the peer just never closed its side
        }
        return;
    }
    if (ring_.free_space().empty()) {
        last_received_ = now;  // not reading: the ring is full of frames kept by the handler
    }
    if (live.idle_timeout.count() > 0 && now - last_received_ > live.idle_timeout) {
        fail(failure(Errc::PeerLost, "nothing received for " + millis(live.idle_timeout) +
                                         " (the peer is hung or stopped, or the network is down)"));
        return;
    }
    if (live.heartbeat_interval.count() > 0 && state_ == State::Open && count_ == 0 &&
        now - last_sent_ > live.heartbeat_interval) {
        push_control(FrameType::Ping, encode_ping(Ping{++ping_token_}));
        ++stats_.pings_sent;
        last_sent_ = now;  // one PING per interval, even while it waits to be written
    }
}

}  // namespace uffdm::transport
