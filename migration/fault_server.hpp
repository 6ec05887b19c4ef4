// fault_server.hpp — The destination: serves the guest's faults while its memory arrives.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <expected>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <thread>
#include <vector>

#include "migration/destination_link.hpp"
#include "migration/guest_addresses.hpp"
#include "migration/guest_memory.hpp"
#include "migration/placement_mode.hpp"
#include "migration/placer.hpp"
#include "migration/precopy_receive.hpp"
#include "migration/report.hpp"
#include "migration/request_queue.hpp"
#include "uffd/event_fd.hpp"
#include "uffd/fault_reader.hpp"
#include "uffd/registration.hpp"
#include "uffd/residency.hpp"

namespace uffdm::migration {

// Threads: a fault thread reads the userfaultfd in batches, marks pages requested and queues
// requests (it never does network I/O), applies what the guest's process did to its memory
// (REMOVE, UNMAP and REMAP events), and declares the migration complete; the link
// (destination_link.hpp) runs the sessions: one data path loop carries requests and their
// answers on the urgent connection, another receives the background stream (both place
// pages), and a link thread makes sessions.
// Guest memory that another process maps: a VMM that created the userfaultfd, registered its
// memory in MISSING mode and handed the descriptor over (Firecracker does). Nothing of it is
// mapped here; pages are placed through the descriptor only. Each piece says where a run of a
// region's pages lies in that process (one region may lie in several places: Firecracker maps
// one memory file as several regions); every page of every region is in exactly one piece.
// A discarded page (a balloon's MADV_DONTNEED) reads zeros afterwards, never the source's copy,
// and at the end the pieces are unregistered, so that the VMM runs on without a handler.
struct VmmMemory {
    std::vector<GuestAddresses::Placed> pieces;
    // The source's memory mapped in this process too (a memory file here): a fault is placed
    // from it by the fault thread itself, with no request, as a hand-written handler does; the
    // rest still streams from the source. Must outlive the FaultServer.
    const GuestMemory* local = nullptr;
};

class FaultServer {
  public:
    // Takes the open userfaultfd and the guest's memory (mapped, not yet touched). Nothing is
    // registered until start(). With `vmm`, the regions' data pointers are not used: the
    // memory is that process's, registered already (start() checks each piece is).
    [[nodiscard]] static std::expected<std::unique_ptr<FaultServer>, transport::Failure> create(
        uffd::UserfaultFd uffd, std::vector<GuestRegion> regions, FaultServerOptions options,
        std::optional<VmmMemory> vmm = std::nullopt);
    FaultServer(const FaultServer&) = delete;
    FaultServer& operator=(const FaultServer&) = delete;
    // Stops. Pages still missing after a failed migration are poisoned first (where the kernel
    // has UFFDIO_POISON): a guest thread touching one gets SIGBUS, never a page of zeros in place
    // of its data.
    ~FaultServer();

    // Registers every region and starts serving faults, then connects in the background. When
    // it returns the guest may run: its faults wait for their pages.
    [[nodiscard]] std::expected<void, transport::Failure> start();
    // Until every page is present (then unregistered and the userfaultfd closed) or the
    // migration failed (then faulting threads stay blocked; the report says why).
    [[nodiscard]] DestinationStats wait();
    // Thread-safe: fails the migration with Errc::Closed.
    void stop();
    // Thread-safe: holds or resumes the source's background stream (requests are always
    // answered). Frames already on their way still arrive.
    void hold_stream(bool held);
    [[nodiscard]] DestinationProgress progress() const;
    // Until the guest may run: at once for a source whose guest is paused (once its LAYOUT
    // came), after the switchover for a live one. False: the migration failed first, or
    // `timeout` passed.
    [[nodiscard]] bool wait_runnable(std::chrono::milliseconds timeout);
    [[nodiscard]] const wire::Layout& layout() const noexcept { return layout_; }

  private:
    FaultServer(uffd::UserfaultFd uffd, std::vector<GuestRegion> regions, wire::Layout layout,
                uffd::EventFd stop_faults, uffd::EventFd nudge_faults, FaultServerOptions options,
                std::optional<VmmMemory> vmm);
    // start(): registers every region (ours), or takes over the VMM's registrations, checked
    // (unregistered at the end either way).
    std::expected<void, transport::Failure> register_regions();
    std::expected<void, transport::Failure> adopt_registrations();
    // Adds "kind: how" to the report's placement, once per memory kind.
    void note_placement(uffd::MemoryKind kind, const PlacementMode& mode);
    // A fault on a page marked present in the VMM's memory: placed meanwhile (wake), or
    // discarded since (zeros). No page table here to ask.
    void zero_or_wake(const GuestPages& page, std::uint64_t address);
    // A fault served from vmm_->local on the fault thread (which holds events_).
    void place_locally(const GuestPages& page, Clock::time_point now, std::uint32_t thread_id);
    void fault_loop();
    void handle(uffd::FaultEvent& event, Clock::time_point now);
    void handle_fault(std::uint64_t address, std::uint32_t thread_id, Clock::time_point now);
    // A page marked present took a MISSING fault: placed since the fault was raised (wake), or
    // discarded since it was placed (missing again).
    void fault_on_present(const GuestPages& page, std::uint64_t address, std::uint32_t thread_id,
                          Clock::time_point now);
    // Pages missing again: fetched again, or zeros (options_.discarded_pages_read_zero, and
    // any discard once the migration is complete).
    void missing_again(const GuestPages& run);
    void discarded(std::uint64_t start, std::uint64_t end);
    void unmapped(std::uint64_t start, std::uint64_t end);
    // Every page is marked present: once the events already queued are applied and the
    // discarded pages are checked to be there, the migration is complete.
    void confirm_complete(uffd::FaultReader& reader);
    // Every discarded run still marked present that the page table (or page cache) no longer
    // has: a discard whose pages went after a copy of them was placed again. True if none.
    bool discarded_pages_are_there();
    void stop_fault_thread();
    // Reads events (after the ranges were unregistered and the fault thread stopped) until the
    // kernel says none is in flight: whoever caused one may go on. Nothing is applied: the
    // migration is over.
    void drain_events();
    // Applies every event already queued (a REMOVE among them makes pages missing again).
    // Fault thread.
    void apply_queued_events(uffd::FaultReader& reader);
    // The switchover's discard (switchover.hpp): the fast way on the fault thread when no
    // thread can be blocked on a page, else with REMOVE events from the caller's thread.
    std::expected<std::uint64_t, transport::Failure> discard_at_switchover(
        const std::vector<PageBitmap>& pages);
    // Pages still missing after a failed migration: a memory error for whoever touches one, or
    // (without UFFDIO_POISON) their faulting threads blocked for the life of the process.
    void poison_missing();
    // Keeps the registrations and the userfaultfd open until the process exits.
    void keep_blocked_until_exit();

    // Declaration order is shutdown order: the link (its threads place pages) goes before the
    // placer and the request queue it uses, the fault thread before the userfaultfd.
    FaultServerOptions options_;
    std::optional<VmmMemory> vmm_;
    std::shared_mutex events_;  // vmm_: placements against the events the fault thread reads
    std::string placement_;     // per memory kind, for the report (start())
    uffd::UserfaultFd uffd_;
    wire::Layout layout_;
    FaultWaits waits_;
    GuestAddresses addresses_;
    Placer placer_;
    RequestQueue requests_;
    std::vector<uffd::Registration> registrations_;
    uffd::ResidencyProbe residency_ = uffd::ResidencyProbe::open();
    uffd::EventFd stop_faults_;
    uffd::EventFd nudge_faults_;  // the placer made the count whole: confirm it
    PrecopyReceiver precopy_;     // a live source's rounds and switchover (uses the above)
    std::atomic<std::uint64_t> faults_at_switchover_{0};
    // A task for the fault thread (the switchover's discard), and its end. Guarded by
    // task_mutex_; the REMOVE events of our own discard are not the guest's (switching_).
    std::mutex task_mutex_;
    std::condition_variable task_done_;
    std::function<void()> task_;
    bool task_ran_ = false;
    std::atomic<bool> switching_{false};
    DestinationLink link_;
    std::thread fault_thread_;

    // Fault thread only: discarded runs to check before completing (not hugetlbfs: its page
    // table does not say whether the file has the page), and how many checks found some gone.
    std::vector<GuestPages> discarded_runs_;
    int discard_checks_ = 0;
    std::atomic<bool> complete_{false};  // declared by the fault thread; never undone
    std::atomic<std::uint64_t> faults_{0};
    std::atomic<std::uint64_t> discarded_pages_{0};
    Clock::time_point started_at_;
    bool started_ = false;  // start() and wait() run on the embedder's one thread
    bool waited_ = false;
};

}  // namespace uffdm::migration
