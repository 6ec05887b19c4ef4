// fault_server.hpp — The destination: serves the guest's faults while its memory arrives.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <expected>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "migration/placer.hpp"
#include "migration/report.hpp"
#include "transport/data_path.hpp"
#include "transport/session.hpp"
#include "uffd/event_fd.hpp"
#include "uffd/registration.hpp"

namespace uffdm::migration {

struct FaultServerOptions {
    transport::Endpoint source;
    const transport::Secret* secret = nullptr;
    std::shared_ptr<transport::TlsContext> tls;
    transport::LivenessOptions liveness;
    transport::Backend backend = transport::Backend::Auto;
    std::size_t bulk_channels = 1;  // 0..16
    bool verify_hashes = false;     // ask for a hash with every page and check it before placing
    // Start with the background stream held: only faults are served until hold_stream(false).
    bool hold_stream = false;
    // After the first session: how long to keep reconnecting when the session breaks (faulting
    // threads stay blocked meanwhile) before the migration fails. 0: fail at the first break.
    std::chrono::milliseconds reconnect_timeout{30000};
    // A failed migration poisons the missing pages at once (a guest touching one gets a memory
    // error), instead of leaving faulting threads blocked until the FaultServer goes.
    bool poison_on_failure = false;
    // Called from wait()'s thread about ten times a second.
    std::function<void(const DestinationProgress&)> on_progress;
    // Called from the link thread when a session breaks, and when a new one has resumed.
    std::function<void(const Pause&)> on_pause;
    std::function<void(const Pause&)> on_resume;
};

// Threads: a fault thread reads the userfaultfd in batches, marks pages requested and queues
// requests (it never does network I/O); one data path loop carries requests and their answers
// on the urgent connection; another receives the background stream. Both loops place pages.
class FaultServer {
  public:
    // Takes the open userfaultfd and the guest's memory (mapped, not yet touched). Nothing is
    // registered until start().
    [[nodiscard]] static std::expected<std::unique_ptr<FaultServer>, wire::Failure> create(
        uffd::UserfaultFd uffd, std::vector<GuestRegion> regions, FaultServerOptions options);
    FaultServer(const FaultServer&) = delete;
    FaultServer& operator=(const FaultServer&) = delete;
    // Stops. Pages still missing after a failed migration are poisoned first (where the kernel
    // has UFFDIO_POISON): a guest thread touching one gets SIGBUS, never a page of zeros in place
    // of its data.
    ~FaultServer();

    // Registers every region and starts serving faults, then connects in the background. When
    // it returns the guest may run: its faults wait for their pages.
    [[nodiscard]] std::expected<void, wire::Failure> start();
    // Until every page is present (then unregistered and the userfaultfd closed) or the
    // migration failed (then faulting threads stay blocked; the report says why).
    [[nodiscard]] DestinationStats wait();
    // Thread-safe: fails the migration with Errc::Closed.
    void stop();
    // Thread-safe: holds or resumes the source's background stream (requests are always
    // answered). Frames already on their way still arrive.
    void hold_stream(bool held);
    [[nodiscard]] DestinationProgress progress() const;
    [[nodiscard]] const wire::Layout& layout() const noexcept { return layout_; }

  private:
    class UrgentHandler;
    class BulkHandler;
    friend class UrgentHandler;
    friend class BulkHandler;

    FaultServer(uffd::UserfaultFd uffd, std::vector<GuestRegion> regions, wire::Layout layout,
                uffd::EventFd stop_faults, FaultServerOptions options);
    void fault_loop();
    void handle_fault(std::uint64_t address, std::uint32_t thread_id, Clock::time_point now);
    // The link thread: connects, and after a break reconnects until the deadline.
    void link_loop();
    enum class Joining { Joined, Stopped, GaveUp };
    Joining join_session(Clock::time_point deadline, bool first, transport::SessionFailure& last);
    [[nodiscard]] std::expected<transport::Session, transport::SessionFailure> connect_once();
    bool attach(transport::Session session);
    void lost(std::uint64_t generation, const transport::Failure& why);
    void drop_session(const transport::Failure& why);
    void resumed(std::uint64_t generation);
    // A page of this session was placed: a pause is over.
    void progressed(std::uint64_t generation);
    void stream_ended(std::uint64_t generation);
    // The migration failed (fail() ran): the data paths' handlers use nothing more.
    [[nodiscard]] bool failed() const noexcept { return ended_.load(std::memory_order_acquire); }
    // The urgent connection of session `generation` sent START or RESUME: its bulk connections
    // may stream from now on.
    void session_started(std::uint64_t generation);
    // The first page of an answer that was never asked for, if any.
    [[nodiscard]] std::optional<std::uint64_t> unrequested_page(const wire::PagesView& run);
    void request_missing();
    [[nodiscard]] std::uint32_t start_flags() const;
    void completed();
    void close_all();
    void fail(transport::Failure why);
    void channel_closed();
    bool pop_request(wire::Request& out);
    void poison_missing();

    FaultServerOptions options_;
    uffd::UserfaultFd uffd_;
    wire::Layout layout_;
    FaultWaits waits_;
    Placer placer_;
    std::vector<uffd::Registration> registrations_;
    uffd::EventFd stop_faults_;

    // Every session's handlers, kept until the end: a data path may report a closed channel of
    // an old session late.
    std::vector<std::unique_ptr<UrgentHandler>> urgent_;
    std::vector<std::unique_ptr<BulkHandler>> bulk_;
    std::unique_ptr<transport::DataPath> urgent_path_;
    std::unique_ptr<transport::DataPath> bulk_path_;
    transport::asio::io_context connect_io_;  // connecting, on the link thread (stop(): any)

    std::thread fault_thread_;
    std::thread urgent_thread_;
    std::thread bulk_thread_;
    std::thread connect_thread_;

    mutable std::mutex mutex_;  // requests_, failure_, channel ids, state_changed_
    std::condition_variable state_changed_;
    std::deque<wire::Request> requests_;
    std::optional<transport::Failure> failure_;
    std::optional<transport::ChannelId> urgent_id_;
    std::vector<transport::ChannelId> bulk_ids_;
    std::int64_t open_channels_ = 0;
    bool connected_ = false;
    std::uint64_t generation_ = 0;  // the current session (1 for the first)
    std::size_t bulk_in_session_ = 0;
    std::size_t streams_ended_ = 0;  // STREAM_ENDs of the current session
    bool broken_ = false;            // the session broke: the link thread makes a new one
    bool done_delivered_ = false;    // the source closed in order after our DONE
    bool link_stop_ = false;         // wait() is tearing down: the link thread ends
    bool paused_ = false;            // no page has arrived since the break (the deadline runs)
    bool pause_to_report_ = false;   // for the link thread: on_pause
    bool resume_to_report_ = false;  // for the link thread: on_resume
    Clock::time_point paused_at_;
    std::uint64_t paused_generation_ = 0;  // the session that broke when the pause began
    std::vector<Pause> pauses_;

    std::atomic<bool> stream_held_;  // what the source should do with its stream
    // The newest session that sent START or RESUME: bulk PAGES of an older or that session
    // are placed, a newer session's are a protocol violation.
    std::atomic<std::uint64_t> started_generation_{0};
    std::atomic<bool> pause_active_{false};  // paused_, for the data paths' hot path
    std::atomic<bool> complete_{false};      // every page present
    std::atomic<bool> ended_{false};         // failed
    std::atomic<std::uint64_t> faults_{0};
    std::atomic<std::uint64_t> requests_sent_{0};
    Clock::time_point started_at_;
    std::optional<Clock::time_point> completed_at_;
    bool started_ = false;
    bool waited_ = false;
};

}  // namespace uffdm::migration
