// page_server.hpp — The source: serves one migration of a guest's memory to a destination.
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

#include "migration/guest_memory.hpp"
#include "migration/page_bitmap.hpp"
#include "migration/report.hpp"
#include "transport/data_path.hpp"
#include "transport/listener.hpp"

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
};

// Threads: run() drives the listener (Asio); one data path loop serves the urgent connection
// (requests are answered ahead of everything, on their own socket and thread); another streams
// on every bulk connection. Each page is sent once unless the destination asks for it.
class PageServer {
  public:
    [[nodiscard]] static std::expected<std::unique_ptr<PageServer>, wire::Failure> open(
        const GuestMemory& memory, PageServerOptions options);
    PageServer(const PageServer&) = delete;
    PageServer& operator=(const PageServer&) = delete;
    ~PageServer();

    [[nodiscard]] transport::Endpoint local_endpoint() const;
    // Serves one destination until it reports every page present (DONE) or the migration fails
    // (the destination vanishes, sends something wrong, or stop() is called).
    [[nodiscard]] SourceStats run();
    // Thread-safe.
    void stop();
    [[nodiscard]] SourceProgress progress() const;

  private:
    class UrgentHandler;
    class BulkHandler;
    class Streamer;
    friend class UrgentHandler;
    friend class BulkHandler;
    friend class Streamer;

    PageServer(const GuestMemory& memory, PageServerOptions options);
    void on_joined(transport::Connection connection);
    void started(std::uint32_t start_flags, std::uint64_t session);
    // A channel of session ended before DONE: wait for a reconnection, or fail.
    void lost(std::uint64_t session, const std::string& what, const transport::Failure& why);
    void drop_session(const transport::Failure& why);
    void hold_stream(bool held);
    void session_ended_before_start(std::uint64_t session);
    [[nodiscard]] std::uint64_t current_session() const;
    void finished();
    void fail(transport::Failure why);
    void note_request(std::uint32_t region, std::uint64_t page);
    [[nodiscard]] bool done() const noexcept { return done_.load(std::memory_order_acquire); }

    const GuestMemory& memory_;
    PageServerOptions options_;
    std::vector<std::byte> layout_bytes_;
    std::vector<PageBitmap> sent_;  // per region: the page has been sent (by either path)
    // Per region: sent in an earlier session of this migration (since its START), so a
    // destination may hold it. Only what this process sent: after a restart on its image the
    // source knows nothing of earlier sessions. Urgent loop thread only, like started_here_.
    std::vector<PageBitmap> delivered_;
    bool started_here_ = false;  // this process has seen the migration's START

    std::size_t window_ = 16;  // the data paths' send window: hash slots per handler
    // Handlers before the data paths that call them (declaration order is shutdown order).
    std::vector<std::unique_ptr<UrgentHandler>> urgent_;  // one per session, under mutex_
    std::unique_ptr<Streamer> streamer_;
    std::vector<std::unique_ptr<BulkHandler>> bulk_;  // added on the io_ thread under mutex_

    transport::asio::io_context io_;
    std::shared_ptr<transport::Listener> listener_;
    std::unique_ptr<transport::DataPath> urgent_path_;
    std::unique_ptr<transport::DataPath> bulk_path_;

    mutable std::mutex mutex_;  // bulk_ids_, failure_, session_
    std::vector<transport::ChannelId> bulk_ids_;
    std::optional<transport::Failure> failure_;
    std::uint64_t session_ = 0;
    std::optional<transport::ChannelId> urgent_id_;
    std::optional<std::chrono::steady_clock::time_point> waiting_since_;  // for a reconnection
    std::string lost_why_;
    std::uint64_t pauses_ = 0;

    std::atomic<std::uint64_t> active_session_{0};  // the session that sent START or RESUME
    std::atomic<std::uint64_t> resumes_{0};
    std::atomic<bool> want_hashes_{false};
    std::atomic<bool> stream_held_{false};       // STREAM(hold) or START's kStreamHeld
    std::atomic<bool> stream_on_urgent_{false};  // START's kStreamOnUrgent: no bulk streaming
    std::atomic<bool> done_{false};              // DONE received, or failed
    std::atomic<std::uint64_t> hint_{0};         // region << 48 | page after the latest request
    std::atomic<std::uint64_t> hint_seq_{0};
    std::atomic<std::uint64_t> pages_streamed_{0};
    std::atomic<std::uint64_t> pages_answered_{0};
    std::atomic<std::uint64_t> pages_resent_{0};
    std::atomic<std::uint64_t> zero_pages_{0};
    std::atomic<std::uint64_t> requests_{0};
    std::atomic<std::int64_t> open_channels_{0};
};

}  // namespace uffdm::migration
