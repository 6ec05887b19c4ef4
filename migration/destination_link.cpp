// destination_link.cpp — Making sessions, breaks and pauses, completion and DONE delivery.
#include "migration/destination_link.hpp"

#include <cstdio>
#include <cstdlib>

#include "migration/data_paths.hpp"
#include "migration/destination_channels.hpp"

namespace uffdm::migration {

namespace {

constexpr auto kGoodbyeWait = std::chrono::seconds(5);

using State = DestinationLink::State;

// The transitions of protocol.md's "Destination state machine", and only those.
constexpr bool allowed(State from, State to) {
    switch (from) {
        case State::Connecting:
            return to == State::Running || to == State::Failed;
        case State::Running:
            return to == State::Paused || to == State::Complete || to == State::Failed;
        case State::Paused:
            // Complete while paused: the last pages were in the broken session's ring; the
            // source still needs its DONE.
            return to == State::Resuming || to == State::Delivering || to == State::Failed;
        case State::Resuming:
            return to == State::Running || to == State::Paused || to == State::Complete ||
                   to == State::Failed;
        case State::Complete:
            return to == State::Done || to == State::Delivering;
        case State::Delivering:
            return to == State::Complete;
        case State::Done:
        case State::Failed:
            return false;
    }
    return false;
}

// The source was there, and the link or the source broke before the session was made.
bool broke_after_reaching(const transport::SessionFailure& why) {
    return why.reached && (why.code == Errc::PeerLost || why.code == Errc::TimedOut);
}

}  // namespace

const char* DestinationLink::name(State state) noexcept {
    switch (state) {
        case State::Connecting:
            return "Connecting";
        case State::Running:
            return "Running";
        case State::Paused:
            return "Paused";
        case State::Resuming:
            return "Resuming";
        case State::Complete:
            return "Complete";
        case State::Delivering:
            return "Delivering";
        case State::Done:
            return "Done";
        case State::Failed:
            return "Failed";
    }
    return "?";
}

DestinationLink::DestinationLink(const FaultServerOptions& options, const wire::Layout& layout,
                                 Placer& placer, RequestQueue& requests, PrecopyReceiver& precopy)
    : options_(options),
      layout_(layout),
      placer_(placer),
      requests_(requests),
      precopy_(precopy),
      pauses_(options.reconnect_timeout),
      stream_held_(options.hold_stream) {}

DestinationLink::~DestinationLink() = default;

std::expected<void, transport::Failure> DestinationLink::open() {
    auto paths = make_data_paths(options_.backend, options_.liveness);
    if (!paths) {
        return std::unexpected(paths.error());
    }
    urgent_path_ = std::move(paths->urgent);
    bulk_path_ = std::move(paths->bulk);
    channels_.emplace(*urgent_path_, *bulk_path_);
    return {};
}

void DestinationLink::start(Clock::time_point started_at) {
    started_at_ = started_at;
    placement_.emplace(placer_, layout(), options_.placement_threads);
    // Named, so that top -H, perf and a VMM's own thread listing tell them apart.
    urgent_thread_ = std::thread([this] {
        name_this_thread("uffdm-d-urgent");
        urgent_path_->run();
    });
    bulk_thread_ = std::thread([this] {
        name_this_thread("uffdm-d-bulk");
        bulk_path_->run();
    });
    link_thread_ = std::thread([this] {
        name_this_thread("uffdm-link");
        link_loop();
    });
}

void DestinationLink::enter(State next) {
    State from = state_.load(std::memory_order_relaxed);
    if (!allowed(from, next)) {
        std::fprintf(stderr, "uffdm: destination state %s -> %s is not in protocol.md\n",
                     name(from), name(next));
        std::abort();
    }
    state_.store(next, std::memory_order_release);
    state_changed_.notify_all();
}

bool DestinationLink::complete() const noexcept {
    State s = state();
    return s == State::Complete || s == State::Delivering || s == State::Done;
}

std::expected<transport::Session, transport::SessionFailure> DestinationLink::connect_once() {
    using Result = std::optional<std::expected<transport::Session, transport::SessionFailure>>;
    auto result = std::make_shared<Result>();
    transport::SessionOptions session{.endpoint = options_.source,
                                      .secret = options_.secret,
                                      .tls = options_.tls,
                                      .bulk_channels = options_.bulk_channels,
                                      .liveness = options_.liveness,
                                      .max_version = options_.max_version};
    // One io_context for every attempt: the sockets it makes belong to its services, so it
    // outlives the connections it hands over. An abandoned attempt may finish when it runs again;
    // its session then closes unused (the shared result keeps that harmless).
    {
        std::lock_guard lock(mutex_);
        if (failed() || link_stop_) {
            return std::unexpected(
                transport::SessionFailure{transport::failure(Errc::Closed, "stopped"), false});
        }
        connect_io_.restart();
    }
    transport::asio::co_spawn(
        connect_io_,
        [result, session]() -> transport::asio::awaitable<void> {
            result->emplace(co_await transport::connect_session(session));
        },
        transport::asio::detached);
    // connect(2) itself has no deadline in the kernel for minutes; ours is the handshake's.
    connect_io_.run_for(options_.liveness.handshake_timeout * 2);
    if (!result->has_value()) {
        return std::unexpected(transport::SessionFailure{
            transport::failure(
                Errc::PeerLost,
                "cannot reach the source at " + options_.source.to_string() + " within " +
                    std::to_string(2 * options_.liveness.handshake_timeout.count()) + " ms"),
            false});
    }
    return std::move(**result);
}

bool DestinationLink::attach(transport::Session joined) {
    std::lock_guard lock(mutex_);
    State s = state();
    if (s == State::Failed) {
        return false;  // stopped while connecting: the connections close with the session
    }
    ++generation_;
    current_generation_.store(generation_, std::memory_order_release);
    // After a break the pause goes on until pages flow again (progressed); after DONE may have
    // been lost, the new session delivers it.
    enter(s == State::Connecting   ? State::Running
          : s == State::Paused     ? State::Resuming
          : s == State::Delivering ? State::Complete
                                   : s);  // (no other state makes sessions: enter() stops there)
    streams_ended_ = 0;
    bulk_in_session_ = joined.bulk.size();
    // The connections that stream: its bulk ones, or the urgent one when there are none.
    precopy_.begin_session(generation_, joined.bulk.empty() ? 1 : joined.bulk.size());
    open_channels_ += 1 + static_cast<std::int64_t>(joined.bulk.size());
    // Compressed runs only from a source that knows them (it reads START's bits as reserved
    // before version 3), zero maps from version 4.
    std::uint16_t version = joined.urgent.joined().version;
    std::uint32_t accept = 0;
    if (options_.accept_compression && version >= wire::kCompressionVersion) {
        accept = wire::Start::kAcceptLz4 | wire::Start::kAcceptZstd |
                 (version >= wire::kZeroMapVersion ? wire::Start::kAcceptZeroMap : 0U);
    }
    urgent_.push_back(
        std::make_unique<DestinationUrgentChannel>(*this, generation_, generation_ > 1, accept));
    channels_->forget();
    // Unmarked is slower under load, not wrong: a refusal of the kernel's is not fatal.
    (void)transport::mark_connection(joined.urgent.socket().native_handle(), true,
                                     options_.marking);
    channels_->set_urgent(urgent_path_->add(std::move(joined.urgent), *urgent_.back()));
    for (auto& connection : joined.bulk) {
        (void)transport::mark_connection(connection.socket().native_handle(), false,
                                         options_.marking);
        bulk_.push_back(std::make_unique<DestinationBulkChannel>(*this, generation_, accept));
        channels_->add_bulk(bulk_path_->add(std::move(connection), *bulk_.back()));
    }
    channels_->want_send_urgent();
    return true;
}

// Makes sessions with backoff (50 ms doubling to 1 s) until one joins or `deadline` passes;
// each attempt authenticates anew. The first session of a migration gives up at once when
// nothing listens at the address (a wrong address, a source not started yet) or the source
// refused us; one that was reached and then broke is retried like any later break.
DestinationLink::Joining DestinationLink::join_session(Clock::time_point deadline, bool first,
                                                       transport::SessionFailure& last) {
    auto backoff = std::chrono::milliseconds(50);
    for (;;) {
        auto session = connect_once();
        if (session) {
            return attach(std::move(*session)) ? Joining::Joined : Joining::Stopped;
        }
        last = session.error();
        if (first && !broke_after_reaching(last)) {
            return Joining::GaveUp;
        }
        std::unique_lock wait(mutex_);
        if (failed() || link_stop_) {
            return Joining::Stopped;
        }
        if (Clock::now() + backoff >= deadline) {
            return Joining::GaveUp;
        }
        state_changed_.wait_for(wait, backoff, [&] { return failed(); });
        backoff = std::min(backoff * 2, std::chrono::milliseconds(1000));
    }
}

void DestinationLink::report_pauses(std::unique_lock<std::mutex>& lock) {
    // Both may be pending (a pause that ended before this thread woke): in order.
    bool pausing = pause_to_report_;
    bool resuming = resume_to_report_;
    pause_to_report_ = resume_to_report_ = false;
    Pause pause = pauses_.last();
    lock.unlock();
    if (pausing && options_.on_pause) {
        options_.on_pause(pause);
    }
    if (resuming && options_.on_resume) {
        options_.on_resume(pause);
    }
    lock.lock();
}

// The link thread: the first session, then after every break new ones, and the pause and
// resume callbacks.
void DestinationLink::link_loop() {
    transport::SessionFailure last;
    switch (join_session(Clock::now() + options_.reconnect_timeout, true, last)) {
        case Joining::Joined:
            break;
        case Joining::Stopped:
            return;
        case Joining::GaveUp:
            if (!broke_after_reaching(last)) {
                return fail(last);  // nothing listens there, or the source refused us
            }
            return fail(transport::failure(Errc::TimedOut,
                                           "no session could be made with the source within " +
                                               std::to_string(options_.reconnect_timeout.count()) +
                                               " ms; the last attempt: " + last.detail));
    }
    for (;;) {
        std::unique_lock lock(mutex_);
        for (;;) {
            if (pause_to_report_ || resume_to_report_) {
                report_pauses(lock);
                continue;
            }
            // Complete is not the end of this thread: a break before the source closed in
            // order after DONE means the DONE may be lost, and a new session delivers it.
            State s = state();
            if (s == State::Failed || s == State::Done || link_stop_) {
                return;
            }
            if (s == State::Paused || s == State::Delivering) {
                break;
            }
            if (pauses_.overdue(Clock::now())) {
                // Sessions were made, but no page came: a source that accepts and serves nothing.
                std::string reason = pauses_.last().reason;
                lock.unlock();
                return fail(transport::failure(Errc::TimedOut,
                                               "the connection to the source broke (" + reason +
                                                   ") and no page arrived " + pauses_.within() +
                                                   ", though new sessions were made"));
            }
            if (pauses_.active()) {
                state_changed_.wait_until(lock, pauses_.deadline());
            } else {
                state_changed_.wait(lock);
            }
        }
        // Only to deliver DONE, briefly: the guest has everything already.
        bool delivering_done = state() == State::Delivering;
        auto deadline = delivering_done ? Clock::now() + kGoodbyeWait : pauses_.deadline();
        std::string reason =
            pauses_.count() == 0 ? std::string("after DONE") : pauses_.last().reason;
        lock.unlock();
        switch (join_session(deadline, false, last)) {
            case Joining::Joined:
                continue;
            case Joining::Stopped:
                return;
            case Joining::GaveUp:
                if (delivering_done) {
                    return;  // complete here; the source will say it never heard so
                }
                return fail(transport::failure(
                    Errc::TimedOut, "the connection to the source broke (" + reason +
                                        ") and no new session could be made " + pauses_.within() +
                                        "; the last attempt: " + last.detail));
        }
    }
}

void DestinationLink::lost(std::uint64_t generation, const transport::Failure& why) {
    {
        std::lock_guard lock(mutex_);
        State s = state();
        if (generation != generation_ || s == State::Paused || s == State::Delivering ||
            s == State::Done || s == State::Failed) {
            return;  // an old session, or this break is being handled already
        }
        if (s == State::Complete) {
            if (!why.code) {
                enter(State::Done);  // the source closed in order: it has our DONE
                return;
            }
            if (link_stop_ || !recoverable_break(why, Peer::Source, options_.reconnect_timeout)) {
                return;  // our own teardown, or no recovery wanted
            }
            // The DONE may have been lost with the connection: one more session delivers it
            // (RESUME, then DONE), or the source would wait for it until its own deadline.
            enter(State::Delivering);
            drop_session(transport::failure(Errc::PeerLost, "reconnecting to deliver DONE"));
            return;
        }
        // A broken link, or a source that stopped (it may be started again on its image):
        // reconnect, even before the first LAYOUT arrived.
        if (recoverable_break(why, Peer::Source, options_.reconnect_timeout)) {
            if (s == State::Running) {
                // A break while still Resuming (no page since the last break) extends that pause.
                pauses_.begin(Clock::now(), started_at_, why.detail);
                pause_to_report_ = true;
            }
            enter(State::Paused);
            drop_session(transport::failure(Errc::PeerLost, "the session broke; reconnecting"));
            return;
        }
    }
    // Bad data from the source (a different layout included), our own stop, or no recovery
    // wanted: the end.
    fail(transport::Failure{why.code == Errc::ProtocolViolation ||
                                    why.code == Errc::InvalidArgument ||
                                    why.code == Errc::Unsupported
                                ? why.code
                                : make_error_code(Errc::PeerLost),
                            "the source went away before every page arrived (" + why.detail + ")"});
}

void DestinationLink::drop_session(const transport::Failure& why) {
    channels_->abort(why);
    channels_->forget();
    state_changed_.notify_all();
}

void DestinationLink::resumed(std::uint64_t generation) {
    {
        std::lock_guard lock(mutex_);
        if (generation != generation_) {
            return;
        }
    }
    if (!requests_.request_again() && stream_held()) {
        progressed(generation);  // nothing asked, nothing streamed: no page will say so
    }
}

void DestinationLink::progressed(std::uint64_t generation) {
    if (state() != State::Resuming) {
        return;  // the hot path: no pause to end
    }
    std::lock_guard lock(mutex_);
    // A late page of the session that broke (still in its ring when the break was seen) says
    // nothing about the source being back: only the session made since ends the pause.
    if (state() != State::Resuming || generation != generation_) {
        return;
    }
    pauses_.end(Clock::now());
    resume_to_report_ = true;
    enter(State::Running);
}

void DestinationLink::session_started(std::uint64_t generation) {
    std::uint64_t seen = started_generation_.load(std::memory_order_relaxed);
    while (seen < generation && !started_generation_.compare_exchange_weak(
                                    seen, generation, std::memory_order_release)) {
    }
}

void DestinationLink::stream_ended(std::uint64_t generation) {
    {
        std::lock_guard lock(mutex_);
        if (generation != generation_ || ++streams_ended_ < bulk_in_session_) {
            return;
        }
    }
    if (requests_.request_missing()) {
        request_queued();
    }
}

std::uint32_t DestinationLink::start_flags() const {
    return (options_.verify_hashes ? wire::Start::kWantHashes : 0U) |
           (stream_held() ? wire::Start::kStreamHeld : 0U) |
           (options_.bulk_channels == 0 ? wire::Start::kStreamOnUrgent : 0U);
}

void DestinationLink::completed() {
    std::lock_guard lock(mutex_);
    completed_at_ = Clock::now();
    State s = state();
    if (s == State::Failed) {
        return;
    }
    if (pauses_.active()) {
        // The last pages came in the broken session's ring: the guest has everything, which
        // ends the pause as surely as a new session's page would.
        pauses_.end(*completed_at_);
        resume_to_report_ = true;
    }
    enter(s == State::Paused ? State::Delivering : State::Complete);
    channels_->want_send_urgent();  // DONE; the source then closes everything
}

void DestinationLink::fail(transport::Failure why) {
    {
        std::lock_guard lock(mutex_);
        if (failure_ || complete()) {
            return;
        }
        failure_ = why;
        enter(State::Failed);
        if (channels_) {  // (none when open() failed)
            channels_->abort(why);
        }
        connect_io_.stop();
    }
    precopy_.wake();  // whoever waits to run the guest learns it never will
}

void DestinationLink::refuse_urgent(transport::ChannelId channel, const transport::Failure& why) {
    urgent_path_->abort(channel, why);
    fail(why);
}

void DestinationLink::refuse_bulk(transport::ChannelId channel, const transport::Failure& why) {
    bulk_path_->abort(channel, why);
    fail(why);
}

void DestinationLink::release_bulk(transport::ChannelId channel, std::uint64_t ticket) {
    bulk_path_->release(channel, ticket);
}

void DestinationLink::forget_placements(transport::ChannelId channel) {
    if (placement_) {
        placement_->forget(channel);
    }
}

void DestinationLink::channel_closed() {
    std::lock_guard lock(mutex_);
    --open_channels_;
    state_changed_.notify_all();
}

void DestinationLink::request_queued() {
    std::lock_guard lock(mutex_);
    channels_->want_send_urgent();
}

void DestinationLink::hold_stream(bool held) {
    stream_held_.store(held, std::memory_order_release);
    request_queued();  // the urgent connection tells the source
}

void DestinationLink::wait_settled(const std::function<void()>& tick) {
    std::unique_lock lock(mutex_);
    for (;;) {
        State s = state();
        bool closed = (s == State::Complete || s == State::Done) && open_channels_ <= 0;
        bool lingered = completed_at_ && Clock::now() - *completed_at_ > kGoodbyeWait;
        if (s == State::Failed || closed || lingered) {
            break;
        }
        state_changed_.wait_for(lock, std::chrono::milliseconds(100));
        if (tick) {
            lock.unlock();
            tick();
            lock.lock();
        }
    }
    link_stop_ = true;  // the link thread ends, even while delivering a DONE
    connect_io_.stop();
    state_changed_.notify_all();
}

void DestinationLink::shutdown() {
    if (link_thread_.joinable()) {
        link_thread_.join();
    }
    urgent_path_->stop();
    bulk_path_->stop();
    if (placement_) {
        placement_->stop();  // a bulk loop waiting in drain() goes on
    }
    if (urgent_thread_.joinable()) {
        urgent_thread_.join();
        bulk_thread_.join();
    }
}

bool DestinationLink::connected() const {
    std::lock_guard lock(mutex_);
    return channels_->has_urgent();
}

bool DestinationLink::paused() const {
    std::lock_guard lock(mutex_);
    return pauses_.active();
}

std::size_t DestinationLink::pause_count() const {
    std::lock_guard lock(mutex_);
    return pauses_.count();
}

std::vector<Pause> DestinationLink::pauses(Clock::time_point end) const {
    std::lock_guard lock(mutex_);
    return pauses_.report(end);
}

std::optional<transport::Failure> DestinationLink::failure() const {
    std::lock_guard lock(mutex_);
    return failure_;
}

std::optional<Clock::time_point> DestinationLink::completed_at() const {
    std::lock_guard lock(mutex_);
    return completed_at_;
}

std::uint64_t DestinationLink::bytes_received() const {
    return urgent_path_->stats().bytes_received + bulk_path_->stats().bytes_received;
}

}  // namespace uffdm::migration
