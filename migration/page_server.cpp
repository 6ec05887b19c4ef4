// page_server.cpp — The source's handlers: answers on urgent, the background stream on bulk.
#include "migration/page_server.hpp"

#include <sys/socket.h>

#include <bit>
#include <chrono>
#include <deque>
#include <thread>

#include "migration/data_paths.hpp"
#include "migration/page_hash.hpp"
#include "transport/byte_order.hpp"
#include "transport/control.hpp"

namespace uffdm::migration {

using transport::ChannelHandler;
using transport::ChannelId;
using transport::FrameView;
using transport::OutgoingFrame;

namespace {

constexpr std::uint64_t kPageMask = (std::uint64_t{1} << 48) - 1;

// PAGES frames whose hash arrays live in a ring of slots as long as the send window: a slot is
// reused only after the frame that borrowed it has been sent.
class FrameBuilder {
  public:
    FrameBuilder(const GuestMemory& memory, std::size_t window) : memory_(memory), slots_(window) {}

    OutgoingFrame pages(std::uint32_t region, std::uint64_t first, std::uint64_t count, bool zero,
                        bool hashes, bool answer) {
        wire::PagesHeader header{
            .region = region,
            .encoding = zero ? wire::Encoding::Zero : wire::Encoding::Raw,
            .flags = static_cast<std::uint8_t>((hashes && !zero ? wire::PagesHeader::kHashes : 0) |
                                               (answer ? wire::PagesHeader::kAnswer : 0)),
            .first_page = first,
            .count = static_cast<std::uint32_t>(count)};
        OutgoingFrame frame{.type = wire::frame_type(wire::MessageType::Pages)};
        (void)frame.set_inline(wire::encode(header));
        if (zero) {
            return frame;
        }
        auto data = memory_.pages(region, first, count);
        if (hashes) {
            auto& slot = slots_[next_++ % slots_.size()];
            slot.resize(count * 8);
            std::uint64_t page_size = data.size() / count;
            for (std::uint64_t i = 0; i < count; ++i) {
                transport::store_le<std::uint64_t>(
                    slot, i * 8, page_hash(data.subspan(i * page_size, page_size)));
            }
            frame.borrowed[0] = slot;
        }
        frame.borrowed[1] = data;
        return frame;
    }

  private:
    const GuestMemory& memory_;
    std::vector<std::vector<std::byte>> slots_;
    std::size_t next_ = 0;
};

}  // namespace

// Picks the next pages of the background stream: from a cursor that jumps after each request
// (the guest is likely to touch what follows), every page not yet sent, exactly once, in
// homogeneous runs (all zero or all data). Runs on the bulk loop thread only.
class PageServer::Streamer {
  public:
    struct Run {
        std::uint32_t region;
        std::uint64_t first;
        std::uint64_t count;
        bool zero;
    };

    explicit Streamer(PageServer& server) : server_(server) {}

    std::optional<Run> next() {
        if (auto seq = server_.hint_seq_.load(std::memory_order_acquire); seq != seen_seq_) {
            seen_seq_ = seq;
            std::uint64_t hint = server_.hint_.load(std::memory_order_relaxed);
            region_ = static_cast<std::uint32_t>(hint >> 48);
            page_ = hint & kPageMask;
        }
        const auto& regions = server_.memory_.layout().regions;
        // One more visit than there are regions: the first region again from page 0, for the
        // pages before where a hint put the cursor.
        for (std::size_t visit = 0; visit <= regions.size(); ++visit) {
            PageBitmap& sent = server_.sent_[region_];
            for (std::uint64_t p = sent.next_clear(page_); p < sent.size();
                 p = sent.next_clear(p + 1)) {
                if (sent.test_and_set(p)) {
                    return grow(sent, p);
                }
            }
            region_ = static_cast<std::uint32_t>((region_ + 1) % regions.size());
            page_ = 0;
        }
        return std::nullopt;
    }

  private:
    Run grow(PageBitmap& sent, std::uint64_t first) {
        const GuestMemory& memory = server_.memory_;
        std::uint64_t page_size = memory.layout().regions[region_].page_size;
        std::uint64_t limit =
            std::min(wire::max_pages_per_frame(page_size),
                     std::max<std::uint64_t>(1, server_.options_.bulk_run_bytes / page_size));
        bool zero = memory.is_zero(region_, first);
        std::uint64_t count = 1;
        while (count < limit && first + count < sent.size() && !sent.test(first + count) &&
               memory.is_zero(region_, first + count) == zero && sent.test_and_set(first + count)) {
            ++count;
        }
        page_ = first + count;
        return {region_, first, count, zero};
    }

    PageServer& server_;
    std::uint32_t region_ = 0;
    std::uint64_t page_ = 0;
    std::uint64_t seen_seq_ = 0;
};

// One bulk connection: pulls runs from the shared streamer while the window has room.
class PageServer::BulkHandler final : public ChannelHandler {
  public:
    BulkHandler(PageServer& server, std::size_t window, std::uint64_t session)
        : server_(server), builder_(server.memory_, window), session_(session) {}

    void on_frame(ChannelId channel, const FrameView& frame) override {
        transport::Failure why = transport::failure(
            Errc::ProtocolViolation,
            "the destination sent " + wire::to_string(static_cast<wire::MessageType>(frame.type)) +
                " on a bulk connection");
        server_.bulk_path_->abort(channel, why);
        server_.fail(why);
    }

    std::optional<OutgoingFrame> next_frame(ChannelId) override {
        // A held stream resumes through want_send; a stream on the urgent connection never
        // comes here (the streamer has one caller at a time).
        if (server_.active_session_.load(std::memory_order_acquire) != session_ || ended_ ||
            server_.stream_on_urgent_.load(std::memory_order_relaxed) ||
            server_.stream_held_.load(std::memory_order_acquire)) {
            return std::nullopt;
        }
        auto run = server_.streamer_->next();
        if (!run) {
            ended_ = true;
            return message_frame(wire::MessageType::StreamEnd,
                                 wire::encode(wire::StreamEnd{sent_}));
        }
        sent_ += run->count;
        server_.pages_streamed_.fetch_add(run->count, std::memory_order_relaxed);
        if (run->zero) {
            server_.zero_pages_.fetch_add(run->count, std::memory_order_relaxed);
        }
        return builder_.pages(run->region, run->first, run->count, run->zero,
                              server_.want_hashes_.load(std::memory_order_relaxed), false);
    }

    void on_closed(ChannelId, const transport::Failure& why) override {
        if (!server_.done()) {
            server_.lost(session_, "a bulk connection ended before the destination had every page",
                         why);
        }
        server_.open_channels_.fetch_sub(1);
    }

  private:
    PageServer& server_;
    FrameBuilder builder_;
    std::uint64_t session_;
    std::uint64_t sent_ = 0;
    bool ended_ = false;
};

// The urgent connection: LAYOUT first, then START, then every REQUEST answered at once.
class PageServer::UrgentHandler final : public ChannelHandler {
  public:
    UrgentHandler(PageServer& server, std::size_t window, std::uint64_t session)
        : server_(server), builder_(server.memory_, window), session_(session) {}

    void on_frame(ChannelId channel, const FrameView& frame) override {
        auto type = static_cast<wire::MessageType>(frame.type);
        const wire::Layout& layout = server_.memory_.layout();
        switch (type) {
            case wire::MessageType::Start: {
                auto start = wire::decode_start(frame.payload);
                if (state_ != State::AwaitStart || !start) {
                    return violation(channel, start ? "START twice" : start.error().detail);
                }
                if (!received_.empty()) {
                    return violation(channel,
                                     "START after BITMAP (a resuming destination "
                                     "sends RESUME)");
                }
                state_ = State::Serving;
                // A destination with nothing: whatever an earlier one was sent goes again.
                for (std::size_t r = 0; r < server_.sent_.size(); ++r) {
                    server_.sent_[r].clear();
                    server_.delivered_[r].clear();
                }
                server_.started_here_ = true;
                server_.started(start->flags, session_);
                return;
            }
            case wire::MessageType::Bitmap: {
                auto chunk = wire::decode_bitmap(frame.payload, layout);
                if (state_ != State::AwaitStart || !chunk) {
                    return violation(channel,
                                     chunk ? "BITMAP after START or RESUME" : chunk.error().detail);
                }
                if (received_.empty()) {
                    for (const auto& region : layout.regions) {
                        received_.emplace_back(region.pages());
                    }
                }
                PageBitmap& bits = received_[chunk->region];
                for (std::size_t i = 0; i < chunk->words.size(); ++i) {
                    std::size_t word = chunk->first_page / 64 + i;
                    bits.assign_word(word, bits.word(word) | chunk->words[i]);
                }
                return;
            }
            case wire::MessageType::Resume: {
                auto resume = wire::decode_resume(frame.payload);
                if (state_ != State::AwaitStart || !resume) {
                    return violation(
                        channel, resume ? "RESUME after START or RESUME" : resume.error().detail);
                }
                std::uint64_t present = 0;
                for (const PageBitmap& bits : received_) {
                    present += bits.count();
                }
                if (present != resume->pages_present) {
                    return violation(channel, "RESUME says " +
                                                  std::to_string(resume->pages_present) +
                                                  " pages are present but its BITMAPs hold " +
                                                  std::to_string(present));
                }
                if (auto claim = unsent_claim(); !claim.empty()) {
                    return violation(channel, claim);
                }
                state_ = State::Serving;
                // What the destination has is exactly what need not be sent again: every page
                // requested or in flight when the last session broke goes again.
                for (std::size_t r = 0; r < server_.sent_.size(); ++r) {
                    PageBitmap& sent = server_.sent_[r];
                    PageBitmap& delivered = server_.delivered_[r];
                    for (std::size_t w = 0; w < sent.words(); ++w) {
                        delivered.assign_word(w, delivered.word(w) | sent.word(w));
                        sent.assign_word(w, received_.empty() ? 0 : received_[r].word(w));
                    }
                }
                server_.resumes_.fetch_add(1, std::memory_order_relaxed);
                server_.started(resume->flags, session_);
                return;
            }
            case wire::MessageType::Stream: {
                auto stream = wire::decode_stream(frame.payload);
                if (state_ != State::Serving || !stream) {
                    return violation(channel,
                                     stream ? "STREAM before START" : stream.error().detail);
                }
                server_.hold_stream((stream->flags & wire::Stream::kHold) != 0);
                return;
            }
            case wire::MessageType::Request: {
                auto request = wire::decode_request(frame.payload, layout);
                if (state_ != State::Serving || !request) {
                    return violation(channel,
                                     request ? "REQUEST before START" : request.error().detail);
                }
                server_.requests_.fetch_add(1, std::memory_order_relaxed);
                server_.note_request(request->region, request->first_page + request->count);
                answers_.push_back(*request);
                return;
            }
            case wire::MessageType::Done: {
                auto done = wire::decode_done(frame.payload);
                if (state_ != State::Serving || !done) {
                    return violation(channel, done ? "DONE before START" : done.error().detail);
                }
                if (done->pages_present != layout.total_pages()) {
                    // A destination says DONE only with every page: this one lies or is broken.
                    return violation(channel, "DONE says " + std::to_string(done->pages_present) +
                                                  " pages are present; the guest has " +
                                                  std::to_string(layout.total_pages()));
                }
                state_ = State::Finished;
                server_.finished();
                return;
            }
            default:
                return violation(channel, "the destination sent " + wire::to_string(type));
        }
    }

    std::optional<OutgoingFrame> next_frame(ChannelId) override {
        if (!layout_sent_) {
            layout_sent_ = true;
            OutgoingFrame frame{.type = wire::frame_type(wire::MessageType::Layout)};
            frame.borrowed[0] = server_.layout_bytes_;  // lives as long as the server
            return frame;
        }
        if (state_ != State::Serving) {
            return std::nullopt;
        }
        if (answers_.empty()) {
            return stream_frame();
        }
        wire::Request& request = answers_.front();
        const GuestMemory& memory = server_.memory_;
        PageBitmap& sent = server_.sent_[request.region];
        std::uint64_t first = request.first_page;
        bool zero = memory.is_zero(request.region, first);
        std::uint64_t count = 1;
        while (count < request.count && memory.is_zero(request.region, first + count) == zero) {
            ++count;
        }
        for (std::uint64_t p = first; p < first + count; ++p) {
            if (!sent.test_and_set(p)) {
                // Streamed already, but the destination asked: it has not arrived there yet, and
                // the urgent connection will deliver it first.
                server_.pages_resent_.fetch_add(1, std::memory_order_relaxed);
            }
        }
        server_.pages_answered_.fetch_add(count, std::memory_order_relaxed);
        if (zero) {
            server_.zero_pages_.fetch_add(count, std::memory_order_relaxed);
        }
        request.first_page += count;
        request.count -= static_cast<std::uint32_t>(count);
        std::uint32_t region = request.region;
        if (request.count == 0) {
            answers_.pop_front();
        }
        return builder_.pages(region, first, count, zero,
                              server_.want_hashes_.load(std::memory_order_relaxed), true);
    }

    void on_closed(ChannelId, const transport::Failure& why) override {
        server_.open_channels_.fetch_sub(1);
        if (state_ == State::AwaitStart) {
            // Nothing was sent: a destination that only read the layout, or refused it. The
            // source waits for the next one.
            server_.session_ended_before_start(session_);
            return;
        }
        if (state_ != State::Finished) {
            server_.lost(session_, "the destination went away before it had every page", why);
        }
    }

  private:
    enum class State { AwaitStart, Serving, Finished };

    // With no bulk connections the stream fills what the answers leave of this connection:
    // an answer then waits behind the stream frames already in the send window.
    std::optional<OutgoingFrame> stream_frame() {
        if (!server_.stream_on_urgent_.load(std::memory_order_relaxed) ||
            server_.stream_held_.load(std::memory_order_acquire)) {
            return std::nullopt;
        }
        auto run = server_.streamer_->next();
        if (!run) {
            return std::nullopt;
        }
        server_.pages_streamed_.fetch_add(run->count, std::memory_order_relaxed);
        if (run->zero) {
            server_.zero_pages_.fetch_add(run->count, std::memory_order_relaxed);
        }
        return builder_.pages(run->region, run->first, run->count, run->zero,
                              server_.want_hashes_.load(std::memory_order_relaxed), false);
    }

    // A resuming destination's BITMAPs may claim only pages this source sent in this migration
    // (when it has seen the migration's START: a source restarted on its image cannot know what
    // its predecessor sent). What it finds: "" or the refusal naming the first page.
    [[nodiscard]] std::string unsent_claim() const {
        if (!server_.started_here_ || received_.empty()) {
            return {};
        }
        for (std::size_t r = 0; r < received_.size(); ++r) {
            const PageBitmap& sent = server_.sent_[r];
            const PageBitmap& delivered = server_.delivered_[r];
            for (std::size_t w = 0; w < sent.words(); ++w) {
                std::uint64_t never = received_[r].word(w) & ~(sent.word(w) | delivered.word(w));
                if (never != 0) {
                    return "BITMAP claims page " +
                           std::to_string(w * 64 +
                                          static_cast<std::size_t>(std::countr_zero(never))) +
                           " of region " + std::to_string(r) +
                           " is present, but this source never sent it";
                }
            }
        }
        return {};
    }

    void violation(ChannelId channel, const std::string& detail) {
        auto why = transport::failure(Errc::ProtocolViolation, detail);
        server_.urgent_path_->abort(channel, why);
        server_.fail(why);
    }

    PageServer& server_;
    FrameBuilder builder_;
    std::uint64_t session_;
    State state_ = State::AwaitStart;
    bool layout_sent_ = false;
    std::deque<wire::Request> answers_;
    std::vector<PageBitmap> received_;  // BITMAPs of a resuming destination, per region
};

PageServer::PageServer(const GuestMemory& memory, PageServerOptions options)
    : memory_(memory), options_(std::move(options)), layout_bytes_(wire::encode(memory.layout())) {
    for (const auto& region : memory.layout().regions) {
        sent_.emplace_back(region.pages());
        delivered_.emplace_back(region.pages());
    }
}

PageServer::~PageServer() {
    stop();
}

std::expected<std::unique_ptr<PageServer>, wire::Failure> PageServer::open(
    const GuestMemory& memory, PageServerOptions options) {
    std::unique_ptr<PageServer> server(new PageServer(memory, std::move(options)));
    auto paths = make_data_paths(server->options_.backend, server->options_.liveness);
    if (!paths) {
        return std::unexpected(paths.error());
    }
    server->urgent_path_ = std::move(paths->urgent);
    server->bulk_path_ = std::move(paths->bulk);
    server->window_ = paths->window;

    server->streamer_ = std::make_unique<Streamer>(*server);
    transport::ListenerOptions listen{.endpoint = server->options_.listen,
                                      .secret = server->options_.secret,
                                      .tls = server->options_.tls,
                                      .insecure = server->options_.insecure,
                                      .unix_mode = server->options_.unix_mode,
                                      .allowed_uids = server->options_.allowed_uids,
                                      .liveness = server->options_.liveness,
                                      .max_pending_handshakes = 64,
                                      .max_bulk_channels = server->options_.max_bulk_channels};
    PageServer* self = server.get();
    auto listener = transport::Listener::open(
        server->io_, listen, [self](transport::Connection c) { self->on_joined(std::move(c)); });
    if (!listener) {
        return std::unexpected(listener.error());
    }
    server->listener_ = *listener;
    return server;
}

transport::Endpoint PageServer::local_endpoint() const {
    return listener_->local_endpoint();
}

void PageServer::on_joined(transport::Connection connection) {
    const transport::Joined joined = connection.joined();
    std::lock_guard lock(mutex_);
    if (joined.role == transport::Role::Urgent) {
        if (urgent_id_ && active_session_.load() != session_ && !done()) {
            // The current destination has not sent START, so nothing has moved: the newer one
            // replaces it (a destination that probed the layout and came back, or retried).
            drop_session(transport::failure(
                Errc::Closed, "a newer destination replaced this one before it started"));
        }
        if (urgent_id_ || done()) {
            // One migration per server: a second destination learns why and is closed.
            auto refusal = transport::frame_of(
                transport::FrameType::Error,
                transport::ErrorMessage{transport::ErrorCode::Busy,
                                        "this source is already serving a destination"});
            (void)::send(connection.socket().native_handle(), refusal.data(), refusal.size(),
                         MSG_DONTWAIT | MSG_NOSIGNAL);
            return;
        }
        session_ = joined.session_id;
        open_channels_.fetch_add(1);
        // A handler per session: one that ended before START may still be finishing its
        // on_closed when the next destination arrives.
        urgent_.push_back(std::make_unique<UrgentHandler>(*this, window_, session_));
        urgent_id_ = urgent_path_->add(std::move(connection), *urgent_.back());
        urgent_path_->want_send(*urgent_id_);
        return;
    }
    if (joined.session_id != session_ || done()) {
        return;  // a straggler of a session that is over: closed by dropping it
    }
    bulk_.push_back(std::make_unique<BulkHandler>(*this, window_, session_));
    open_channels_.fetch_add(1);
    ChannelId id = bulk_path_->add(std::move(connection), *bulk_.back());
    bulk_ids_.push_back(id);
    if (active_session_.load(std::memory_order_acquire) == session_) {
        bulk_path_->want_send(id);
    }
}

// Closes the current session's connections and forgets it. The caller holds mutex_.
void PageServer::drop_session(const transport::Failure& why) {
    if (urgent_id_) {
        urgent_path_->abort(*urgent_id_, why);
    }
    for (ChannelId id : bulk_ids_) {
        bulk_path_->abort(id, why);
    }
    bulk_ids_.clear();
    listener_->end_session(session_);
    urgent_id_.reset();
}

std::uint64_t PageServer::current_session() const {
    std::lock_guard lock(mutex_);
    return session_;
}

void PageServer::started(std::uint32_t flags, std::uint64_t session) {
    want_hashes_.store((flags & wire::Start::kWantHashes) != 0, std::memory_order_relaxed);
    stream_held_.store((flags & wire::Start::kStreamHeld) != 0, std::memory_order_relaxed);
    stream_on_urgent_.store((flags & wire::Start::kStreamOnUrgent) != 0, std::memory_order_relaxed);
    std::lock_guard lock(mutex_);
    if (session != session_) {
        return;  // replaced meanwhile
    }
    active_session_.store(session, std::memory_order_release);
    waiting_since_.reset();
    for (ChannelId id : bulk_ids_) {
        bulk_path_->want_send(id);
    }
}

void PageServer::lost(std::uint64_t session, const std::string& what,
                      const transport::Failure& why) {
    transport::Failure final_failure;
    {
        std::lock_guard lock(mutex_);
        if (done() || session != session_) {
            return;  // over already, or a session that was already given up
        }
        // A destination that ended it on purpose (its ERROR), an orderly close before DONE, our
        // own refusal, or no recovery wanted: the migration is over. A broken link: wait.
        bool deliberate = !why.code || why.code == Errc::PeerAborted ||
                          why.code == Errc::ProtocolViolation ||
                          why.code == Errc::InvalidArgument || why.code == Errc::Closed;
        if (!deliberate && options_.reconnect_timeout.count() > 0) {
            active_session_.store(0, std::memory_order_release);
            drop_session(transport::failure(
                Errc::PeerLost, "the session broke (" + what + "); waiting for the destination"));
            session_ = 0;
            waiting_since_ = std::chrono::steady_clock::now();
            lost_why_ = what + ": " + describe_end(why);
            ++pauses_;
            return;
        }
        final_failure = transport::failure(
            why.code == Errc::ProtocolViolation ? Errc::ProtocolViolation : Errc::PeerLost,
            what + ": " + describe_end(why));
    }
    fail(final_failure);
}

void PageServer::hold_stream(bool held) {
    stream_held_.store(held, std::memory_order_release);
    if (held) {
        return;  // frames already in the send windows still go; no new ones are taken
    }
    std::lock_guard lock(mutex_);
    if (urgent_id_) {
        urgent_path_->want_send(*urgent_id_);
    }
    for (ChannelId id : bulk_ids_) {
        bulk_path_->want_send(id);
    }
}

void PageServer::session_ended_before_start(std::uint64_t session) {
    std::lock_guard lock(mutex_);
    if (session != session_) {
        return;  // a session already replaced by a newer one
    }
    if (session_ != 0) {
        listener_->end_session(session_);
    }
    for (ChannelId id : bulk_ids_) {
        bulk_path_->close(id);  // its bulk connections carried nothing yet
    }
    bulk_ids_.clear();
    urgent_id_.reset();
    session_ = 0;
}

void PageServer::note_request(std::uint32_t region, std::uint64_t page) {
    hint_.store((std::uint64_t{region} << 48) | (page & kPageMask), std::memory_order_relaxed);
    hint_seq_.fetch_add(1, std::memory_order_release);
}

void PageServer::finished() {
    done_.store(true, std::memory_order_release);
    std::lock_guard lock(mutex_);
    if (urgent_id_) {
        urgent_path_->close(*urgent_id_);
    }
    for (ChannelId id : bulk_ids_) {
        bulk_path_->close(id);
    }
}

void PageServer::fail(transport::Failure why) {
    std::lock_guard lock(mutex_);
    if (done()) {
        return;
    }
    failure_ = why;
    done_.store(true, std::memory_order_release);
    if (urgent_id_) {
        urgent_path_->abort(*urgent_id_, why);
    }
    for (ChannelId id : bulk_ids_) {
        bulk_path_->abort(id, why);
    }
}

void PageServer::stop() {
    fail(transport::failure(Errc::Closed, "the source was stopped"));
}

SourceProgress PageServer::progress() const {
    SourceProgress p;
    p.pages_total = memory_.layout().total_pages();
    p.pages_sent = pages_streamed_.load() + pages_answered_.load() - pages_resent_.load();
    p.requests = requests_.load();
    p.bytes_sent = urgent_path_->stats().bytes_sent + bulk_path_->stats().bytes_sent;
    std::lock_guard lock(mutex_);
    p.connected = urgent_id_.has_value();
    return p;
}

SourceStats PageServer::run() {
    std::thread urgent_loop([this] {
        name_this_thread("uffdm-s-urgent");
        urgent_path_->run();
    });
    std::thread bulk_loop([this] {
        name_this_thread("uffdm-s-bulk");
        bulk_path_->run();
    });
    listener_->start();
    std::optional<std::chrono::steady_clock::time_point> joined_at;
    std::optional<std::chrono::steady_clock::time_point> done_at;
    for (;;) {
        io_.run_for(std::chrono::milliseconds(100));
        auto now = std::chrono::steady_clock::now();
        SourceProgress p = progress();
        if (p.connected && !joined_at) {
            joined_at = now;
        }
        std::optional<std::string> gave_up;
        {
            std::lock_guard lock(mutex_);
            if (waiting_since_ && !done() && now - *waiting_since_ > options_.reconnect_timeout) {
                gave_up = lost_why_ + "; it did not come back within " +
                          std::to_string(options_.reconnect_timeout.count()) + " ms";
            }
        }
        if (gave_up) {
            fail(transport::failure(Errc::TimedOut, *gave_up));
        }
        if (done() && !done_at) {
            done_at = now;
        }
        if (options_.on_progress) {
            options_.on_progress(p);
        }
        // Finished when every channel has said goodbye; bounded, so a peer that never closes
        // cannot keep the source alive.
        if (done_at && (open_channels_.load() <= 0 || now - *done_at > std::chrono::seconds(5))) {
            break;
        }
    }
    listener_->stop();
    io_.run_for(std::chrono::milliseconds(10));
    urgent_path_->stop();
    bulk_path_->stop();
    urgent_loop.join();
    bulk_loop.join();

    SourceStats report;
    {
        std::lock_guard lock(mutex_);
        report.ok = !failure_;
        if (failure_) {
            report.error = to_error(*failure_);
        }
        report.bulk_channels = bulk_ids_.size();
    }
    report.seconds = joined_at ? std::chrono::duration<double>(*done_at - *joined_at).count() : 0.0;
    report.pages_total = memory_.layout().total_pages();
    report.pages_streamed = pages_streamed_.load();
    report.pages_answered = pages_answered_.load();
    report.pages_resent = pages_resent_.load();
    report.resumes = resumes_.load();
    {
        std::lock_guard lock(mutex_);
        report.pauses = pauses_;
    }
    report.zero_pages = zero_pages_.load();
    report.requests = requests_.load();
    report.bytes_sent = urgent_path_->stats().bytes_sent + bulk_path_->stats().bytes_sent;
    return report;
}

}  // namespace uffdm::migration
