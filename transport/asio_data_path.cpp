// asio_data_path.cpp — The data path on Asio's reactor, for kernels where io_uring is unusable.
#include <sys/socket.h>

#include <atomic>
#include <thread>
#include <unordered_map>

#include "transport/asio.hpp"
#include "transport/backends.hpp"
#include "transport/channel_core.hpp"

namespace uffdm::transport {

namespace {

struct AsioChannel {
    AsioChannel(ChannelId id, ChannelHandler& handler, MirrorRing ring, Socket socket,
                const DataPathOptions& options, Clock::time_point now,
                std::unique_ptr<TlsSession> tls)
        : core(id, handler, std::move(ring), options, now, std::move(tls)),
          socket(std::move(socket)) {}

    ChannelCore core;
    Socket socket;
    bool receiving = false;
    bool sending = false;
    bool cancelled = false;
    std::vector<asio::const_buffer> buffers;
};

class AsioDataPath final : public DataPath {
  public:
    explicit AsioDataPath(DataPathOptions options)
        : options_(std::move(options)), work_(io_.get_executor()), timer_(io_) {}

    Backend backend() const noexcept override { return Backend::Asio; }
    std::string describe() const override { return "asio (epoll reactor)"; }

    ChannelId add(Connection connection, ChannelHandler& handler) override {
        ChannelId id = next_id_.fetch_add(1);
        auto buffered = connection.take_buffered();
        auto protocol = connection.socket().local_endpoint().protocol();
        auto tls = connection.take_tls();
        std::uint16_t version = connection.joined().version;
        int fd = connection.socket().release();
        asio::post(io_, [this, id, fd, protocol, &handler, buffered = std::move(buffered),
                         tls = std::move(tls), version]() mutable {
            open_channel(id, fd, protocol, handler, buffered, std::move(tls), version);
        });
        return id;
    }

    void want_send(ChannelId channel) override {
        asio::post(io_, [this, channel] { drive(channel); });
    }

    void close(ChannelId channel) override {
        asio::post(io_, [this, channel] {
            if (auto* c = find(channel)) {
                c->core.request_close();
                drive(channel);
            }
        });
    }

    void abort(ChannelId channel, Failure why) override {
        asio::post(io_, [this, channel, why = std::move(why)]() mutable {
            if (auto* c = find(channel)) {
                c->core.abort(std::move(why));
                drive(channel);
            }
        });
    }

    void release(ChannelId channel, std::uint64_t ticket) override {
        asio::post(io_, [this, channel, ticket] {
            if (auto* c = find(channel)) {
                c->core.release(ticket);
                drive(channel);
            }
        });
    }

    void post(std::function<void()> task) override { asio::post(io_, std::move(task)); }

    void stop() override {
        asio::post(io_, [this] {
            stopping_ = true;
            for (auto& [id, channel] : channels_) {
                channel->core.fail(failure(Errc::Closed, "the data path stopped"));
            }
            drive_all();
        });
    }

    DataPathStats stats() const override {
        std::lock_guard lock(stats_mutex_);
        return stats_snapshot_;
    }

    void run() override {
        tick();
        io_.run();
        publish_stats();
    }

  private:
    AsioChannel* find(ChannelId id) {
        auto it = channels_.find(id);
        return it == channels_.end() ? nullptr : it->second.get();
    }

    void open_channel(ChannelId id, int fd, asio::generic::stream_protocol protocol,
                      ChannelHandler& handler, const std::vector<std::byte>& buffered,
                      std::unique_ptr<TlsSession> tls, std::uint16_t version) {
        auto now = Clock::now();
        auto ring = MirrorRing::create(
            std::max<std::size_t>(options_.receive_ring_bytes, kHeaderSize + options_.max_payload));
        boost::system::error_code ec;
        Socket socket(io_);
        socket.assign(protocol, fd, ec);
        if (!ring || ec) {
            if (!ec) {
                socket.close(ec);
            } else {
                ::close(fd);
            }
            handler.on_closed(
                id, ring ? failure(Errc::InvalidArgument, "adopting the socket: " + ec.message())
                         : ring.error());
            return;
        }
        auto channel = std::make_unique<AsioChannel>(
            id, handler, std::move(*ring), std::move(socket), options_, now, std::move(tls));
        channel->core.set_version(version);
        channel->core.preload(buffered, now);
        channels_.emplace(id, std::move(channel));
        drive(id);
    }

    void drive_all() {
        std::vector<ChannelId> ids;
        ids.reserve(channels_.size());
        for (auto& [id, channel] : channels_) {
            ids.push_back(id);
        }
        for (ChannelId id : ids) {
            drive(id);
        }
        if (stopping_ && channels_.empty()) {
            timer_.cancel();
            work_.reset();
        }
    }

    void drive(ChannelId id) {
        AsioChannel* channel = find(id);
        if (channel == nullptr) {
            return;
        }
        ChannelCore& core = channel->core;
        if (core.done()) {
            if (channel->receiving || channel->sending) {
                if (!channel->cancelled) {
                    boost::system::error_code ignored;
                    channel->socket.cancel(ignored);
                    channel->cancelled = true;
                }
                return;
            }
            finish(*channel);
            channels_.erase(id);
            if (stopping_ && channels_.empty()) {
                timer_.cancel();
                work_.reset();
            }
            return;
        }
        if (auto space = core.receive_space(); !channel->receiving && !space.empty()) {
            channel->receiving = true;
            ++core.stats().receive_calls;
            channel->socket.async_read_some(
                asio::buffer(space.data(), space.size()),
                [this, id](const boost::system::error_code& ec, std::size_t n) {
                    AsioChannel* c = find(id);
                    c->receiving = false;
                    if (!ec) {
                        c->core.on_received(n, Clock::now());
                    } else if (ec == asio::error::eof) {
                        c->core.on_receive_error(0);
                    } else if (ec != asio::error::operation_aborted) {
                        c->core.on_receive_error(ec.value());
                    }
                    drive(id);
                });
        }
        if (!channel->sending && !core.done()) {
            if (core.wants_shutdown_write()) {
                boost::system::error_code ignored;
                channel->socket.shutdown(asio::socket_base::shutdown_send, ignored);
                core.write_shut();
            }
            auto iovecs = core.send_iovecs();
            if (!iovecs.empty()) {
                channel->buffers.clear();
                for (const iovec& v : iovecs) {
                    channel->buffers.emplace_back(v.iov_base, v.iov_len);
                }
                channel->sending = true;
                core.send_started(Clock::now());
                channel->socket.async_write_some(
                    channel->buffers,
                    [this, id](const boost::system::error_code& ec, std::size_t n) {
                        AsioChannel* c = find(id);
                        c->sending = false;
                        if (!ec) {
                            c->core.on_sent(n, Clock::now());
                        } else if (ec != asio::error::operation_aborted) {
                            c->core.on_send_error(ec.value());
                        }
                        drive(id);
                    });
            }
        }
    }

    void finish(AsioChannel& channel) {
        channel.core.finish(channel.socket.native_handle(), retired_);
        boost::system::error_code ignored;
        channel.socket.close(ignored);
    }

    void tick() {
        timer_.expires_after(kLivenessTick);
        timer_.async_wait([this](const boost::system::error_code& ec) {
            if (ec) {
                return;
            }
            auto now = Clock::now();
            for (auto& [id, channel] : channels_) {
                channel->core.on_tick(now, channel->sending);
            }
            drive_all();
            publish_stats();
            if (!(stopping_ && channels_.empty())) {
                tick();
            }
        });
    }

    void publish_stats() {
        DataPathStats total = retired_;
        for (auto& [id, channel] : channels_) {
            accumulate(total, channel->core.stats());
        }
        std::lock_guard lock(stats_mutex_);
        stats_snapshot_ = total;
    }

    DataPathOptions options_;
    asio::io_context io_;
    asio::executor_work_guard<asio::io_context::executor_type> work_;
    asio::steady_timer timer_;
    std::atomic<ChannelId> next_id_{1};
    bool stopping_ = false;
    std::unordered_map<ChannelId, std::unique_ptr<AsioChannel>> channels_;
    DataPathStats retired_;
    mutable std::mutex stats_mutex_;
    DataPathStats stats_snapshot_;
};

}  // namespace

std::unique_ptr<DataPath> make_asio_data_path(DataPathOptions options) {
    return std::make_unique<AsioDataPath>(std::move(options));
}

}  // namespace uffdm::transport
