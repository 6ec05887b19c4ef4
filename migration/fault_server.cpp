// fault_server.cpp — The destination's fault thread, channel handlers, connection and teardown.
#include "migration/fault_server.hpp"

#include <bit>

#include "migration/data_paths.hpp"
#include "uffd/fault_reader.hpp"

namespace uffdm::migration {

using transport::ChannelHandler;
using transport::ChannelId;
using transport::FrameView;
using transport::OutgoingFrame;

namespace {

constexpr std::uint64_t kDoneToken = 1;
constexpr auto kGoodbyeWait = std::chrono::seconds(5);

}  // namespace

// The urgent connection: checks LAYOUT, sends START, REQUESTs as faults queue them, places the
// answers, and DONE once every page is present.
class FaultServer::UrgentHandler final : public ChannelHandler {
  public:
    explicit UrgentHandler(FaultServer& server) : server_(server) {}

    void on_frame(ChannelId channel, const FrameView& frame) override {
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
            server_.running_.store(true, std::memory_order_release);
            return;
        }
        if (type == wire::MessageType::Pages && layout_checked_) {
            auto run = wire::decode_pages(frame.payload, server_.layout_);
            if (!run) {
                return refuse(channel, run.error());
            }
            // Without bulk connections the stream shares this connection: only answers count
            // as urgent.
            Path path = (run->header.flags & wire::PagesHeader::kAnswer) != 0 ? Path::Urgent
                                                                              : Path::Background;
            if (auto placed = server_.placer_.place(*run, path); !placed) {
                return refuse(channel, placed.error());
            }
            return;
        }
        refuse(channel, transport::failure(Errc::ProtocolViolation,
                                           "the source sent " + wire::to_string(type) +
                                               (layout_checked_ ? "" : " before LAYOUT") +
                                               " on the urgent connection"));
    }

    std::optional<OutgoingFrame> next_frame(ChannelId) override {
        if (!layout_checked_ || done_sent_) {
            return std::nullopt;
        }
        if (!start_sent_) {
            start_sent_ = true;
            held_sent_ = server_.stream_held_.load(std::memory_order_acquire);
            std::uint32_t flags =
                (server_.options_.verify_hashes ? wire::Start::kWantHashes : 0U) |
                (held_sent_ ? wire::Start::kStreamHeld : 0U) |
                (server_.options_.bulk_channels == 0 ? wire::Start::kStreamOnUrgent : 0U);
            return message_frame(wire::MessageType::Start, wire::encode(wire::Start{flags}));
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
        if (!server_.complete_.load(std::memory_order_acquire)) {
            server_.fail(transport::Failure{
                why.code == Errc::ProtocolViolation || why.code == Errc::InvalidArgument
                    ? why.code
                    : make_error_code(Errc::PeerLost),
                "the source went away before every page arrived: " + describe_end(why)});
        }
        server_.channel_closed();
    }

  private:
    void refuse(ChannelId channel, const transport::Failure& why) {
        server_.urgent_path_->abort(channel, why);
        server_.fail(why);
    }

    FaultServer& server_;
    bool layout_checked_ = false;
    bool start_sent_ = false;
    bool held_sent_ = false;  // what the source was last told of the background stream
    bool done_sent_ = false;
};

// A bulk connection: places the background stream.
class FaultServer::BulkHandler final : public ChannelHandler {
  public:
    explicit BulkHandler(FaultServer& server) : server_(server) {}

    void on_frame(ChannelId channel, const FrameView& frame) override {
        auto type = static_cast<wire::MessageType>(frame.type);
        bool running = server_.running_.load(std::memory_order_acquire);
        if (type == wire::MessageType::Pages && running) {
            auto run = wire::decode_pages(frame.payload, server_.layout_);
            if (!run) {
                return refuse(channel, run.error());
            }
            if (auto placed = server_.placer_.place(*run, Path::Background); !placed) {
                return refuse(channel, placed.error());
            }
            return;
        }
        if (type == wire::MessageType::StreamEnd && running) {
            if (auto end = wire::decode_stream_end(frame.payload); !end) {
                return refuse(channel, end.error());
            }
            return;
        }
        refuse(channel, transport::failure(Errc::ProtocolViolation,
                                           "the source sent " + wire::to_string(type) +
                                               (running ? "" : " before the layout was agreed") +
                                               " on a bulk connection"));
    }

    void on_closed(ChannelId, const transport::Failure& why) override {
        if (!server_.complete_.load(std::memory_order_acquire)) {
            server_.fail(transport::Failure{
                why.code == Errc::ProtocolViolation ? why.code : make_error_code(Errc::PeerLost),
                "the source went away before every page arrived (a bulk connection): " +
                    describe_end(why)});
        }
        server_.channel_closed();
    }

  private:
    void refuse(ChannelId channel, const transport::Failure& why) {
        server_.bulk_path_->abort(channel, why);
        server_.fail(why);
    }

    FaultServer& server_;
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
    server->urgent_ = std::make_unique<UrgentHandler>(*server);
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
        name_this_thread("uffdm-connect");
        connect();
    });
    return {};
}

void FaultServer::connect() {
    std::optional<std::expected<transport::Session, transport::Failure>> result;
    transport::SessionOptions session{.endpoint = options_.source,
                                      .secret = options_.secret,
                                      .tls = options_.tls,
                                      .bulk_channels = options_.bulk_channels,
                                      .liveness = options_.liveness};
    transport::asio::co_spawn(
        connect_io_,
        [&]() -> transport::asio::awaitable<void> {
            result.emplace(co_await transport::connect_session(session));
        },
        transport::asio::detached);
    // connect(2) itself has no deadline in the kernel for minutes; ours is the handshake's.
    connect_io_.run_for(options_.liveness.handshake_timeout * 2);
    if (!result) {
        connect_io_.stop();
        return fail(transport::failure(
            Errc::PeerLost,
            "cannot reach the source at " + options_.source.to_string() + " within " +
                std::to_string(2 * options_.liveness.handshake_timeout.count()) + " ms"));
    }
    if (!*result) {
        return fail(result->error());
    }
    transport::Session& joined = **result;
    std::lock_guard lock(mutex_);
    if (ended_.load()) {
        return;  // stopped while connecting: the connections close with the session
    }
    open_channels_ += 1 + static_cast<std::int64_t>(joined.bulk.size());
    urgent_id_ = urgent_path_->add(std::move(joined.urgent), *urgent_);
    for (auto& connection : joined.bulk) {
        bulk_.push_back(std::make_unique<BulkHandler>(*this));
        bulk_ids_.push_back(bulk_path_->add(std::move(connection), *bulk_.back()));
    }
    connected_ = true;
    urgent_path_->want_send(*urgent_id_);
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
            bool closed = complete_.load() && open_channels_ <= 0;
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
