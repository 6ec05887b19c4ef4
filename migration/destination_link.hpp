// destination_link.hpp — The destination's sessions with the source, from connect to DONE.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <expected>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "migration/placement_pipeline.hpp"
#include "migration/placer.hpp"
#include "migration/precopy_receive.hpp"
#include "migration/report.hpp"
#include "migration/request_queue.hpp"
#include "migration/session_link.hpp"
#include "transport/data_path.hpp"
#include "transport/session.hpp"
#include "transport/traffic_class.hpp"

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
    // What a page the guest discards during the migration (MADV_DONTNEED, a balloon, free page
    // reporting) holds when it is touched again: false (the default) fetches the source's
    // copy again, like a page never migrated; true gives it zeros, the kernel's own meaning of
    // a discarded anonymous page, and never asks the source.
    bool discarded_pages_read_zero = false;
    // Accept compressed runs (lz4, zstd) from a version 3 source. Each is expanded into a
    // buffer of the receiving connection's and copied from there.
    bool accept_compression = true;
    // DSCP, socket priority and unsent backlog of the urgent and bulk connections.
    transport::TrafficMarking marking;
    // Called from wait()'s thread about ten times a second.
    std::function<void(const DestinationProgress&)> on_progress;
    // Called from the link thread when a session breaks, and when a new one has resumed.
    std::function<void(const Pause&)> on_pause;
    std::function<void(const Pause&)> on_resume;
    // The newest protocol version offered (tests: a destination built before version 2).
    std::uint16_t max_version = transport::kMaxVersion;
    // Threads placing the background stream's runs while the bulk loop receives the next ones
    // (0: the bulk loop places each run itself); the runs wait in the receive rings. A live
    // source's rounds are placed by the bulk loop whatever this says.
    std::size_t placement_threads = 0;
};

class DestinationUrgentChannel;
class DestinationBulkChannel;

// The destination's side of the session lifecycle: the link thread makes sessions (the first,
// and after a break new ones until the reconnect deadline), the two data path loops run their
// channels, and one state machine says where the migration is (protocol.md, "Destination
// state machine"). The fault thread only queues requests and calls request_queued().
class DestinationLink {
  public:
    enum class State : std::uint8_t {
        Connecting,  // making the first session
        Running,     // a session serves: pages arrive
        Paused,      // the session broke: no session, new ones are tried until the deadline
        Resuming,    // a new session after a break; its first page placed ends the pause
        Complete,    // every page present, DONE sent or about to be
        Delivering,  // complete, but the session broke before the source closed after DONE
        Done,        // the source closed in order after DONE
        Failed,
    };
    [[nodiscard]] static const char* name(State state) noexcept;

    DestinationLink(const FaultServerOptions& options, const wire::Layout& layout, Placer& placer,
                    RequestQueue& requests, PrecopyReceiver& precopy);
    DestinationLink(const DestinationLink&) = delete;
    DestinationLink& operator=(const DestinationLink&) = delete;
    ~DestinationLink();

    [[nodiscard]] std::expected<void, transport::Failure> open();
    // Starts the data path loops and the link thread.
    void start(Clock::time_point started_at);
    // Until the migration is Done or Failed, or complete and the source lingers; `tick` about
    // ten times a second. Then the link thread is told to end.
    void wait_settled(const std::function<void()>& tick);
    // Joins the link thread and stops the data path loops.
    void shutdown();

    // Thread-safe, from anywhere.
    void fail(transport::Failure why);
    void completed();  // the placer placed the last missing page
    void request_queued();
    void hold_stream(bool held);
    [[nodiscard]] State state() const noexcept { return state_.load(std::memory_order_acquire); }
    [[nodiscard]] bool failed() const noexcept { return state() == State::Failed; }
    [[nodiscard]] bool complete() const noexcept;
    [[nodiscard]] bool connected() const;
    [[nodiscard]] bool paused() const;
    [[nodiscard]] std::size_t pause_count() const;
    [[nodiscard]] std::vector<Pause> pauses(Clock::time_point end) const;
    [[nodiscard]] std::optional<transport::Failure> failure() const;
    [[nodiscard]] std::optional<Clock::time_point> completed_at() const;
    [[nodiscard]] std::uint64_t bytes_received() const;
    [[nodiscard]] std::string data_path() const { return urgent_path_->describe(); }

    // For the session's channels (destination_channels.cpp), from the data path loops.
    [[nodiscard]] const wire::Layout& layout() const noexcept { return layout_; }
    [[nodiscard]] Placer& placer() noexcept { return placer_; }
    [[nodiscard]] RequestQueue& requests() noexcept { return requests_; }
    [[nodiscard]] PrecopyReceiver& precopy() noexcept { return precopy_; }
    [[nodiscard]] PlacementPipeline& placement() noexcept { return *placement_; }
    // A run kept in a bulk connection's ring is placed (any thread).
    void release_bulk(transport::ChannelId channel, std::uint64_t ticket);
    // The bulk connection ends: runs of its ring still queued are dropped, those being placed
    // waited for (its loop thread).
    void forget_placements(transport::ChannelId channel);
    // The current session (a live source's PAGES of an older one are dropped): read per frame,
    // so without the lock.
    [[nodiscard]] std::uint64_t generation() const noexcept {
        return current_generation_.load(std::memory_order_acquire);
    }
    [[nodiscard]] bool stream_held() const noexcept {
        return stream_held_.load(std::memory_order_acquire);
    }
    [[nodiscard]] std::uint32_t start_flags() const;
    // The urgent connection of session `generation` sent START or RESUME: its bulk connections
    // may stream from now on.
    void session_started(std::uint64_t generation);
    [[nodiscard]] bool session_running(std::uint64_t generation) const noexcept {
        return started_generation_.load(std::memory_order_acquire) >= generation;
    }
    void resumed(std::uint64_t generation);
    // A page of session `generation` was placed (cheap unless a pause is on).
    void progressed(std::uint64_t generation);
    void stream_ended(std::uint64_t generation);
    void lost(std::uint64_t generation, const transport::Failure& why);
    void channel_closed();
    // A channel refused what its source sent: the migration fails with that reason.
    void refuse_urgent(transport::ChannelId channel, const transport::Failure& why);
    void refuse_bulk(transport::ChannelId channel, const transport::Failure& why);

  private:
    enum class Joining { Joined, Stopped, GaveUp };
    void link_loop();
    Joining join_session(Clock::time_point deadline, bool first, transport::SessionFailure& last);
    [[nodiscard]] std::expected<transport::Session, transport::SessionFailure> connect_once();
    bool attach(transport::Session session);
    // Closes what is left of the current session (a PeerLost ERROR: the source waits for the
    // next one) and wakes the link thread. Holds mutex_.
    void drop_session(const transport::Failure& why);
    // The one place the state changes; aborts on a transition protocol.md does not have.
    // Holds mutex_.
    void enter(State next);
    // Reports a pause or resume the data paths recorded (never from a data path loop: the
    // embedder's code may take its time). Link thread, with `lock` held on entry and exit.
    void report_pauses(std::unique_lock<std::mutex>& lock);

    const FaultServerOptions& options_;
    const wire::Layout& layout_;
    Placer& placer_;
    RequestQueue& requests_;
    PrecopyReceiver& precopy_;

    // Every session's handlers, kept until the end (declared before the data paths that call
    // them): a data path may report a closed channel of an old session late.
    std::vector<std::unique_ptr<DestinationUrgentChannel>> urgent_;
    std::vector<std::unique_ptr<DestinationBulkChannel>> bulk_;
    std::unique_ptr<transport::DataPath> urgent_path_;
    std::unique_ptr<transport::DataPath> bulk_path_;
    std::optional<PlacementPipeline> placement_;  // started with the loops, stopped after them
    transport::asio::io_context connect_io_;      // connecting, on the link thread (stop(): any)

    std::thread urgent_thread_;
    std::thread bulk_thread_;
    std::thread link_thread_;

    // Guards everything below but the atomics: the state's transitions, the current session
    // and its channels, the pauses, the failure; state_changed_ wakes the link thread and
    // wait_settled().
    mutable std::mutex mutex_;
    std::condition_variable state_changed_;
    std::atomic<State> state_{State::Connecting};  // written under mutex_, read anywhere
    std::optional<ChannelSet> channels_;           // the current session's (after open())
    std::optional<transport::Failure> failure_;
    std::uint64_t generation_ = 0;  // the current session (1 for the first)
    std::size_t bulk_in_session_ = 0;
    std::size_t streams_ended_ = 0;  // STREAM_ENDs of the current session
    std::int64_t open_channels_ = 0;
    bool link_stop_ = false;         // wait_settled() is over: the link thread ends
    bool pause_to_report_ = false;   // for the link thread: on_pause
    bool resume_to_report_ = false;  // for the link thread: on_resume
    PauseLog pauses_;
    Clock::time_point started_at_;
    std::optional<Clock::time_point> completed_at_;

    std::atomic<bool> stream_held_;  // what the source should do with its stream
    // The newest session that sent START or RESUME: bulk PAGES of an older or that session
    // are placed, a newer session's are a protocol violation.
    std::atomic<std::uint64_t> started_generation_{0};
    std::atomic<std::uint64_t> current_generation_{0};  // generation_, for generation()
};

}  // namespace uffdm::migration
