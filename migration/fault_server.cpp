// fault_server.cpp — The destination's fault thread, channel handlers, connection and teardown.
#include "migration/fault_server.hpp"

#include <algorithm>
#include <bit>
#include <deque>

#include "migration/data_paths.hpp"
#include "uffd/fault_reader.hpp"

namespace uffdm::migration {

using transport::ChannelHandler;
using transport::ChannelId;
using transport::FrameView;
using transport::OutgoingFrame;
using transport::violation;

namespace {

constexpr std::uint64_t kDoneToken = 1;
constexpr auto kGoodbyeWait = std::chrono::seconds(5);

}  // namespace

// The urgent connection: checks LAYOUT, sends START, REQUESTs as faults queue them, places the
// answers, and DONE once every page is present.
class FaultServer::UrgentHandler final : public ChannelHandler {
  public:
    UrgentHandler(FaultServer& server, std::uint64_t generation, bool resuming)
        : server_(server), generation_(generation), resuming_(resuming) {}

    void on_frame(ChannelId channel, const FrameView& frame) override {
        if (server_.failed()) {
            return;  // refused already: nothing more from this source is used, until the abort
        }
        auto type = static_cast<wire::MessageType>(frame.type);
        if (type == wire::MessageType::Layout) {
            auto layout = wire::decode_layout(frame.payload);
            if (layout_checked_ || !layout) {
                return refuse(channel,
                              transport::failure(Errc::ProtocolViolation,
                                                 layout ? "LAYOUT twice" : layout.error().detail));
            }
            if (*layout != server_.layout_) {
                return refuse(
                    channel, transport::failure(Errc::InvalidArgument,
                                                "guest layouts differ: the source has " +
                                                    layout->describe() + "; this destination has " +
                                                    server_.layout_.describe()));
            }
            layout_checked_ = true;
            return;
        }
        if (type == wire::MessageType::Pages && layout_checked_) {
            if (!start_sent_) {
                return refuse(channel, violation(std::string("the source sent PAGES before ") +
                                                 (resuming_ ? "RESUME" : "START")));
            }
            auto run = wire::decode_pages(frame.payload, server_.layout_);
            if (!run) {
                return refuse(channel, run.error());
            }
            bool answer = (run->header.flags & wire::PagesHeader::kAnswer) != 0;
            if (!answer && (start_flags_ & wire::Start::kStreamOnUrgent) == 0) {
                return refuse(channel, violation("the source streamed pages on the urgent "
                                                 "connection while bulk connections carry the "
                                                 "stream"));
            }
            if (answer) {
                if (auto unasked = server_.unrequested_page(*run)) {
                    return refuse(channel,
                                  violation("the source answered a REQUEST never made: region " +
                                            std::to_string(run->header.region) + " page " +
                                            std::to_string(*unasked)));
                }
            }
            // Without bulk connections the stream shares this connection: only answers count
            // as urgent.
            Path path = answer ? Path::Urgent : Path::Background;
            if (auto placed = server_.placer_.place(*run, path); !placed) {
                return refuse(channel, placed.error());
            }
            if (server_.pause_active_.load(std::memory_order_acquire)) {
                server_.progressed(generation_);
            }
            return;
        }
        refuse(channel, transport::failure(Errc::ProtocolViolation,
                                           "the source sent " + wire::to_string(type) +
                                               (layout_checked_ ? "" : " before LAYOUT") +
                                               " on the urgent connection"));
    }

    std::optional<OutgoingFrame> next_frame(ChannelId) override {
        if (!layout_checked_ || done_sent_ || server_.failed()) {
            return std::nullopt;  // (failed: not even START, while the abort is on its way)
        }
        if (!start_sent_) {
            if (resuming_) {
                if (auto chunk = next_bitmap()) {
                    return chunk;
                }
            }
            start_sent_ = true;
            held_sent_ = server_.stream_held_.load(std::memory_order_acquire);
            std::uint32_t flags = server_.start_flags();
            start_flags_ = flags;
            server_.session_started(generation_);
            if (!resuming_) {
                return message_frame(wire::MessageType::Start, wire::encode(wire::Start{flags}));
            }
            // Every page still wanted is asked for again, behind the RESUME.
            server_.resumed(generation_);
            return message_frame(wire::MessageType::Resume,
                                 wire::encode(wire::Resume{flags, bits_sent_}));
        }
        if (server_.complete_.load(std::memory_order_acquire)) {
            done_sent_ = true;
            return message_frame(wire::MessageType::Done,
                                 wire::encode(wire::Done{server_.placer_.present_pages()}),
                                 kDoneToken);
        }
        if (bool held = server_.stream_held_.load(std::memory_order_acquire); held != held_sent_) {
            held_sent_ = held;
            return message_frame(wire::MessageType::Stream,
                                 wire::encode(wire::Stream{held ? wire::Stream::kHold : 0U}));
        }
        wire::Request request;
        if (!server_.pop_request(request)) {
            return std::nullopt;
        }
        server_.requests_sent_.fetch_add(1, std::memory_order_relaxed);
        return message_frame(wire::MessageType::Request, wire::encode(request));
    }

    void on_closed(ChannelId, const transport::Failure& why) override {
        // After completion too: this connection carries DONE, and how it ends says whether the
        // source has it (an orderly close) or a new session must deliver it (a break).
        server_.lost(generation_,
                     transport::Failure{why.code, "the urgent connection: " + describe_end(why)});
        server_.channel_closed();
    }

  private:
    void refuse(ChannelId channel, const transport::Failure& why) {
        server_.urgent_path_->abort(channel, why);
        server_.fail(why);
    }

    // The present bitmaps, region by region, at most kMaxBitmapPages pages a frame. A page placed
    // after its word was copied is sent again by the source: a duplicate, never a loss.
    std::optional<OutgoingFrame> next_bitmap() {
        const auto& regions = server_.layout_.regions;
        while (bitmap_region_ < regions.size()) {
            const PageBitmap& present = server_.placer_.present(bitmap_region_);
            std::uint64_t pages = regions[bitmap_region_].pages();
            if (bitmap_page_ >= pages) {
                ++bitmap_region_;
                bitmap_page_ = 0;
                continue;
            }
            wire::BitmapChunk chunk{.region = bitmap_region_,
                                    .first_page = bitmap_page_,
                                    .count = std::min(wire::kMaxBitmapPages, pages - bitmap_page_),
                                    .words = {}};
            for (std::uint64_t w = 0; w < (chunk.count + 63) / 64; ++w) {
                std::uint64_t bits = present.word(bitmap_page_ / 64 + w);
                chunk.words.push_back(bits);
                bits_sent_ += static_cast<std::uint64_t>(std::popcount(bits));
            }
            bitmap_page_ += chunk.count;
            // Kept until the handler goes: the frame borrows it until it is sent.
            const std::vector<std::byte>& bytes = bitmaps_.emplace_back(wire::encode(chunk));
            OutgoingFrame frame{.type = wire::frame_type(wire::MessageType::Bitmap)};
            frame.borrowed[0] = bytes;
            return frame;
        }
        return std::nullopt;
    }

    FaultServer& server_;
    std::uint64_t generation_;
    bool resuming_;
    std::uint32_t start_flags_ = 0;  // what START or RESUME told the source
    std::uint32_t bitmap_region_ = 0;
    std::uint64_t bitmap_page_ = 0;
    std::uint64_t bits_sent_ = 0;
    std::deque<std::vector<std::byte>> bitmaps_;
    bool layout_checked_ = false;
    bool start_sent_ = false;
    bool held_sent_ = false;  // what the source was last told of the background stream
    bool done_sent_ = false;
};

// A bulk connection: places the background stream.
class FaultServer::BulkHandler final : public ChannelHandler {
  public:
    BulkHandler(FaultServer& server, std::uint64_t generation)
        : server_(server), generation_(generation) {}

    void on_frame(ChannelId channel, const FrameView& frame) override {
        if (server_.failed()) {
            return;  // refused already: nothing more from this source is used, until the abort
        }
        auto type = static_cast<wire::MessageType>(frame.type);
        // The source streams only once it has this session's START or RESUME (a later session
        // having started means this one did too: its late frames are still honest).
        bool running = server_.started_generation_.load(std::memory_order_acquire) >= generation_;
        bool known = type == wire::MessageType::Pages || type == wire::MessageType::StreamEnd;
        if (known && running && stream_ended_) {
            return refuse(channel, violation("the source sent " + wire::to_string(type) +
                                             " after the STREAM_END of that bulk connection"));
        }
        if (type == wire::MessageType::Pages && running) {
            auto run = wire::decode_pages(frame.payload, server_.layout_);
            if (!run) {
                return refuse(channel, run.error());
            }
            if ((run->header.flags & wire::PagesHeader::kAnswer) != 0) {
                return refuse(channel, violation("the source sent an answer to a REQUEST on a "
                                                 "bulk connection (answers go on the urgent one)"));
            }
            if (auto placed = server_.placer_.place(*run, Path::Background); !placed) {
                return refuse(channel, placed.error());
            }
            pages_received_ += run->header.count;
            if (server_.pause_active_.load(std::memory_order_acquire)) {
                server_.progressed(generation_);
            }
            return;
        }
        if (type == wire::MessageType::StreamEnd && running) {
            auto end = wire::decode_stream_end(frame.payload);
            if (!end) {
                return refuse(channel, end.error());
            }
            if (end->pages_sent != pages_received_) {
                return refuse(channel,
                              violation("STREAM_END says " + std::to_string(end->pages_sent) +
                                        " pages were streamed on this bulk connection; " +
                                        std::to_string(pages_received_) + " arrived"));
            }
            stream_ended_ = true;
            server_.stream_ended(generation_);
            return;
        }
        refuse(channel,
               violation("the source sent " + wire::to_string(type) +
                         (running || !known ? "" : " before this session's START or RESUME") +
                         " on a bulk connection"));
    }

    void on_closed(ChannelId, const transport::Failure& why) override {
        if (!server_.complete_.load(std::memory_order_acquire)) {
            server_.lost(generation_,
                         transport::Failure{why.code, "a bulk connection: " + describe_end(why)});
        }
        server_.channel_closed();
    }

  private:
    void refuse(ChannelId channel, const transport::Failure& why) {
        server_.bulk_path_->abort(channel, why);
        server_.fail(why);
    }
    FaultServer& server_;
    std::uint64_t generation_;
    std::uint64_t pages_received_ = 0;  // what STREAM_END must count
    bool stream_ended_ = false;         // STREAM_END arrived: nothing more may
};

FaultServer::FaultServer(uffd::UserfaultFd uffd, std::vector<GuestRegion> regions,
                         wire::Layout layout, uffd::EventFd stop_faults, FaultServerOptions options)
    : options_(std::move(options)),
      uffd_(std::move(uffd)),
      layout_(std::move(layout)),
      placer_(uffd_, std::move(regions), waits_, options_.verify_hashes),
      stop_faults_(std::move(stop_faults)),
      stream_held_(options_.hold_stream) {}

std::expected<std::unique_ptr<FaultServer>, wire::Failure> FaultServer::create(
    uffd::UserfaultFd uffd, std::vector<GuestRegion> regions, FaultServerOptions options) {
    wire::Layout layout;
    for (std::size_t i = 0; i < regions.size(); ++i) {
        const GuestRegion& r = regions[i];
        layout.regions.push_back({static_cast<std::uint32_t>(i), r.page_size, r.length});
        if (r.page_size != 0 && reinterpret_cast<std::uintptr_t>(r.data) % r.page_size != 0) {
            return std::unexpected(transport::failure(
                Errc::Unaligned, "guest region " + std::to_string(i) +
                                     " does not start on a boundary of its page size"));
        }
    }
    if (auto ok = wire::validate(layout); !ok) {
        return std::unexpected(
            transport::failure(Errc::InvalidArgument, "guest regions: " + ok.error().detail));
    }
    if (options.bulk_channels > transport::kMaxBulkChannels) {
        return std::unexpected(transport::failure(
            Errc::InvalidArgument, "bulk channels " + std::to_string(options.bulk_channels) +
                                       " outside 0.." +
                                       std::to_string(transport::kMaxBulkChannels)));
    }
    if (!uffd.valid()) {
        return std::unexpected(transport::failure(Errc::Closed, "no userfaultfd to serve with"));
    }
    auto stop_faults = uffd::EventFd::create();
    if (!stop_faults) {
        return std::unexpected(
            wire::Failure{stop_faults.error(), "eventfd: " + stop_faults.error().message()});
    }
    std::unique_ptr<FaultServer> server(new FaultServer(std::move(uffd), std::move(regions),
                                                        std::move(layout), std::move(*stop_faults),
                                                        std::move(options)));
    auto paths = make_data_paths(server->options_.backend, server->options_.liveness);
    if (!paths) {
        return std::unexpected(paths.error());
    }
    server->urgent_path_ = std::move(paths->urgent);
    server->bulk_path_ = std::move(paths->bulk);
    return server;
}

FaultServer::~FaultServer() {
    stop();
    if (started_ && !waited_) {
        (void)wait();
    }
    if (started_ && !complete_.load()) {
        poison_missing();
    }
}

std::expected<void, wire::Failure> FaultServer::start() {
    if (started_) {
        return std::unexpected(transport::failure(Errc::InvalidArgument, "already started"));
    }
    for (const GuestRegion& r : placer_.regions()) {
        auto registration = uffd_.register_range(reinterpret_cast<std::uint64_t>(r.data), r.length,
                                                 uffd::RegisterModes::missing_only());
        if (!registration) {
            registrations_.clear();
            return std::unexpected(wire::Failure{registration.error(),
                                                 "registering guest memory with the userfaultfd: " +
                                                     registration.error().message()});
        }
        bool copy = registration->ioctls().has(uffd::Ioctl::Copy);
        bool zeropage = registration->ioctls().has(uffd::Ioctl::Zeropage);
        if (!copy || (r.zeropage_ioctl && !zeropage)) {
            registrations_.clear();
            return std::unexpected(transport::failure(
                Errc::Unsupported, std::string("the kernel does not allow ") +
                                       (copy ? "UFFDIO_ZEROPAGE" : "UFFDIO_COPY") + " on " +
                                       std::string(uffdm::to_string(r.kind)) + " guest memory"));
        }
        registrations_.push_back(std::move(*registration));
    }
    placer_.on_complete([this] { completed(); });
    started_ = true;
    started_at_ = Clock::now();
    // Named, so that top -H, perf and a VMM's own thread listing tell them apart.
    fault_thread_ = std::thread([this] {
        name_this_thread("uffdm-faults");
        fault_loop();
    });
    urgent_thread_ = std::thread([this] {
        name_this_thread("uffdm-d-urgent");
        urgent_path_->run();
    });
    bulk_thread_ = std::thread([this] {
        name_this_thread("uffdm-d-bulk");
        bulk_path_->run();
    });
    connect_thread_ = std::thread([this] {
        name_this_thread("uffdm-link");
        link_loop();
    });
    return {};
}

std::expected<transport::Session, transport::SessionFailure> FaultServer::connect_once() {
    using Result = std::optional<std::expected<transport::Session, transport::SessionFailure>>;
    auto result = std::make_shared<Result>();
    transport::SessionOptions session{.endpoint = options_.source,
                                      .secret = options_.secret,
                                      .tls = options_.tls,
                                      .bulk_channels = options_.bulk_channels,
                                      .liveness = options_.liveness};
    // One io_context for every attempt: the sockets it makes belong to its services, so it
    // outlives the connections it hands over. An abandoned attempt may finish when it runs again;
    // its session then closes unused (the shared result keeps that harmless).
    {
        std::lock_guard lock(mutex_);
        if (ended_.load() || link_stop_) {
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

bool FaultServer::attach(transport::Session joined) {
    std::lock_guard lock(mutex_);
    if (ended_.load()) {
        return false;  // stopped while connecting: the connections close with the session
    }
    ++generation_;
    broken_ = false;  // still paused until pages flow again (progressed)
    streams_ended_ = 0;
    bulk_in_session_ = joined.bulk.size();
    open_channels_ += 1 + static_cast<std::int64_t>(joined.bulk.size());
    urgent_.push_back(std::make_unique<UrgentHandler>(*this, generation_, generation_ > 1));
    urgent_id_ = urgent_path_->add(std::move(joined.urgent), *urgent_.back());
    bulk_ids_.clear();
    for (auto& connection : joined.bulk) {
        bulk_.push_back(std::make_unique<BulkHandler>(*this, generation_));
        bulk_ids_.push_back(bulk_path_->add(std::move(connection), *bulk_.back()));
    }
    connected_ = true;
    urgent_path_->want_send(*urgent_id_);
    return true;
}

namespace {

// The source was there, and the link or the source broke before the session was made.
bool broke_after_reaching(const transport::SessionFailure& why) {
    return why.reached && (why.code == Errc::PeerLost || why.code == Errc::TimedOut);
}

}  // namespace

// Makes sessions with backoff (50 ms doubling to 1 s) until one joins or `deadline` passes;
// each attempt authenticates anew. The first session of a migration gives up at once when
// nothing listens at the address (a wrong address, a source not started yet) or the source
// refused us; one that was reached and then broke is retried like any later break.
FaultServer::Joining FaultServer::join_session(Clock::time_point deadline, bool first,
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
        if (ended_.load() || link_stop_) {
            return Joining::Stopped;
        }
        if (Clock::now() + backoff >= deadline) {
            return Joining::GaveUp;
        }
        state_changed_.wait_for(wait, backoff, [&] { return ended_.load(); });
        backoff = std::min(backoff * 2, std::chrono::milliseconds(1000));
    }
}

// The link thread: the first session, then after every break new ones, and the pause and
// resume callbacks (never from a data path loop: the embedder's code may take its time).
void FaultServer::link_loop() {
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
                // Both may be pending (a pause that ended before this thread woke): in order.
                bool pausing = pause_to_report_;
                bool resuming = resume_to_report_;
                pause_to_report_ = resume_to_report_ = false;
                Pause pause = pauses_.back();
                lock.unlock();
                if (pausing && options_.on_pause) {
                    options_.on_pause(pause);
                }
                if (resuming && options_.on_resume) {
                    options_.on_resume(pause);
                }
                lock.lock();
                continue;
            }
            // Complete is not the end of this thread: a break before the source closed in
            // order after DONE means the DONE may be lost, and a new session delivers it.
            if (ended_.load() || link_stop_ || (complete_.load() && done_delivered_)) {
                return;
            }
            if (broken_) {
                break;
            }
            auto deadline = paused_at_ + options_.reconnect_timeout;
            if (paused_ && Clock::now() >= deadline) {
                // Sessions were made, but no page came: a source that accepts and serves nothing.
                std::string reason = pauses_.back().reason;
                lock.unlock();
                return fail(transport::failure(
                    Errc::TimedOut, "the connection to the source broke (" + reason +
                                        ") and no page arrived within " +
                                        std::to_string(options_.reconnect_timeout.count()) +
                                        " ms, though new sessions were made"));
            }
            if (paused_) {
                state_changed_.wait_until(lock, deadline);
            } else {
                state_changed_.wait(lock);
            }
        }
        // Only to deliver DONE, briefly: the guest has everything already.
        bool delivering_done = complete_.load();
        auto deadline =
            delivering_done ? Clock::now() + kGoodbyeWait : paused_at_ + options_.reconnect_timeout;
        std::string reason = pauses_.empty() ? std::string("after DONE") : pauses_.back().reason;
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
                                        ") and no new session could be made within " +
                                        std::to_string(options_.reconnect_timeout.count()) +
                                        " ms; the last attempt: " + last.detail));
        }
    }
}

void FaultServer::lost(std::uint64_t generation, const transport::Failure& why) {
    {
        std::lock_guard lock(mutex_);
        if (generation != generation_ || broken_ || failure_) {
            return;  // an old session, or this break is being handled already
        }
        if (complete_.load()) {
            if (!why.code) {
                done_delivered_ = true;  // the source closed in order: it has our DONE
                state_changed_.notify_all();
                return;
            }
            if (link_stop_ || why.code == Errc::Closed || options_.reconnect_timeout.count() == 0) {
                return;  // our own teardown, or no recovery wanted
            }
            // The DONE may have been lost with the connection: one more session delivers it
            // (RESUME, then DONE), or the source would wait for it until its own deadline.
            broken_ = true;
            drop_session(transport::failure(Errc::PeerLost, "reconnecting to deliver DONE"));
            return;
        }
        // Bad data from the source (a different layout included), our own stop, or no recovery
        // wanted: the end. A broken link, or a source that stopped (it may be started again on
        // its image): reconnect, even before the first LAYOUT arrived.
        bool permanent = options_.reconnect_timeout.count() == 0 ||
                         why.code == Errc::ProtocolViolation || why.code == Errc::InvalidArgument ||
                         why.code == Errc::Closed;
        if (!permanent) {
            broken_ = true;
            if (!paused_) {
                // A break while still paused (no page since the last one) extends that pause.
                paused_ = true;
                paused_generation_ = generation_;
                pause_active_.store(true, std::memory_order_release);
                paused_at_ = Clock::now();
                pauses_.push_back({std::chrono::duration<double>(paused_at_ - started_at_).count(),
                                   0, why.detail, false});
                pause_to_report_ = true;
            }
            drop_session(transport::failure(Errc::PeerLost, "the session broke; reconnecting"));
            return;
        }
    }
    fail(transport::Failure{why.code == Errc::ProtocolViolation || why.code == Errc::InvalidArgument
                                ? why.code
                                : make_error_code(Errc::PeerLost),
                            "the source went away before every page arrived (" + why.detail + ")"});
}

// Closes what is left of the current session (a PeerLost ERROR: the source waits for the next
// one) and wakes the link thread. The caller holds mutex_.
void FaultServer::drop_session(const transport::Failure& why) {
    connected_ = false;
    if (urgent_id_) {
        urgent_path_->abort(*urgent_id_, why);
    }
    for (ChannelId id : bulk_ids_) {
        bulk_path_->abort(id, why);
    }
    urgent_id_.reset();
    bulk_ids_.clear();
    state_changed_.notify_all();
}

void FaultServer::resumed(std::uint64_t generation) {
    {
        std::lock_guard lock(mutex_);
        if (generation != generation_) {
            return;
        }
        // Rebuilt from the bitmaps below: every page a thread waits for (requested, not
        // present), whether its request was lost with the old session or queued in the break.
        requests_.clear();
    }
    bool wanted_any = false;
    for (std::uint32_t r = 0; r < layout_.regions.size(); ++r) {
        PageBitmap& requested = placer_.requested(r);
        PageBitmap& present = placer_.present(r);
        std::lock_guard lock(mutex_);
        for (std::size_t w = 0; w < requested.words(); ++w) {
            std::uint64_t wanted = requested.word(w) & ~present.word(w);
            while (wanted != 0) {
                auto bit = static_cast<std::uint64_t>(std::countr_zero(wanted));
                wanted &= wanted - 1;
                requests_.push_back({r, 1, w * 64 + bit});
                wanted_any = true;
            }
        }
    }
    if (!wanted_any && stream_held_.load(std::memory_order_acquire)) {
        progressed(generation);  // nothing asked, nothing streamed: no page will say so
    }
}

void FaultServer::progressed(std::uint64_t generation) {
    std::lock_guard lock(mutex_);
    // A late page of the session that broke (still in its ring when the break was seen) says
    // nothing about the source being back: only a session made since ends the pause.
    if (!paused_ || generation != generation_ || generation <= paused_generation_) {
        return;
    }
    paused_ = false;
    pause_active_.store(false, std::memory_order_release);
    Pause& last = pauses_.back();
    last.seconds = std::chrono::duration<double>(Clock::now() - paused_at_).count();
    last.resumed = true;
    resume_to_report_ = true;
    state_changed_.notify_all();
}

void FaultServer::session_started(std::uint64_t generation) {
    std::uint64_t seen = started_generation_.load(std::memory_order_relaxed);
    while (seen < generation && !started_generation_.compare_exchange_weak(
                                    seen, generation, std::memory_order_release)) {
    }
}

std::optional<std::uint64_t> FaultServer::unrequested_page(const wire::PagesView& run) {
    // Marked before its REQUEST was queued (fault thread, request_missing), and never cleared:
    // an honest answer always finds its bits set.
    PageBitmap& requested = placer_.requested(run.header.region);
    for (std::uint64_t p = run.header.first_page; p < run.header.first_page + run.header.count;
         ++p) {
        if (!requested.test(p)) {
            return p;
        }
    }
    return std::nullopt;
}

void FaultServer::stream_ended(std::uint64_t generation) {
    {
        std::lock_guard lock(mutex_);
        if (generation != generation_ || ++streams_ended_ < bulk_in_session_) {
            return;
        }
    }
    request_missing();
}

// The stream has ended on every bulk connection, so every page it sent is here or on its way on
// the urgent connection. Whatever is still missing and unrequested would otherwise wait for a
// fault: ask for it. Normally nothing is; it is the safety net under recovery.
void FaultServer::request_missing() {
    std::optional<ChannelId> urgent;
    for (std::uint32_t r = 0; r < layout_.regions.size(); ++r) {
        PageBitmap& present = placer_.present(r);
        PageBitmap& requested = placer_.requested(r);
        std::uint64_t limit = wire::max_pages_per_frame(layout_.regions[r].page_size);
        for (std::uint64_t p = present.next_clear(0); p < present.size();
             p = present.next_clear(p + 1)) {
            if (!requested.test_and_set(p)) {
                continue;
            }
            std::lock_guard lock(mutex_);
            if (!requests_.empty() && requests_.back().region == r &&
                requests_.back().first_page + requests_.back().count == p &&
                requests_.back().count < limit) {
                ++requests_.back().count;
            } else {
                requests_.push_back({r, 1, p});
            }
            urgent = urgent_id_;
        }
    }
    if (urgent) {
        urgent_path_->want_send(*urgent);
    }
}

std::uint32_t FaultServer::start_flags() const {
    return (options_.verify_hashes ? wire::Start::kWantHashes : 0U) |
           (stream_held_.load(std::memory_order_acquire) ? wire::Start::kStreamHeld : 0U) |
           (options_.bulk_channels == 0 ? wire::Start::kStreamOnUrgent : 0U);
}

void FaultServer::fault_loop() {
    uffd::FaultReader reader(uffd_, stop_faults_);
    for (;;) {
        auto batch = reader.next();
        if (!batch) {
            return fail(wire::Failure{
                batch.error(), "reading faults from the userfaultfd: " + batch.error().message()});
        }
        if (batch->stopped) {
            return;
        }
        auto now = Clock::now();
        for (const auto& event : batch->events) {
            if (const auto* fault = std::get_if<uffd::PageFault>(&event)) {
                handle_fault(fault->address, fault->thread_id, now);
            }
        }
    }
}

void FaultServer::handle_fault(std::uint64_t address, std::uint32_t thread_id,
                               Clock::time_point now) {
    faults_.fetch_add(1, std::memory_order_relaxed);
    const auto& regions = placer_.regions();
    for (std::uint32_t r = 0; r < regions.size(); ++r) {
        auto base = reinterpret_cast<std::uint64_t>(regions[r].data);
        if (address < base || address - base >= regions[r].length) {
            continue;
        }
        std::uint64_t page = (address - base) / regions[r].page_size;
        PageBitmap& present = placer_.present(r);
        if (present.test(page)) {
            return;  // arrived since the fault; its placement woke the thread
        }
        waits_.add(r, page, now, thread_id);
        if (placer_.requested(r).test_and_set(page)) {
            std::optional<ChannelId> urgent;
            {
                std::lock_guard lock(mutex_);
                requests_.push_back({r, 1, page});
                urgent = urgent_id_;
            }
            if (urgent) {
                urgent_path_->want_send(*urgent);
            }
        }
        // Placed between the check above and the wait being recorded: the placer may not have
        // seen the wait, so complete it here.
        if (present.test(page)) {
            waits_.complete(r, page, Clock::now());
        }
        return;
    }
}

bool FaultServer::pop_request(wire::Request& out) {
    std::lock_guard lock(mutex_);
    while (!requests_.empty()) {
        out = requests_.front();
        requests_.pop_front();
        if (placer_.present(out.region).test(out.first_page)) {
            continue;  // the stream brought it while the request waited
        }
        // Faults on consecutive pages (a sequential scan) share one request.
        std::uint64_t limit = wire::max_pages_per_frame(layout_.regions[out.region].page_size);
        while (!requests_.empty() && requests_.front().region == out.region &&
               requests_.front().first_page == out.first_page + out.count && out.count < limit) {
            out.count += requests_.front().count;
            requests_.pop_front();
        }
        return true;
    }
    return false;
}

void FaultServer::completed() {
    {
        std::lock_guard lock(mutex_);
        complete_.store(true, std::memory_order_release);
        completed_at_ = Clock::now();
        if (paused_) {
            // The last pages came in the broken session's ring: the guest has everything, which
            // ends the pause as surely as a new session's page would.
            paused_ = false;
            pause_active_.store(false, std::memory_order_release);
            pauses_.back().seconds =
                std::chrono::duration<double>(*completed_at_ - paused_at_).count();
            pauses_.back().resumed = true;
            resume_to_report_ = true;
        }
        if (urgent_id_) {
            urgent_path_->want_send(*urgent_id_);  // DONE; the source then closes everything
        }
    }
    state_changed_.notify_all();
}

void FaultServer::fail(transport::Failure why) {
    {
        std::lock_guard lock(mutex_);
        if (failure_ || complete_.load()) {
            return;
        }
        failure_ = why;
        ended_.store(true);
        if (urgent_id_) {
            urgent_path_->abort(*urgent_id_, why);
        }
        for (ChannelId id : bulk_ids_) {
            bulk_path_->abort(id, why);
        }
        connect_io_.stop();
    }
    state_changed_.notify_all();
}

void FaultServer::channel_closed() {
    {
        std::lock_guard lock(mutex_);
        --open_channels_;
    }
    state_changed_.notify_all();
}

void FaultServer::hold_stream(bool held) {
    stream_held_.store(held, std::memory_order_release);
    std::lock_guard lock(mutex_);
    if (urgent_id_) {
        urgent_path_->want_send(*urgent_id_);
    }
}

void FaultServer::stop() {
    fail(transport::failure(Errc::Closed, "the destination was stopped"));
}

DestinationProgress FaultServer::progress() const {
    DestinationProgress p;
    p.pages_total = placer_.total_pages();
    p.pages_present = placer_.present_pages();
    p.bytes_received = urgent_path_->stats().bytes_received + bulk_path_->stats().bytes_received;
    p.faults = faults_.load(std::memory_order_relaxed);
    p.seconds = started_ ? std::chrono::duration<double>(Clock::now() - started_at_).count() : 0;
    std::lock_guard lock(mutex_);
    p.connected = connected_;
    p.paused = paused_;
    p.pauses = pauses_.size();
    return p;
}

DestinationStats FaultServer::wait() {
    DestinationStats report;
    if (!started_) {
        report.error =
            to_error(transport::failure(Errc::InvalidArgument, "the destination never started"));
        return report;
    }
    if (!waited_) {
        waited_ = true;
        std::unique_lock lock(mutex_);
        for (;;) {
            bool closed = complete_.load() && open_channels_ <= 0 && !broken_;
            bool lingered = completed_at_ && Clock::now() - *completed_at_ > kGoodbyeWait;
            if (failure_ || closed || lingered) {
                break;
            }
            state_changed_.wait_for(lock, std::chrono::milliseconds(100));
            if (options_.on_progress) {
                lock.unlock();
                options_.on_progress(progress());
                lock.lock();
            }
        }
        link_stop_ = true;  // the link thread ends, even while delivering a DONE
        connect_io_.stop();
        state_changed_.notify_all();
        lock.unlock();
        (void)stop_faults_.signal();
        fault_thread_.join();
        connect_thread_.join();
        urgent_path_->stop();
        bulk_path_->stop();
        urgent_thread_.join();
        bulk_thread_.join();
        if (complete_.load()) {
            // Every page is there: nothing can fault any more. Unregister and close.
            registrations_.clear();
            auto closing = std::move(uffd_);
        } else if (options_.poison_on_failure) {
            // The embedder chose a memory error over a hang for whatever did not arrive.
            poison_missing();
        }
        if (options_.on_progress) {
            options_.on_progress(progress());
        }
    }
    std::lock_guard lock(mutex_);
    report.ok = !failure_;
    if (failure_) {
        report.error = to_error(*failure_);
    }
    auto end = completed_at_.value_or(Clock::now());
    report.seconds = std::chrono::duration<double>(end - started_at_).count();
    report.pages_total = placer_.total_pages();
    report.bytes_total = layout_.total_bytes();
    PagesByPath pages = placer_.pages();
    report.pages_urgent = pages.urgent;
    report.pages_background = pages.background;
    report.pages_zero = pages.zero;
    report.pages_duplicate = pages.duplicate;
    report.faults = faults_.load();
    report.requests = requests_sent_.load();
    report.bytes_received =
        urgent_path_->stats().bytes_received + bulk_path_->stats().bytes_received;
    report.fault_latency = waits_.latency().summary();
    report.fault_threads = waits_.threads();
    report.max_thread_blocked_ms = waits_.max_thread_blocked_ms();
    report.hashes_verified = placer_.hashes_verified();
    report.bookkeeping_bytes = placer_.bookkeeping_bytes();
    report.data_path = urgent_path_->describe();
    waits_.latency().for_each_bucket(
        [&](double upper, std::uint64_t n) { report.latency_buckets.emplace_back(upper, n); });
    report.pauses = pauses_;
    if (!report.pauses.empty() && !report.pauses.back().resumed) {
        report.pauses.back().seconds = std::chrono::duration<double>(end - paused_at_).count();
    }
    return report;
}

void FaultServer::poison_missing() {
    if (!uffd_.valid()) {
        return;
    }
    for (std::uint32_t r = 0; r < placer_.regions().size(); ++r) {
        const GuestRegion& region = placer_.regions()[r];
        PageBitmap& present = placer_.present(r);
        for (std::uint64_t p = present.next_clear(0); p < present.size();
             p = present.next_clear(p + 1)) {
            std::uint64_t end = p + 1;
            while (end < present.size() && !present.test(end)) {
                ++end;
            }
            auto address = reinterpret_cast<std::uint64_t>(region.data) + p * region.page_size;
            if (auto poisoned = uffd_.poison(address, (end - p) * region.page_size); !poisoned) {
                // No UFFDIO_POISON here: unregistering would hand waiting threads pages of zeros.
                // Keep the registrations and the descriptor for the life of the process instead,
                // so they stay blocked (the VMM decides what to do with the guest).
                new std::vector<uffd::Registration>(std::move(registrations_));
                new uffd::UserfaultFd(std::move(uffd_));
                return;
            }
            p = end;
        }
    }
    registrations_.clear();
}

}  // namespace uffdm::migration
