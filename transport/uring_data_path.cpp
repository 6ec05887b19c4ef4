// uring_data_path.cpp — The data path on io_uring: gather sendmsg, reads into fixed-buffer rings.
#include "transport/backends.hpp"

#include <fcntl.h>
#include <liburing.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "transport/channel_core.hpp"

namespace uffdm::transport {

namespace {

constexpr std::uint64_t kWakeTag = 1;
constexpr std::uint64_t kKindMask = 7;
constexpr std::uint64_t kKindReceive = 2;
constexpr std::uint64_t kKindSend = 3;
constexpr std::uint64_t kKindCancel = 4;
constexpr unsigned kFixedBufferSlots = 64;

Failure uring_failure(const char* what, int err) {
    return Failure{std::error_code(err, std::system_category()),
                   std::string("io_uring: ") + what + ": " + std::strerror(err)};
}

struct UringChannel {
    UringChannel(ChannelId id, ChannelHandler& handler, MirrorRing ring, int fd,
                 const DataPathOptions& options, Clock::time_point now,
                 std::unique_ptr<TlsSession> tls)
        : core(id, handler, std::move(ring), options, now, std::move(tls)), fd(fd) {}
    UringChannel(const UringChannel&) = delete;
    UringChannel& operator=(const UringChannel&) = delete;
    ~UringChannel() {
        if (fd >= 0) {
            ::close(fd);
        }
    }

    ChannelCore core;
    int fd;
    int buffer_slot = -1;      // the ring's fixed buffer slot, or -1
    bool fixed_reads = false;  // read into the fixed buffer (else plain recv)
    bool receiving = false;
    bool sending = false;
    bool cancelled = false;
    msghdr message{};
};

class UringDataPath final : public DataPath {
  public:
    explicit UringDataPath(DataPathOptions options) : options_(std::move(options)) {}
    ~UringDataPath() override {
        channels_.clear();
        if (ring_ready_) {
            ::io_uring_queue_exit(&ring_);
        }
        if (wake_fd_ >= 0) {
            ::close(wake_fd_);
        }
    }

    std::expected<void, Failure> init() {
        io_uring_params params{};
        int rc = ::io_uring_queue_init_params(static_cast<unsigned>(options_.uring_entries), &ring_,
                                              &params);
        if (rc < 0) {
            return std::unexpected(uring_failure("setting up a ring", -rc));
        }
        ring_ready_ = true;
        io_uring_probe* probe = ::io_uring_get_probe_ring(&ring_);
        if (probe == nullptr) {
            return std::unexpected(uring_failure("probing opcodes", ENOSYS));
        }
        bool usable = ::io_uring_opcode_supported(probe, IORING_OP_SENDMSG) &&
                      ::io_uring_opcode_supported(probe, IORING_OP_RECV) &&
                      ::io_uring_opcode_supported(probe, IORING_OP_READ) &&
                      ::io_uring_opcode_supported(probe, IORING_OP_ASYNC_CANCEL);
        fixed_reads_ = ::io_uring_opcode_supported(probe, IORING_OP_READ_FIXED);
        ::io_uring_free_probe(probe);
        if (!usable) {
            return std::unexpected(uring_failure("sendmsg, recv, read or cancel missing", ENOSYS));
        }
        if (options_.register_buffers && fixed_reads_) {
            buffers_registered_ =
                ::io_uring_register_buffers_sparse(&ring_, kFixedBufferSlots) == 0;
            slot_used_.assign(kFixedBufferSlots, false);
        }
        wake_fd_ = ::eventfd(0, EFD_CLOEXEC);  // blocking: io_uring polls it
        if (wake_fd_ < 0) {
            return std::unexpected(uring_failure("eventfd", errno));
        }
        return {};
    }

    Backend backend() const noexcept override { return Backend::IoUring; }

    std::string describe() const override {
        return buffers_registered_ ? "io_uring (receive rings as fixed buffers)"
                                   : "io_uring (plain receives)";
    }

    ChannelId add(Connection connection, ChannelHandler& handler) override {
        ChannelId id = next_id_.fetch_add(1);
        auto buffered = connection.take_buffered();
        auto tls = connection.take_tls();
        int fd = connection.socket().release();
        // Asio left the socket non-blocking; io_uring would then hand back EAGAIN instead of
        // waiting for readiness itself.
        int flags = ::fcntl(fd, F_GETFL);
        ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
        std::lock_guard lock(mutex_);
        requests_.adds.push_back(Add{id, fd, &handler, std::move(buffered), std::move(tls),
                                     connection.joined().version});
        wake_locked();
        return id;
    }

    void want_send(ChannelId /*channel*/) override {
        // Every open channel is asked for frames each time the loop turns; it only has to turn.
        if (!on_loop_thread()) {
            std::lock_guard lock(mutex_);
            wake_locked();
        }
    }

    void close(ChannelId channel) override {
        std::lock_guard lock(mutex_);
        requests_.closes.push_back(channel);
        wake_locked();
    }

    void abort(ChannelId channel, Failure why) override {
        std::lock_guard lock(mutex_);
        requests_.aborts.emplace_back(channel, std::move(why));
        wake_locked();
    }

    void release(ChannelId channel, std::uint64_t ticket) override {
        std::lock_guard lock(mutex_);
        requests_.releases.emplace_back(channel, ticket);
        wake_locked();
    }

    void post(std::function<void()> task) override {
        std::lock_guard lock(mutex_);
        requests_.tasks.push_back(std::move(task));
        wake_locked();
    }

    void stop() override {
        std::lock_guard lock(mutex_);
        requests_.stop = true;
        wake_locked();
    }

    DataPathStats stats() const override {
        std::lock_guard lock(stats_mutex_);
        return stats_snapshot_;
    }

    void run() override {
        loop_thread_.store(std::this_thread::get_id());
        arm_wake();
        auto next_tick = Clock::now() + kLivenessTick;
        for (;;) {
            take_requests();
            if (stopping_) {
                for (auto& [id, channel] : channels_) {
                    channel->core.fail(failure(Errc::Closed, "the data path stopped"));
                }
            }
            drive_all();
            if (stopping_ && channels_.empty()) {
                break;
            }
            __kernel_timespec timeout{.tv_sec = 0, .tv_nsec = 100'000'000};
            io_uring_cqe* cqe = nullptr;
            int rc = ::io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &timeout, nullptr);
            if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EBUSY) {
                fail_everything(uring_failure("waiting for completions", -rc));
            }
            auto now = Clock::now();
            unsigned head = 0;
            unsigned seen = 0;
            io_uring_for_each_cqe(&ring_, head, cqe) {
                complete(*cqe, now);
                ++seen;
            }
            ::io_uring_cq_advance(&ring_, seen);
            if (now >= next_tick) {
                for (auto& [id, channel] : channels_) {
                    channel->core.on_tick(now, channel->sending);
                }
                next_tick = now + kLivenessTick;
            }
            publish_stats();
        }
        publish_stats();
        loop_thread_.store(std::thread::id{});
    }

  private:
    struct Add {
        ChannelId id;
        int fd;
        ChannelHandler* handler;
        std::vector<std::byte> buffered;
        std::unique_ptr<TlsSession> tls;
        std::uint16_t version;
    };
    struct Requests {
        std::vector<Add> adds;
        std::vector<ChannelId> closes;
        std::vector<std::pair<ChannelId, Failure>> aborts;
        std::vector<std::pair<ChannelId, std::uint64_t>> releases;
        std::vector<std::function<void()>> tasks;
        bool stop = false;
    };

    bool on_loop_thread() const { return loop_thread_.load() == std::this_thread::get_id(); }

    void wake_locked() {
        if (!wake_pending_) {
            wake_pending_ = true;
            std::uint64_t one = 1;
            (void)!::write(wake_fd_, &one, sizeof one);
        }
    }

    io_uring_sqe* sqe() {
        io_uring_sqe* entry = ::io_uring_get_sqe(&ring_);
        if (entry == nullptr) {
            ::io_uring_submit(&ring_);
            entry = ::io_uring_get_sqe(&ring_);
        }
        return entry;  // never null after a submit: the ring has room for every channel's ops
    }

    void arm_wake() {
        io_uring_sqe* entry = sqe();
        ::io_uring_prep_read(entry, wake_fd_, &wake_value_, sizeof wake_value_, 0);
        ::io_uring_sqe_set_data64(entry, kWakeTag);
    }

    void take_requests() {
        Requests taken;
        {
            std::lock_guard lock(mutex_);
            std::swap(taken, requests_);
            stopping_ = stopping_ || taken.stop;
        }
        auto now = Clock::now();
        for (Add& add : taken.adds) {
            open_channel(add, now);
        }
        for (auto [id, ticket] : taken.releases) {
            if (auto it = channels_.find(id); it != channels_.end()) {
                it->second->core.release(ticket);
            }
        }
        for (ChannelId id : taken.closes) {
            if (auto it = channels_.find(id); it != channels_.end()) {
                it->second->core.request_close();
            }
        }
        for (auto& [id, why] : taken.aborts) {
            if (auto it = channels_.find(id); it != channels_.end()) {
                it->second->core.abort(std::move(why));
            }
        }
        for (auto& task : taken.tasks) {
            task();
        }
    }

    void open_channel(Add& add, Clock::time_point now) {
        auto ring = MirrorRing::create(
            std::max<std::size_t>(options_.receive_ring_bytes, kHeaderSize + options_.max_payload));
        if (!ring) {
            ::close(add.fd);
            add.handler->on_closed(add.id, ring.error());
            return;
        }
        auto channel = std::make_unique<UringChannel>(add.id, *add.handler, std::move(*ring),
                                                      add.fd, options_, now, std::move(add.tls));
        channel->core.set_version(add.version);
        if (buffers_registered_ && channel->core.reads_into_ring()) {
            for (unsigned slot = 0; slot < kFixedBufferSlots; ++slot) {
                if (slot_used_[slot]) {
                    continue;
                }
                auto whole = channel->core.ring().whole_mapping();
                iovec buffer{whole.data(), whole.size()};
                // RLIMIT_MEMLOCK (or a kernel that cannot pin this memory) may refuse: the
                // channel then reads with plain recv, nothing else changes.
                if (::io_uring_register_buffers_update_tag(&ring_, slot, &buffer, nullptr, 1) ==
                    1) {
                    slot_used_[slot] = true;
                    channel->buffer_slot = static_cast<int>(slot);
                    channel->fixed_reads = true;
                    ++fixed_buffer_channels_;
                }
                break;
            }
        }
        channel->core.preload(add.buffered, now);
        channels_.emplace(add.id, std::move(channel));
    }

    void drive_all() {
        auto now = Clock::now();
        for (auto it = channels_.begin(); it != channels_.end();) {
            if (drive(*it->second, now)) {
                it = channels_.erase(it);
            } else {
                ++it;
            }
        }
    }

    // Issues what the channel needs next. True when it has ended and may be freed.
    bool drive(UringChannel& channel, Clock::time_point now) {
        ChannelCore& core = channel.core;
        if (core.done()) {
            if (channel.receiving || channel.sending) {
                if (!channel.cancelled) {
                    cancel(channel, kKindReceive, channel.receiving);
                    cancel(channel, kKindSend, channel.sending);
                    channel.cancelled = true;
                }
                return false;
            }
            finish(channel);
            return true;
        }
        auto space = core.receive_space();
        if (!channel.receiving && !space.empty()) {
            io_uring_sqe* entry = sqe();
            if (channel.fixed_reads) {
                ::io_uring_prep_read_fixed(entry, channel.fd, space.data(),
                                           static_cast<unsigned>(space.size()), 0,
                                           channel.buffer_slot);
            } else {
                ::io_uring_prep_recv(entry, channel.fd, space.data(), space.size(), 0);
            }
            ::io_uring_sqe_set_data64(entry, tag(channel, kKindReceive));
            channel.receiving = true;
            ++core.stats().receive_calls;
        }
        if (!channel.sending) {
            if (core.wants_shutdown_write()) {
                ::shutdown(channel.fd, SHUT_WR);
                core.write_shut();
            }
            auto iovecs = core.send_iovecs();
            if (!iovecs.empty()) {
                channel.message = msghdr{};
                channel.message.msg_iov = const_cast<iovec*>(iovecs.data());
                channel.message.msg_iovlen = iovecs.size();
                io_uring_sqe* entry = sqe();
                ::io_uring_prep_sendmsg(entry, channel.fd, &channel.message, MSG_NOSIGNAL);
                ::io_uring_sqe_set_data64(entry, tag(channel, kKindSend));
                channel.sending = true;
                core.send_started(now);
            }
        }
        return false;
    }

    void cancel(UringChannel& channel, std::uint64_t kind, bool in_flight) {
        if (!in_flight) {
            return;
        }
        io_uring_sqe* entry = sqe();
        ::io_uring_prep_cancel64(entry, tag(channel, kind), 0);
        ::io_uring_sqe_set_data64(entry, kKindCancel);
    }

    void finish(UringChannel& channel) {
        if (channel.buffer_slot >= 0) {
            iovec empty{nullptr, 0};
            (void)::io_uring_register_buffers_update_tag(
                &ring_, static_cast<unsigned>(channel.buffer_slot), &empty, nullptr, 1);
            slot_used_[static_cast<std::size_t>(channel.buffer_slot)] = false;
        }
        channel.core.finish(channel.fd, retired_);  // the fd closes with the channel
    }

    static std::uint64_t tag(UringChannel& channel, std::uint64_t kind) {
        return reinterpret_cast<std::uint64_t>(&channel) | kind;
    }

    void complete(const io_uring_cqe& cqe, Clock::time_point now) {
        std::uint64_t data = ::io_uring_cqe_get_data64(&cqe);
        if (data == kWakeTag) {
            {
                std::lock_guard lock(mutex_);
                wake_pending_ = false;
            }
            arm_wake();
            return;
        }
        std::uint64_t kind = data & kKindMask;
        if (kind == kKindCancel) {
            return;
        }
        auto& channel = *reinterpret_cast<UringChannel*>(data & ~kKindMask);
        ChannelCore& core = channel.core;
        int res = cqe.res;
        if (kind == kKindReceive) {
            channel.receiving = false;
            if (res > 0) {
                core.on_received(static_cast<std::size_t>(res), now);
            } else if (res == 0) {
                core.on_receive_error(0);
            } else if (res == -EINVAL && channel.fixed_reads) {
                channel.fixed_reads = false;  // this kernel cannot read sockets into fixed buffers
            } else if (res != -EAGAIN && res != -EINTR && res != -ECANCELED) {
                core.on_receive_error(-res);
            }
        } else if (kind == kKindSend) {
            channel.sending = false;
            if (res >= 0) {
                core.on_sent(static_cast<std::size_t>(res), now);
            } else if (res != -EAGAIN && res != -EINTR && res != -ECANCELED) {
                core.on_send_error(-res);
            }
        }
    }

    void fail_everything(const Failure& why) {
        for (auto& [id, channel] : channels_) {
            channel->core.fail(why);
        }
        stopping_ = true;
    }

    void publish_stats() {
        DataPathStats total = retired_;
        for (auto& [id, channel] : channels_) {
            accumulate(total, channel->core.stats());
        }
        total.fixed_buffer_channels = fixed_buffer_channels_;
        std::lock_guard lock(stats_mutex_);
        stats_snapshot_ = total;
    }

    DataPathOptions options_;
    io_uring ring_{};
    bool ring_ready_ = false;
    bool fixed_reads_ = false;
    bool buffers_registered_ = false;
    std::vector<bool> slot_used_;
    std::uint64_t fixed_buffer_channels_ = 0;
    int wake_fd_ = -1;
    std::uint64_t wake_value_ = 0;
    std::atomic<std::thread::id> loop_thread_{};
    std::atomic<ChannelId> next_id_{1};

    std::mutex mutex_;  // requests_ and wake_pending_
    Requests requests_;
    bool wake_pending_ = false;

    bool stopping_ = false;  // loop thread only from here down
    std::unordered_map<ChannelId, std::unique_ptr<UringChannel>> channels_;
    DataPathStats retired_;

    mutable std::mutex stats_mutex_;
    DataPathStats stats_snapshot_;
};

}  // namespace

std::expected<std::unique_ptr<DataPath>, Failure> make_uring_data_path(DataPathOptions options) {
    auto path = std::make_unique<UringDataPath>(std::move(options));
    if (auto ok = path->init(); !ok) {
        return std::unexpected(ok.error());
    }
    return path;
}

}  // namespace uffdm::transport
