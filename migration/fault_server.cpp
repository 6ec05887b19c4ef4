// fault_server.cpp — The destination's fault thread, its start and its report.
#include "migration/fault_server.hpp"

#include <unistd.h>

#include <algorithm>
#include <sstream>

#include "migration/data_paths.hpp"
#include "migration/switchover.hpp"

namespace uffdm::migration {

namespace {

// Checks of the discarded pages before completing that may find some gone again (a shmem page
// swapped out reads as gone to mincore, and is not missing): after these, the last check's
// refetches are the end of it.
constexpr int kDiscardChecks = 3;

// Every page of every region in exactly one piece, each piece page-aligned and inside its
// region, no two overlapping in the VMM's address space.
std::expected<void, transport::Failure> check_pieces(
    const std::vector<GuestRegion>& regions, const std::vector<GuestAddresses::Placed>& pieces) {
    auto bad = [](const std::string& why) {
        return std::unexpected(transport::failure(Errc::InvalidArgument, "VMM memory: " + why));
    };
    std::vector<PageBitmap> covered;
    for (const GuestRegion& r : regions) {
        covered.emplace_back(r.length / r.page_size);
    }
    std::vector<std::pair<std::uint64_t, std::uint64_t>> spans;
    for (const auto& p : pieces) {
        if (p.pages.region >= regions.size() || p.pages.count == 0) {
            return bad("a piece of no region, or of no pages");
        }
        const GuestRegion& r = regions[p.pages.region];
        std::uint64_t pages = r.length / r.page_size;
        if (p.pages.first > pages || p.pages.count > pages - p.pages.first) {
            return bad("a piece reaches past the end of its region");
        }
        if (p.address % r.page_size != 0) {
            return bad("a piece does not start on a boundary of its page size");
        }
        std::uint64_t bytes = p.pages.count * r.page_size;
        if (p.address + bytes < p.address) {
            return bad("a piece wraps around the address space");
        }
        spans.emplace_back(p.address, p.address + bytes);
        for (std::uint64_t i = p.pages.first; i < p.pages.first + p.pages.count; ++i) {
            if (!covered[p.pages.region].test_and_set(i)) {
                return bad("two pieces hold the same page of region " +
                           std::to_string(p.pages.region));
            }
        }
    }
    std::sort(spans.begin(), spans.end());
    for (std::size_t i = 1; i < spans.size(); ++i) {
        if (spans[i].first < spans[i - 1].second) {
            return bad("two pieces overlap in the VMM's address space");
        }
    }
    for (std::size_t r = 0; r < covered.size(); ++r) {
        if (covered[r].count() != covered[r].size()) {
            return bad("pages of region " + std::to_string(r) + " are in no piece");
        }
    }
    return {};
}

}  // namespace

FaultServer::FaultServer(uffd::UserfaultFd uffd, std::vector<GuestRegion> regions,
                         wire::Layout layout, uffd::EventFd stop_faults, uffd::EventFd nudge_faults,
                         FaultServerOptions options, std::optional<VmmMemory> vmm)
    : options_(std::move(options)),
      vmm_(std::move(vmm)),
      uffd_(std::move(uffd)),
      layout_(std::move(layout)),
      addresses_(vmm_ ? GuestAddresses(regions, vmm_->pieces) : GuestAddresses(regions)),
      placer_(uffd_, std::move(regions), addresses_, waits_, options_.verify_hashes),
      requests_(placer_, layout_),
      stop_faults_(std::move(stop_faults)),
      nudge_faults_(std::move(nudge_faults)),
      precopy_(
          layout_,
          [this](const std::vector<PageBitmap>& pages) {
              faults_at_switchover_.store(faults_.load());
              return discard_at_switchover(pages);
          },
          [this] { (void)nudge_faults_.signal(); }),  // complete already, maybe
      link_(options_, layout_, placer_, requests_, precopy_) {
    placer_.replace_while([this] { return precopy_.replacing(); });
    if (vmm_) {
        placer_.guard_with(&events_);
        precopy_.refuse_live(
            "the source's guest is running (a live source), but this guest's memory is another "
            "process's (a VMM's), where precopy rounds cannot be written: migrate from a paused "
            "guest or a memory image");
    }
}

std::expected<std::unique_ptr<FaultServer>, transport::Failure> FaultServer::create(
    uffd::UserfaultFd uffd, std::vector<GuestRegion> regions, FaultServerOptions options,
    std::optional<VmmMemory> vmm) {
    wire::Layout layout;
    for (std::size_t i = 0; i < regions.size(); ++i) {
        const GuestRegion& r = regions[i];
        layout.regions.push_back({static_cast<std::uint32_t>(i), r.page_size, r.length});
        if (!vmm && r.page_size != 0 &&
            reinterpret_cast<std::uintptr_t>(r.data) % r.page_size != 0) {
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
    if (vmm) {
        if (auto covered = check_pieces(regions, vmm->pieces); !covered) {
            return std::unexpected(covered.error());
        }
        options.discarded_pages_read_zero = true;  // what the VMM's own kernel would give
    }
    auto stop_faults = uffd::EventFd::create();
    auto nudge_faults = uffd::EventFd::create();
    if (!stop_faults || !nudge_faults) {
        auto code = !stop_faults ? stop_faults.error() : nudge_faults.error();
        return std::unexpected(transport::Failure{code, "eventfd: " + code.message()});
    }
    std::unique_ptr<FaultServer> server(new FaultServer(
        std::move(uffd), std::move(regions), std::move(layout), std::move(*stop_faults),
        std::move(*nudge_faults), std::move(options), std::move(vmm)));
    if (auto opened = server->link_.open(); !opened) {
        return std::unexpected(opened.error());
    }
    return server;
}

FaultServer::~FaultServer() {
    stop();
    if (started_ && !waited_) {
        (void)wait();
    }
    stop_fault_thread();
    if (started_ && !complete_.load()) {
        poison_missing();
    }
}

void FaultServer::drain_events() {
    // A discard that saw the range still registered queues its REMOVE only after it dropped
    // the mmap lock, so it can come after the unregistering, and its caller waits until it is
    // read (the VMM keeps its own descriptor open: closing ours wakes nobody; found by the
    // three-VM test under ASan, a stand-in's balloon thread waited for ever). The kernel counts
    // such an event from before the lock is dropped, so the ranges being unregistered now,
    // read until it says none is in flight. Bounded: a VMM that forks (UFFD_EVENT_FORK) could
    // keep one in flight for longer than this session should wait.
    constexpr int kReadMs = 50;
    constexpr auto kAtMost = std::chrono::seconds(10);
    auto never = uffd::EventFd::create();
    if (!never || vmm_->pieces.empty()) {
        return;
    }
    const auto& piece = vmm_->pieces.front();
    std::uint64_t page = placer_.regions()[piece.pages.region].page_size;
    uffd::FaultReader reader(uffd_, *never);
    auto until = Clock::now() + kAtMost;
    while (Clock::now() < until) {
        auto in_flight = uffd_.event_in_flight(piece.address, page);
        if (!in_flight || !*in_flight) {
            return;
        }
        if (auto batch = reader.next(kReadMs); !batch) {
            return;
        }
    }
}

void FaultServer::stop_fault_thread() {
    if (fault_thread_.joinable()) {
        (void)stop_faults_.signal();
        fault_thread_.join();
    }
}

std::expected<void, transport::Failure> FaultServer::start() {
    if (started_) {
        return std::unexpected(transport::failure(Errc::InvalidArgument, "already started"));
    }
    if (auto registered = vmm_ ? adopt_registrations() : register_regions(); !registered) {
        return registered;
    }
    placer_.on_complete([this] { (void)nudge_faults_.signal(); });
    started_ = true;
    started_at_ = Clock::now();
    fault_thread_ = std::thread([this] {
        name_this_thread("uffdm-faults");
        fault_loop();
    });
    link_.start(started_at_);
    return {};
}

std::expected<void, transport::Failure> FaultServer::register_regions() {
    std::uint32_t index = 0;
    for (const GuestRegion& r : placer_.regions()) {
        auto registration = uffd_.register_range(reinterpret_cast<std::uint64_t>(r.data), r.length,
                                                 uffd::RegisterModes::missing_only());
        if (!registration) {
            registrations_.clear();
            return std::unexpected(transport::Failure{
                registration.error(), "registering guest memory with the userfaultfd: " +
                                          registration.error().message()});
        }
        // What the kernel allows on this registration decides how its pages are placed.
        auto mode = choose_placement(r.kind, registration->ioctls(), {});
        if (!mode) {
            registrations_.clear();
            return std::unexpected(transport::failure(Errc::Unsupported, mode.error()));
        }
        placer_.use_zeropage(index, mode->zeropage);
        note_placement(r.kind, *mode);
        registrations_.push_back(std::move(*registration));
        ++index;
    }
    return {};
}

void FaultServer::note_placement(uffd::MemoryKind kind, const PlacementMode& mode) {
    std::string line = std::string(uffdm::to_string(kind)) + ": " + mode.describe();
    if (placement_.find(line) == std::string::npos) {
        placement_ += (placement_.empty() ? "" : "; ") + line;
    }
}

std::expected<void, transport::Failure> FaultServer::adopt_registrations() {
    for (const auto& piece : vmm_->pieces) {
        std::uint64_t page_size = placer_.regions()[piece.pages.region].page_size;
        std::uint64_t bytes = piece.pages.count * page_size;
        auto adopted = uffd_.adopt_registration(piece.address, bytes, page_size);
        if (!adopted) {
            registrations_.clear();
            std::ostringstream where;
            where << "the VMM's memory at 0x" << std::hex << piece.address << std::dec << " ("
                  << bytes << " bytes)";
            return std::unexpected(transport::Failure{
                adopted.error(),
                where.str() + (adopted.error() == Errc::NotRegistered
                                   ? " is not registered with the userfaultfd it sent"
                                   : ": " + adopted.error().message())});
        }
        registrations_.push_back(std::move(*adopted));
        const GuestRegion& region = placer_.regions()[piece.pages.region];
        PlacementMode mode;
        mode.zeropage = region.zeropage_ioctl;
        note_placement(region.kind, mode);
    }
    return {};
}

void FaultServer::zero_or_wake(const GuestPages& page, std::uint64_t address) {
    const GuestRegion& region = placer_.regions()[page.region];
    std::uint64_t at = address & ~(region.page_size - 1);
    // Zeros where ZEROPAGE is not allowed (hugetlbfs) come from the placer's zero buffer.
    auto placed = region.zeropage_ioctl ? uffd_.zeropage(at, region.page_size)
                                        : uffd_.copy(at, placer_.zeros(), region.page_size);
    if (placed) {
        return;  // a discarded page: zeros, and the thread woken
    }
    // EEXIST: the page is there (placed after the fault was raised). EAGAIN: an event is
    // queued ahead; the woken thread faults again after it and is served then.
    (void)uffd_.wake(at, region.page_size);
    if (placed.error() != Errc::AlreadyPresent && placed.error() != Errc::RetryLater &&
        placed.error() != Errc::NotRegistered) {  // unregistered at the end: nothing to do
        link_.fail(transport::Failure{
            placed.error(), "placing zeros for a discarded page: " + placed.error().message()});
    }
}

void FaultServer::place_locally(const GuestPages& page, Clock::time_point now,
                                std::uint32_t thread_id) {
    waits_.add(page.region, page.first, now, thread_id);
    (void)placer_.requested(page.region).test_and_set(page.first);  // its wait is completed
    wire::PagesView run;
    run.header.region = page.region;
    run.header.first_page = page.first;
    run.header.count = 1;
    bool zero = vmm_->local->is_zero(page.region, page.first);
    run.header.encoding = zero ? wire::Encoding::Zero : wire::Encoding::Raw;
    if (!zero) {
        run.data = vmm_->local->pages(page.region, page.first, 1);
    }
    auto placed = placer_.place_local(run);
    if (placed) {
        return;
    }
    if (placed.error().code == Errc::RetryLater) {
        // An event of the VMM's is queued ahead (this thread reads it next): the woken thread
        // faults again after it, and is served then.
        if (auto where = addresses_.locate(page.region, page.first, 1)) {
            (void)uffd_.wake(where->address, placer_.regions()[page.region].page_size);
        }
        return;
    }
    link_.fail(placed.error());
}

void FaultServer::fault_loop() {
    uffd::FaultReader reader(uffd_, stop_faults_, nudge_faults_);
    if (vmm_) {
        reader.guard_reads(&events_);
    }
    for (;;) {
        auto batch = reader.next();
        if (!batch) {
            return link_.fail(transport::Failure{
                batch.error(), "reading faults from the userfaultfd: " + batch.error().message()});
        }
        if (batch->stopped) {
            return;
        }
        auto now = Clock::now();
        for (auto& event : batch->events) {
            handle(event, now);
        }
        std::function<void()> task;
        {
            std::lock_guard lock(task_mutex_);
            task = std::move(task_);
            task_ = nullptr;
        }
        if (task) {
            apply_queued_events(reader);
            task();
            {
                std::lock_guard lock(task_mutex_);
                task_ran_ = true;
            }
            task_done_.notify_all();
        }
        // Also after a batch that dropped the count and made it whole again (forget() calls
        // no one), not only when nudged.
        if (!complete_.load(std::memory_order_relaxed) && placer_.complete()) {
            confirm_complete(reader);
        }
    }
}

void FaultServer::handle(uffd::FaultEvent& event, Clock::time_point now) {
    if (const auto* fault = std::get_if<uffd::PageFault>(&event)) {
        handle_fault(fault->address, fault->thread_id, now);
    } else if (const auto* remove = std::get_if<uffd::RemoveEvent>(&event)) {
        discarded(remove->start, remove->end);
    } else if (const auto* unmap = std::get_if<uffd::UnmapEvent>(&event)) {
        unmapped(unmap->start, unmap->end);
    } else if (const auto* remap = std::get_if<uffd::RemapEvent>(&event)) {
        // The kernel moved the page tables (and the registration) with the range; placements
        // meanwhile got EAGAIN or ENOENT and retry at the new address.
        addresses_.moved(remap->from, remap->to, remap->length);
    }
    // FORK is never asked for (its descriptor, if any, closes with the event); an unknown event
    // from a newer kernel is read, which is all it waits for.
}

void FaultServer::handle_fault(std::uint64_t address, std::uint32_t thread_id,
                               Clock::time_point now) {
    faults_.fetch_add(1, std::memory_order_relaxed);
    auto page = addresses_.page_at(address);
    if (!page) {
        // Registered memory that is no guest page: what mremap grew a region by. The VMM's
        // own, not the migration's: a page of zeros, as it would read unregistered.
        auto base = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
        std::uint64_t at = address & ~(base - 1);
        if (!uffd_.zeropage(at, base)) {
            (void)uffd_.wake(at, base);
        }
        return;
    }
    PageBitmap& present = placer_.present(page->region);
    if (present.test(page->first)) {
        return fault_on_present(*page, address, thread_id, now);
    }
    if (complete_.load(std::memory_order_relaxed)) {
        return missing_again(*page);  // discarded after the end, zero-filled since: zeros
    }
    if (vmm_ && vmm_->local != nullptr) {
        return place_locally(*page, now, thread_id);
    }
    waits_.add(page->region, page->first, now, thread_id);
    if (requests_.request(page->region, page->first)) {
        link_.request_queued();
    }
    // Placed between the check above and the wait being recorded: the placer may not have
    // seen the wait, so complete it here.
    if (present.test(page->first)) {
        waits_.complete(page->region, page->first, Clock::now());
    }
}

void FaultServer::fault_on_present(const GuestPages& page, std::uint64_t address,
                                   std::uint32_t thread_id, Clock::time_point now) {
    if (vmm_) {
        return zero_or_wake(page, address);
    }
    const GuestRegion& region = placer_.regions()[page.region];
    std::uint64_t at = address & ~(region.page_size - 1);
    auto seen = residency_.residency(at, 1, region.page_size, region.kind);
    if (seen && (*seen)[0] == uffd::Residency::Present) {
        // Placed after the fault was raised: the placement woke the thread (a copy wakes its
        // range, a failed one is followed by a wake). Another wake costs nothing.
        (void)uffd_.wake(at, region.page_size);
        return;
    }
    // Gone since it was placed (a discard whose pages went after a copy of them was placed
    // again), or hugetlbfs, whose page table cannot tell: missing again. A copy of a page
    // that was there after all fails with EEXIST and wakes the thread all the same.
    missing_again(page);
    if (!options_.discarded_pages_read_zero && !complete_.load(std::memory_order_relaxed)) {
        waits_.add(page.region, page.first, now, thread_id);
        if (placer_.present(page.region).test(page.first)) {
            waits_.complete(page.region, page.first, Clock::now());
        }
    }
}

void FaultServer::missing_again(const GuestPages& run) {
    auto pages = placer_.forget(run);
    if (options_.discarded_pages_read_zero || complete_.load(std::memory_order_relaxed)) {
        if (auto zeroed = placer_.place_zeros(run); !zeroed) {
            link_.fail(zeroed.error());
        }
        return;
    }
    if (requests_.request_again(run.region, pages)) {
        link_.request_queued();
    }
}

void FaultServer::discarded(std::uint64_t start, std::uint64_t end) {
    if (complete_.load(std::memory_order_relaxed)) {
        return;  // after the migration the memory is the guest's like any other: zeros
    }
    if (switching_.load(std::memory_order_acquire)) {
        return;  // the switchover's own discard: those pages are forgotten already
    }
    // The kernel drops the pages after this event is read, not before: a page marked present
    // here may still be mapped for a while, and a copy of it placed again meanwhile fails with
    // EEXIST and is lost with the rest. Such a page is found by its next fault
    // (fault_on_present) or by the check before completing.
    for (const GuestPages& run : addresses_.pages_in(start, end)) {
        discarded_pages_.fetch_add(run.count, std::memory_order_relaxed);
        if (vmm_) {
            // Zeros from now on: marked present so that nothing from the source lands there
            // (no placement is between its check and its copy: the fault thread holds events_),
            // placed when touched (zero_or_wake): the kernel drops the pages after this event
            // was read, and a placement now could be dropped with them or refused (EAGAIN).
            (void)placer_.forget(run);
            placer_.mark_zero(run);
            if (auto where = addresses_.locate(run.region, run.first, run.count)) {
                // Threads waiting on these pages fault again and get zeros.
                (void)uffd_.wake(where->address,
                                 where->pages * placer_.regions()[run.region].page_size);
            }
            continue;
        }
        if (options_.discarded_pages_read_zero) {
            // Pages still to come are zeros now (the source's copy, arriving later, is a
            // duplicate); the ones here read zeros once the kernel has dropped them.
            if (auto zeroed = placer_.place_zeros(run); !zeroed) {
                return link_.fail(zeroed.error());
            }
            continue;
        }
        missing_again(run);
        if (placer_.regions()[run.region].kind != uffd::MemoryKind::Hugetlb) {
            discarded_runs_.push_back(run);
        }
    }
}

void FaultServer::unmapped(std::uint64_t start, std::uint64_t end) {
    for (const GuestPages& run : addresses_.unmapped(start, end)) {
        placer_.drop(run);
    }
    // A thread blocked on a page there retries its access, and gets SIGSEGV like any access to
    // unmapped memory.
    (void)uffd_.wake(start, end - start);
}

void FaultServer::apply_queued_events(uffd::FaultReader& reader) {
    for (;;) {
        auto batch = reader.next(0);
        if (!batch || batch->stopped || batch->timed_out) {
            break;
        }
        auto now = Clock::now();
        for (auto& event : batch->events) {
            handle(event, now);
        }
    }
}

std::expected<std::uint64_t, transport::Failure> FaultServer::discard_at_switchover(
    const std::vector<PageBitmap>& pages) {
    // On the fault thread, after every event already queued: with every page present no
    // thread can be blocked on one (a fault needs a missing page; a REMOVE raised from now on
    // waits, pages and all, until this thread reads it), so unregistering wakes nobody.
    std::optional<std::expected<std::uint64_t, transport::Failure>> fast;
    {
        std::lock_guard lock(task_mutex_);
        task_ran_ = false;
        task_ = [&] {
            if (placer_.complete()) {
                fast = discard_stale_pages(uffd_, registrations_, placer_, addresses_, pages, true);
            }
        };
    }
    (void)nudge_faults_.signal();
    {
        // Until it ran. Once taken it runs to its end (it uses this frame); one never taken
        // (the fault thread ended with a failure) is withdrawn.
        std::unique_lock lock(task_mutex_);
        while (
            !task_done_.wait_for(lock, std::chrono::milliseconds(100), [&] { return task_ran_; })) {
            if (task_ && (link_.failed() || !fault_thread_.joinable())) {
                task_ = nullptr;
                return std::unexpected(transport::failure(
                    Errc::Closed, "the fault thread ended before the switchover's discard"));
            }
        }
    }
    if (fast) {
        return *fast;
    }
    // Some page is missing (the guest's process discarded it, or a fault waits on it): the
    // ranges stay registered, and the fault thread reads our REMOVE events as ours.
    switching_.store(true);
    auto slow = discard_stale_pages(uffd_, registrations_, placer_, addresses_, pages, false);
    switching_.store(false);
    return slow;
}

void FaultServer::confirm_complete(uffd::FaultReader& reader) {
    // Events queued before this point happened before it: apply them first (a REMOVE among
    // them makes pages missing again). Any event after it happened after the migration ended.
    apply_queued_events(reader);
    // A live source's guest still runs: its later rounds and the switchover's discards are to
    // come, whatever is present now.
    if (!placer_.complete() || precopy_.phase() != PrecopyReceiver::Phase::Running ||
        !discarded_pages_are_there()) {
        return;
    }
    complete_.store(true, std::memory_order_release);
    link_.completed();
}

bool FaultServer::discarded_pages_are_there() {
    bool all_there = true;
    for (const GuestPages& run : discarded_runs_) {
        const GuestRegion& region = placer_.regions()[run.region];
        for (std::uint64_t p = run.first; p < run.first + run.count;) {
            auto where = addresses_.locate(run.region, p, run.first + run.count - p);
            if (!where) {
                ++p;  // unmapped since
                continue;
            }
            auto seen =
                residency_.residency(where->address, where->pages, region.page_size, region.kind);
            for (std::uint64_t i = 0; seen && i < where->pages; ++i) {
                if ((*seen)[i] == uffd::Residency::Missing &&
                    placer_.present(run.region).test(p + i)) {
                    missing_again({run.region, p + i, 1});
                    all_there = false;
                }
            }
            p += where->pages;
        }
    }
    if (all_there || ++discard_checks_ >= kDiscardChecks) {
        discarded_runs_.clear();
    }
    return all_there;
}

void FaultServer::hold_stream(bool held) {
    link_.hold_stream(held);
}

void FaultServer::stop() {
    link_.fail(transport::failure(Errc::Closed, "the destination was stopped"));
}

DestinationProgress FaultServer::progress() const {
    DestinationProgress p;
    p.pages_total = placer_.total_pages();
    p.pages_present = placer_.present_pages();
    p.bytes_received = link_.bytes_received();
    p.faults = faults_.load(std::memory_order_relaxed);
    p.seconds = started_ ? std::chrono::duration<double>(Clock::now() - started_at_).count() : 0;
    p.connected = link_.connected();
    p.paused = link_.paused();
    p.pauses = link_.pause_count();
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
        link_.wait_settled([this] {
            if (options_.on_progress) {
                options_.on_progress(progress());
            }
        });
        if (complete_.load()) {
            // Every page is there: nothing can fault any more. Unregister and close.
            if (vmm_) {
                // Unregistered first, while the fault thread still reads: a discard of the
                // VMM's (its balloon) waits until its REMOVE event is read, and with no reader
                // left it would wait for ever. None comes once the ranges are unregistered.
                registrations_.clear();
            }
            stop_fault_thread();
            if (vmm_) {
                drain_events();
            }
            link_.shutdown();
            registrations_.clear();
            auto closing = std::move(uffd_);
        } else {
            // Failed. The fault thread goes on reading until the destructor: a VMM that
            // discards or unmaps guest memory now would otherwise wait for its event to be read.
            link_.shutdown();
        }
        if (!complete_.load() && options_.poison_on_failure) {
            // The embedder chose a memory error over a hang for whatever did not arrive.
            poison_missing();
        }
        if (options_.on_progress) {
            options_.on_progress(progress());
        }
    }
    auto failure = link_.failure();
    report.ok = !failure;
    if (failure) {
        report.error = to_error(*failure);
    }
    auto end = link_.completed_at().value_or(Clock::now());
    report.seconds = std::chrono::duration<double>(end - started_at_).count();
    report.pages_total = placer_.total_pages();
    report.bytes_total = layout_.total_bytes();
    PagesByPath pages = placer_.pages();
    report.pages_urgent = pages.urgent;
    report.pages_background = pages.background;
    report.pages_zero = pages.zero;
    report.pages_duplicate = pages.duplicate;
    report.pages_discarded = discarded_pages_.load();
    report.pages_unmapped = placer_.unmapped_pages();
    report.faults = faults_.load();
    report.requests = requests_.sent();
    report.bytes_received = link_.bytes_received();
    report.fault_latency = waits_.latency().summary();
    report.fault_threads = waits_.threads();
    report.max_thread_blocked_ms = waits_.max_thread_blocked_ms();
    report.hashes_verified = placer_.hashes_verified();
    report.bookkeeping_bytes = placer_.bookkeeping_bytes();
    report.data_path = link_.data_path();
    // What ran: a live source's rounds are placed by the bulk loop, in order, whatever was asked.
    report.placement = placement_;
    report.placement_threads =
        precopy_.live() ? 0 : static_cast<std::uint32_t>(options_.placement_threads);
    waits_.latency().for_each_bucket(
        [&](double upper, std::uint64_t n) { report.latency_buckets.emplace_back(upper, n); });
    report.pauses = link_.pauses(end);
    if (precopy_.live()) {
        PrecopyReceiver::Stats live = precopy_.stats();
        report.live_source = true;
        report.precopy_rounds = live.rounds;
        report.pages_replaced = placer_.replaced_pages();
        report.pages_discarded_at_switchover = live.discarded;
        report.switchover_seconds = live.switchover_seconds;
        report.faults_after_switchover =
            live.running_at ? report.faults - faults_at_switchover_.load() : 0;
    }
    return report;
}

bool FaultServer::wait_runnable(std::chrono::milliseconds timeout) {
    return precopy_.wait_runnable(Clock::now() + timeout, [this] { return link_.failed(); });
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
            auto where = addresses_.locate(r, p, 1);
            if (!where) {
                continue;  // unmapped since (not yet dropped: the fault thread is behind)
            }
            auto poisoned = uffd_.poison(where->address, region.page_size);
            if (!poisoned && poisoned.error() == std::errc::no_such_process) {
                registrations_.clear();  // the VMM's process is gone, and its memory with it
                return;
            }
            if (!poisoned && poisoned.error() == Errc::NotRegistered) {
                continue;  // unregistered under us: no thread of ours can wait on it
            }
            if (!poisoned && poisoned.error() != Errc::AlreadyPresent) {
                // No UFFDIO_POISON here: unregistering would hand waiting threads pages of zeros.
                return keep_blocked_until_exit();
            }
        }
    }
    registrations_.clear();
}

void FaultServer::keep_blocked_until_exit() {
    // The registrations and the descriptor outlive this object on purpose, released to the
    // process: unregistering or closing would let every thread blocked on a missing page read
    // zeros in place of its data. They stay blocked; the VMM decides what to do with the guest.
    // A thread goes on reading the descriptor, so that a REMOVE, UNMAP or REMAP event (which
    // blocks its caller until read) does not hang the VMM; the faults it reads stay unanswered.
    // Released once (uffd_ is empty afterwards), so this leaks at most one set per failure.
    stop_fault_thread();
    static_cast<void>(
        std::make_unique<std::vector<uffd::Registration>>(std::move(registrations_)).release());
    auto* kept = std::make_unique<uffd::UserfaultFd>(std::move(uffd_)).release();
    auto never = uffd::EventFd::create();
    if (!never) {
        return;
    }
    auto* never_stops = std::make_unique<uffd::EventFd>(std::move(*never)).release();
    std::thread([kept, never_stops] {
        name_this_thread("uffdm-kept");
        uffd::FaultReader reader(*kept, *never_stops);
        while (reader.next()) {
        }
    }).detach();
}

}  // namespace uffdm::migration
