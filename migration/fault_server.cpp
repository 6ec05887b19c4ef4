// fault_server.cpp — The destination's fault thread, its start and its report.
#include "migration/fault_server.hpp"

#include "migration/data_paths.hpp"
#include "uffd/fault_reader.hpp"

namespace uffdm::migration {

FaultServer::FaultServer(uffd::UserfaultFd uffd, std::vector<GuestRegion> regions,
                         wire::Layout layout, uffd::EventFd stop_faults, FaultServerOptions options)
    : options_(std::move(options)),
      uffd_(std::move(uffd)),
      layout_(std::move(layout)),
      placer_(uffd_, std::move(regions), waits_, options_.verify_hashes),
      requests_(placer_, layout_),
      stop_faults_(std::move(stop_faults)),
      link_(options_, layout_, placer_, requests_) {}

std::expected<std::unique_ptr<FaultServer>, transport::Failure> FaultServer::create(
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
            transport::Failure{stop_faults.error(), "eventfd: " + stop_faults.error().message()});
    }
    std::unique_ptr<FaultServer> server(new FaultServer(std::move(uffd), std::move(regions),
                                                        std::move(layout), std::move(*stop_faults),
                                                        std::move(options)));
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
    if (started_ && !placer_.complete()) {
        poison_missing();
    }
}

std::expected<void, transport::Failure> FaultServer::start() {
    if (started_) {
        return std::unexpected(transport::failure(Errc::InvalidArgument, "already started"));
    }
    for (const GuestRegion& r : placer_.regions()) {
        auto registration = uffd_.register_range(reinterpret_cast<std::uint64_t>(r.data), r.length,
                                                 uffd::RegisterModes::missing_only());
        if (!registration) {
            registrations_.clear();
            return std::unexpected(transport::Failure{
                registration.error(), "registering guest memory with the userfaultfd: " +
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
    placer_.on_complete([this] { link_.completed(); });
    started_ = true;
    started_at_ = Clock::now();
    fault_thread_ = std::thread([this] {
        name_this_thread("uffdm-faults");
        fault_loop();
    });
    link_.start(started_at_);
    return {};
}

void FaultServer::fault_loop() {
    uffd::FaultReader reader(uffd_, stop_faults_);
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
        if (requests_.request(r, page)) {
            link_.request_queued();
        }
        // Placed between the check above and the wait being recorded: the placer may not have
        // seen the wait, so complete it here.
        if (present.test(page)) {
            waits_.complete(r, page, Clock::now());
        }
        return;
    }
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
        (void)stop_faults_.signal();
        fault_thread_.join();
        link_.shutdown();
        if (placer_.complete()) {
            // Every page is there: nothing can fault any more. Unregister and close.
            registrations_.clear();
            auto closing = std::move(uffd_);
        } else if (options_.poison_on_failure) {
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
    report.faults = faults_.load();
    report.requests = requests_.sent();
    report.bytes_received = link_.bytes_received();
    report.fault_latency = waits_.latency().summary();
    report.fault_threads = waits_.threads();
    report.max_thread_blocked_ms = waits_.max_thread_blocked_ms();
    report.hashes_verified = placer_.hashes_verified();
    report.bookkeeping_bytes = placer_.bookkeeping_bytes();
    report.data_path = link_.data_path();
    waits_.latency().for_each_bucket(
        [&](double upper, std::uint64_t n) { report.latency_buckets.emplace_back(upper, n); });
    report.pauses = link_.pauses(end);
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
                return keep_blocked_until_exit();
            }
            p = end;
        }
    }
    registrations_.clear();
}

void FaultServer::keep_blocked_until_exit() {
    // The registrations and the descriptor outlive this object on purpose, released to the
    // process: unregistering or closing would let every thread blocked on a missing page read
    // zeros in place of its data. They stay blocked; the VMM decides what to do with the guest.
    // Released once (uffd_ is empty afterwards), so this leaks at most one set per failure.
    static_cast<void>(
        std::make_unique<std::vector<uffd::Registration>>(std::move(registrations_)).release());
    static_cast<void>(std::make_unique<uffd::UserfaultFd>(std::move(uffd_)).release());
}

}  // namespace uffdm::migration
