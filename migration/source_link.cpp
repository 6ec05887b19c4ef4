// source_link.cpp — Accepting destinations, breaks and the wait for a resume, DONE and failure.
#include "migration/source_link.hpp"

#include <sys/socket.h>

#include <cstdio>
#include <cstdlib>
#include <thread>

#include "migration/data_paths.hpp"
#include "migration/source_channels.hpp"
#include "transport/control.hpp"

namespace uffdm::migration {

namespace {

using State = SourceLink::State;

constexpr auto kGoodbyeWait = std::chrono::seconds(5);

// The transitions of protocol.md's "Source state machine", and only those.
constexpr bool allowed(State from, State to) {
    switch (from) {
        case State::Listening:
            return to == State::AwaitStart || to == State::Failed;
        case State::AwaitStart:
            // To AwaitStart: a newer destination replaced one that never started.
            return to == State::AwaitStart || to == State::Serving || to == State::Listening ||
                   to == State::Waiting || to == State::Finished || to == State::Failed;
        case State::Serving:
            return to == State::Waiting || to == State::Finished || to == State::Failed;
        case State::Waiting:
            // Finished: a DONE still in the broken session's ring says the destination has
            // every page, however its connections ended.
            return to == State::AwaitStart || to == State::Finished || to == State::Failed;
        case State::Finished:
        case State::Failed:
            return false;
    }
    return false;
}

}  // namespace

const char* SourceLink::name(State state) noexcept {
    switch (state) {
        case State::Listening:
            return "Listening";
        case State::AwaitStart:
            return "AwaitStart";
        case State::Serving:
            return "Serving";
        case State::Waiting:
            return "Waiting";
        case State::Finished:
            return "Finished";
        case State::Failed:
            return "Failed";
    }
    return "?";
}

SourceLink::SourceLink(const PageServerOptions& options, SentPages& pages)
    : options_(options),
      pages_(pages),
      compression_(options.compression),
      compression_pool_(options.compression.codec != Codec::Off && options.compression.threads > 0
                            ? std::make_unique<CompressionPool>(options.compression.threads)
                            : nullptr),
      layout_bytes_(wire::encode([&] {
          wire::Layout layout = pages.memory().layout();
          layout.flags = options.live.enabled ? wire::Layout::kLive : 0U;
          return layout;
      }())),
      cap_(options.max_bandwidth),
      pauses_(options.reconnect_timeout),
      opened_at_(Clock::now()) {}

SourceLink::~SourceLink() = default;

std::expected<void, transport::Failure> SourceLink::open() {
    auto paths = make_data_paths(options_.backend, options_.liveness);
    if (!paths) {
        return std::unexpected(paths.error());
    }
    urgent_path_ = std::move(paths->urgent);
    bulk_path_ = std::move(paths->bulk);
    window_ = paths->window;
    channels_.emplace(*urgent_path_, *bulk_path_);
    transport::ListenerOptions listen{.endpoint = options_.listen,
                                      .secret = options_.secret,
                                      .tls = options_.tls,
                                      .insecure = options_.insecure,
                                      .unix_mode = options_.unix_mode,
                                      .allowed_uids = options_.allowed_uids,
                                      .liveness = options_.liveness,
                                      .max_pending_handshakes = 64,
                                      .max_bulk_channels = options_.max_bulk_channels};
    auto listener = transport::Listener::open(
        io_, listen, [this](transport::Connection c) { on_joined(std::move(c)); });
    if (!listener) {
        return std::unexpected(listener.error());
    }
    listener_ = *listener;
    return {};
}

transport::Endpoint SourceLink::local_endpoint() const {
    return listener_->local_endpoint();
}

void SourceLink::enter(State next) {
    State from = state_.load(std::memory_order_relaxed);
    if (!allowed(from, next)) {
        std::fprintf(stderr, "uffdm: source state %s -> %s is not in protocol.md\n", name(from),
                     name(next));
        std::abort();
    }
    state_.store(next, std::memory_order_release);
}

bool SourceLink::done() const noexcept {
    State s = state();
    return s == State::Finished || s == State::Failed;
}

void SourceLink::on_joined(transport::Connection connection) {
    const transport::Joined joined = connection.joined();
    std::lock_guard lock(mutex_);
    if (joined.role == transport::Role::Urgent) {
        if (precopy_ != nullptr && joined.version < wire::kLiveVersion) {
            // Refused by name, before anything else: a version 1 destination would let its
            // guest run at once, on pages the running guest here still writes.
            auto refusal = transport::frame_of(
                transport::FrameType::Error,
                transport::ErrorMessage{
                    transport::ErrorCode::VersionMismatch,
                    "this source migrates a running guest (precopy, protocol version " +
                        std::to_string(wire::kLiveVersion) + "); the destination speaks version " +
                        std::to_string(joined.version)});
            (void)::send(connection.socket().native_handle(), refusal.data(), refusal.size(),
                         MSG_DONTWAIT | MSG_NOSIGNAL);
            return;
        }
        if (state() == State::AwaitStart) {
            // The current destination has not sent START, so nothing has moved: the newer one
            // replaces it (a destination that probed the layout and came back, or retried).
            drop_session(transport::failure(
                Errc::Closed, "a newer destination replaced this one before it started"));
        } else if (state() != State::Listening && state() != State::Waiting) {
            // One migration per server: a second destination learns why and is closed.
            auto refusal = transport::frame_of(
                transport::FrameType::Error,
                transport::ErrorMessage{transport::ErrorCode::Busy,
                                        "this source is already serving a destination"});
            (void)::send(connection.socket().native_handle(), refusal.data(), refusal.size(),
                         MSG_DONTWAIT | MSG_NOSIGNAL);
            return;
        }
        enter(State::AwaitStart);
        session_ = joined.session_id;
        open_channels_.fetch_add(1);
        // A handler per session: one that ended before START may still be finishing its
        // on_closed when the next destination arrives.
        urgent_.push_back(std::make_unique<SourceUrgentChannel>(*this, window_, session_));
        // Unmarked is slower under load, not wrong: a refusal of the kernel's is not fatal.
        (void)transport::mark_connection(connection.socket().native_handle(), true,
                                         options_.marking);
        channels_->set_urgent(urgent_path_->add(std::move(connection), *urgent_.back()));
        channels_->want_send_urgent();
        return;
    }
    if (joined.session_id != session_ || done()) {
        return;  // a straggler of a session that is over: closed by dropping it
    }
    bulk_.push_back(std::make_unique<SourceBulkChannel>(*this, window_, session_));
    (void)transport::mark_connection(connection.socket().native_handle(), false, options_.marking);
    open_channels_.fetch_add(1);
    transport::ChannelId id = bulk_path_->add(std::move(connection), *bulk_.back());
    channels_->add_bulk(id);
    if (serving(session_)) {
        bulk_path_->want_send(id);
    }
}

void SourceLink::drop_session(const transport::Failure& why) {
    channels_->abort(why);
    channels_->forget();
    listener_->end_session(session_);
    session_ = 0;
}

void SourceLink::started(std::uint32_t flags, std::uint64_t session) {
    want_hashes_.store((flags & wire::Start::kWantHashes) != 0, std::memory_order_relaxed);
    compression_.accept(flags);
    stream_held_.store((flags & wire::Start::kStreamHeld) != 0, std::memory_order_relaxed);
    stream_on_urgent_.store((flags & wire::Start::kStreamOnUrgent) != 0, std::memory_order_relaxed);
    std::lock_guard lock(mutex_);
    if (session != session_ || state() != State::AwaitStart) {
        return;  // replaced meanwhile
    }
    enter(State::Serving);
    active_session_.store(session, std::memory_order_release);
    pauses_.end(Clock::now());
    channels_->want_send_bulk();
}

void SourceLink::lost(std::uint64_t session, const std::string& what,
                      const transport::Failure& why) {
    transport::Failure final_failure;
    {
        std::lock_guard lock(mutex_);
        if (done() || session != session_) {
            return;  // over already, or a session that was already given up
        }
        // A destination that ended it on purpose (its ERROR), an orderly close before DONE, our
        // own refusal, or no recovery wanted: the migration is over. A broken link: wait.
        if (recoverable_break(why, Peer::Destination, options_.reconnect_timeout)) {
            active_session_.store(0, std::memory_order_release);
            drop_session(transport::failure(
                Errc::PeerLost, "the session broke (" + what + "); waiting for the destination"));
            lost_why_ = what + ": " + describe_end(why);
            if (!pauses_.active()) {
                pauses_.begin(Clock::now(), opened_at_, lost_why_);
            }
            enter(State::Waiting);
            return;
        }
        final_failure = transport::failure(
            why.code == Errc::ProtocolViolation ? Errc::ProtocolViolation : Errc::PeerLost,
            what + ": " + describe_end(why));
    }
    fail(final_failure);
}

void SourceLink::ended_before_start(std::uint64_t session) {
    std::lock_guard lock(mutex_);
    if (session != session_ || state() != State::AwaitStart) {
        return;  // a session already replaced by a newer one
    }
    listener_->end_session(session_);
    channels_->close_bulk();  // its bulk connections carried nothing yet
    channels_->forget();
    session_ = 0;
    // The reconnect deadline still runs for a destination that broke and has not resumed.
    enter(pauses_.active() ? State::Waiting : State::Listening);
}

void SourceLink::wake_streams() {
    std::lock_guard lock(mutex_);
    channels_->want_send_all();
}

bool SourceLink::stream_may_send() {
    auto until = cap_.wait_until(BandwidthCap::Clock::now());
    if (!until) {
        return true;
    }
    if (!cap_wake_pending_.exchange(true)) {
        transport::asio::post(io_, [this, at = *until] {
            cap_timer_.expires_at(at);
            cap_timer_.async_wait([this](const boost::system::error_code& error) {
                cap_wake_pending_.store(false);
                if (!error) {
                    wake_streams();
                }
            });
        });
    }
    return false;
}

void SourceLink::stream_sent(const transport::OutgoingFrame& frame) {
    cap_.spend(transport::kHeaderSize + frame.payload_size(), BandwidthCap::Clock::now());
}

void SourceLink::wake_urgent() {
    std::lock_guard lock(mutex_);
    channels_->want_send_urgent();
}

void SourceLink::hold_stream(bool held) {
    stream_held_.store(held, std::memory_order_release);
    if (held) {
        return;  // frames already in the send windows still go; no new ones are taken
    }
    std::lock_guard lock(mutex_);
    channels_->want_send_all();
}

void SourceLink::finished() {
    std::lock_guard lock(mutex_);
    if (done()) {
        return;
    }
    enter(State::Finished);
    channels_->close();
}

void SourceLink::fail(transport::Failure why) {
    std::lock_guard lock(mutex_);
    if (done()) {
        return;
    }
    failure_ = why;
    enter(State::Failed);
    if (channels_) {  // (none when open() failed)
        channels_->abort(why);
    }
}

void SourceLink::refuse_urgent(transport::ChannelId channel, const transport::Failure& why) {
    urgent_path_->abort(channel, why);
    fail(why);
}

void SourceLink::refuse_bulk(transport::ChannelId channel, const transport::Failure& why) {
    bulk_path_->abort(channel, why);
    fail(why);
}

SourceLink::Span SourceLink::serve(const std::function<void()>& tick) {
    std::thread urgent_loop([this] {
        name_this_thread("uffdm-s-urgent");
        urgent_path_->run();
    });
    std::thread bulk_loop([this] {
        name_this_thread("uffdm-s-bulk");
        bulk_path_->run();
    });
    listener_->start();
    Span span;
    for (;;) {
        io_.run_for(std::chrono::milliseconds(100));
        auto now = Clock::now();
        if (!span.joined && connected()) {
            span.joined = now;
        }
        std::optional<std::string> gave_up;
        {
            std::lock_guard lock(mutex_);
            if (!done() && pauses_.overdue(now)) {
                gave_up = lost_why_ + "; it did not come back " + pauses_.within();
            }
        }
        if (gave_up) {
            fail(transport::failure(Errc::TimedOut, *gave_up));
        }
        if (done() && !span.ended) {
            span.ended = now;
        }
        if (tick) {
            tick();
        }
        // Finished when every channel has said goodbye; bounded, so a peer that never closes
        // cannot keep the source alive.
        if (span.ended && (open_channels_.load() <= 0 || now - *span.ended > kGoodbyeWait)) {
            break;
        }
    }
    listener_->stop();
    io_.run_for(std::chrono::milliseconds(10));
    urgent_path_->stop();
    bulk_path_->stop();
    urgent_loop.join();
    bulk_loop.join();
    return span;
}

bool SourceLink::connected() const {
    std::lock_guard lock(mutex_);
    return channels_->has_urgent();
}

std::size_t SourceLink::bulk_channels() const {
    std::lock_guard lock(mutex_);
    return channels_->bulk_count();
}

std::size_t SourceLink::pause_count() const {
    std::lock_guard lock(mutex_);
    return pauses_.count();
}

std::optional<transport::Failure> SourceLink::failure() const {
    std::lock_guard lock(mutex_);
    return failure_;
}

std::uint64_t SourceLink::bytes_sent() const {
    return urgent_path_->stats().bytes_sent + bulk_path_->stats().bytes_sent;
}

}  // namespace uffdm::migration
