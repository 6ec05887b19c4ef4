// source_link.hpp — The source's sessions with a destination, from accept to DONE.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <expected>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "migration/bandwidth_cap.hpp"
#include "migration/compression_policy.hpp"
#include "migration/compression_pool.hpp"
#include "migration/precopy_source.hpp"
#include "migration/session_link.hpp"
#include "migration/source_pages.hpp"
#include "transport/data_path.hpp"
#include "transport/listener.hpp"
#include "transport/traffic_class.hpp"

namespace uffdm::migration {

struct PageServerOptions {
    transport::Endpoint listen;
    const transport::Secret* secret = nullptr;   // token authentication (or nullptr)
    std::shared_ptr<transport::TlsContext> tls;  // TLS 1.3 (or nullptr)
    bool insecure = false;  // allow a non-loopback listener without client authentication
    // A unix: listener's socket mode, and the users besides ours and root who may connect.
    mode_t unix_mode = 0600;
    std::vector<uid_t> allowed_uids;
    transport::LivenessOptions liveness;
    transport::Backend backend = transport::Backend::Auto;
    std::uint64_t bulk_run_bytes = 256U << 10;  // pages per bulk frame, in bytes
    std::uint8_t max_bulk_channels = 16;
    // How long to wait for a destination whose session broke (no ERROR from it, no refusal of
    // ours) to reconnect and RESUME; then the migration fails. 0: fail at once.
    std::chrono::milliseconds reconnect_timeout{30000};
    // Called from run()'s thread about ten times a second.
    std::function<void(const SourceProgress&)> on_progress;
    // A guest that still runs: precopy rounds, then the switchover (protocol version 2).
    LiveSourceOptions live;
    // Compressed data runs (protocol version 3, where the destination accepts them).
    CompressionOptions compression;
    // DSCP, socket priority and unsent backlog of the urgent and bulk connections.
    transport::TrafficMarking marking;
    // The background stream's bytes per second on the wire (0: no cap); answers are not capped.
    std::uint64_t max_bandwidth = 0;
};

class SourceUrgentChannel;
class SourceBulkChannel;

// The source's side of the session lifecycle: the listener accepts destinations (one migration
// per source: a second is told it is busy), the two data path loops run their channels, and
// one state machine says where the migration is (protocol.md, "Source state machine").
class SourceLink {
  public:
    enum class State : std::uint8_t {
        Listening,   // no destination yet
        AwaitStart,  // a destination joined and has the LAYOUT; START or BITMAP*+RESUME next
        Serving,     // answering requests, streaming
        Waiting,     // the session broke: the listener waits for the destination to come back
        Finished,    // DONE received
        Failed,
    };
    [[nodiscard]] static const char* name(State state) noexcept;

    SourceLink(const PageServerOptions& options, SentPages& pages);
    SourceLink(const SourceLink&) = delete;
    SourceLink& operator=(const SourceLink&) = delete;
    ~SourceLink();

    [[nodiscard]] std::expected<void, transport::Failure> open();
    [[nodiscard]] transport::Endpoint local_endpoint() const;
    // Runs the listener and both loops until the migration is Finished or Failed and every
    // channel has closed (or 5 s have passed since); `tick` about ten times a second.
    // Returns when it first joined and when it ended, for the report.
    struct Span {
        std::optional<Clock::time_point> joined;
        std::optional<Clock::time_point> ended;
    };
    Span serve(const std::function<void()>& tick);

    // Thread-safe, from anywhere.
    void fail(transport::Failure why);
    [[nodiscard]] State state() const noexcept { return state_.load(std::memory_order_acquire); }
    [[nodiscard]] bool done() const noexcept;
    [[nodiscard]] bool connected() const;
    [[nodiscard]] std::size_t bulk_channels() const;
    [[nodiscard]] std::size_t pause_count() const;
    [[nodiscard]] std::optional<transport::Failure> failure() const;
    [[nodiscard]] std::uint64_t bytes_sent() const;

    // For the session's channels (source_channels.cpp), from the data path loops.
    [[nodiscard]] SentPages& pages() noexcept { return pages_; }
    [[nodiscard]] CompressionPolicy& compression() noexcept { return compression_; }
    [[nodiscard]] const CompressionPolicy& compression() const noexcept { return compression_; }
    // Helpers that compress a bulk loop's batch of runs with it (nullptr: none).
    [[nodiscard]] CompressionPool* compression_pool() noexcept { return compression_pool_.get(); }
    // The live source's rounds (nullptr for a guest that no longer runs). Set before open().
    void set_precopy(PrecopySource* precopy) noexcept { precopy_ = precopy; }
    [[nodiscard]] PrecopySource* precopy() const noexcept { return precopy_; }
    void wake_streams();
    void wake_urgent();
    // The stream's cap: whether a stream frame may go now (when not, the streams are woken
    // once one may), and what one took. From the loop that streams.
    [[nodiscard]] bool stream_may_send();
    void stream_sent(const transport::OutgoingFrame& frame);
    [[nodiscard]] double capped_seconds() const { return cap_.waited_seconds(); }
    [[nodiscard]] std::span<const std::byte> layout_bytes() const noexcept { return layout_bytes_; }
    // START or RESUME's flags for the session, and its stream being held by STREAM.
    [[nodiscard]] bool want_hashes() const noexcept {
        return want_hashes_.load(std::memory_order_relaxed);
    }
    [[nodiscard]] bool stream_held() const noexcept {
        return stream_held_.load(std::memory_order_acquire);
    }
    [[nodiscard]] bool stream_on_urgent() const noexcept {
        return stream_on_urgent_.load(std::memory_order_relaxed);
    }
    // Session `session` sent START or RESUME (now Serving).
    [[nodiscard]] bool serving(std::uint64_t session) const noexcept {
        return active_session_.load(std::memory_order_acquire) == session;
    }
    void started(std::uint32_t start_flags, std::uint64_t session);
    void hold_stream(bool held);
    void finished();
    // A channel of `session` ended before DONE: wait for a reconnection, or fail.
    void lost(std::uint64_t session, const std::string& what, const transport::Failure& why);
    // The urgent connection of `session` ended before START: nothing was sent; the next
    // destination is waited for.
    void ended_before_start(std::uint64_t session);
    void channel_closed() { open_channels_.fetch_sub(1); }
    void refuse_urgent(transport::ChannelId channel, const transport::Failure& why);
    void refuse_bulk(transport::ChannelId channel, const transport::Failure& why);

  private:
    void on_joined(transport::Connection connection);
    // Closes the current session's connections and forgets it. Holds mutex_.
    void drop_session(const transport::Failure& why);
    // The one place the state changes; aborts on a transition protocol.md does not have.
    // Holds mutex_.
    void enter(State next);

    const PageServerOptions& options_;
    SentPages& pages_;
    CompressionPolicy compression_;
    std::unique_ptr<CompressionPool> compression_pool_;
    PrecopySource* precopy_ = nullptr;
    std::vector<std::byte> layout_bytes_;
    std::size_t window_ = 16;  // the data paths' send window: hash slots per channel

    // Handlers before the data paths that call them (declaration order is shutdown order).
    std::vector<std::unique_ptr<SourceUrgentChannel>> urgent_;  // one per session
    std::vector<std::unique_ptr<SourceBulkChannel>> bulk_;
    transport::asio::io_context io_;
    BandwidthCap cap_;
    transport::asio::steady_timer cap_timer_{io_};  // wakes a stream the cap held (io_ only)
    std::atomic<bool> cap_wake_pending_{false};
    std::shared_ptr<transport::Listener> listener_;
    std::unique_ptr<transport::DataPath> urgent_path_;
    std::unique_ptr<transport::DataPath> bulk_path_;

    // Guards everything below but the atomics: the state's transitions, the current session
    // and its channels, the handlers' lists, the pauses and the failure.
    mutable std::mutex mutex_;
    std::atomic<State> state_{State::Listening};  // written under mutex_, read anywhere
    std::optional<ChannelSet> channels_;          // the current session's (after open())
    std::optional<transport::Failure> failure_;
    std::uint64_t session_ = 0;  // the listener's id of the current session (0: none)
    PauseLog pauses_;
    std::string lost_why_;
    Clock::time_point opened_at_;

    std::atomic<std::uint64_t> active_session_{0};  // the session that sent START or RESUME
    std::atomic<bool> want_hashes_{false};
    std::atomic<bool> stream_held_{false};       // STREAM(hold) or START's kStreamHeld
    std::atomic<bool> stream_on_urgent_{false};  // START's kStreamOnUrgent: no bulk streaming
    std::atomic<std::int64_t> open_channels_{0};
};

}  // namespace uffdm::migration
