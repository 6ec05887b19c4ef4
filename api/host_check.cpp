// host_check.cpp — uffdm::check_host: privileges, features, ioctls per memory kind, io_uring.
#include <liburing.h>
#include <sys/utsname.h>

#include <cstring>
#include <fstream>
#include <uffdm/uffdm.hpp>

#include "migration/placement_mode.hpp"
#include "uffd/dirty_tracker.hpp"
#include "uffd/mapping.hpp"
#include "uffd/privilege_probe.hpp"
#include "uffd/userfault_fd.hpp"

namespace uffdm {

namespace {

uffd::IoctlSet ioctls_for(const uffd::UserfaultFd& fd, const uffd::Mapping& mapping,
                          uffd::RegisterModes modes, std::string* error) {
    auto reg = fd.register_mapping(mapping, modes);
    if (!reg) {
        if (error != nullptr) {
            *error = reg.error().message();
        }
        return {};
    }
    return reg->ioctls();
}

// Tracks a write to a page of this kind for real: the features, the registration, the
// protection and PAGEMAP_SCAN all have to work.
DirtyTrackingReport check_dirty_tracking(uffd::MemoryKind kind) {
    DirtyTrackingReport report{std::string(to_string(kind)), false, {}};
    if (auto supported = uffd::DirtyTracker::supported(kind); !supported) {
        report.note = "no asynchronous write-protection here (" + supported.error().message() +
                      "; Linux 6.7+): a source can migrate a paused guest only (postcopy)";
        return report;
    }
    auto mapping = kind == uffd::MemoryKind::Anonymous ? uffd::Mapping::anonymous(4096)
                   : kind == uffd::MemoryKind::Shmem   ? uffd::Mapping::shmem(4096)
                                                       : uffd::Mapping::hugetlb(2U << 20);
    if (!mapping) {
        report.note = "cannot map " + report.kind + " memory to try: " + mapping.error().message();
        return report;
    }
    auto tracker = uffd::DirtyTracker::start(reinterpret_cast<std::uint64_t>(mapping->data()),
                                             mapping->size(), kind);
    if (!tracker) {
        report.note = "tracking failed: " + tracker.error().message();
        return report;
    }
    mapping->data()[0] = std::byte{1};
    auto written = tracker->collect();
    if (!written || written->size() != 1) {
        report.note = written ? "PAGEMAP_SCAN did not see a write"
                              : "PAGEMAP_SCAN failed: " + written.error().message();
        return report;
    }
    report.available = true;
    return report;
}

MemoryKindReport check_kind(const uffd::UserfaultFd& fd, uffd::MemoryKind kind) {
    MemoryKindReport report;
    report.kind = std::string(uffdm::to_string(kind));
    std::size_t length =
        kind == uffd::MemoryKind::Hugetlb ? uffd::kHugePageSize : uffd::base_page_size();
    auto mapping = uffd::Mapping::create(kind, length);
    if (!mapping) {
        report.note = "cannot map: " + mapping.error().message();
        if (kind == uffd::MemoryKind::Hugetlb) {
            report.note += " (reserve huge pages: sysctl vm.nr_hugepages=N)";
        }
        return report;
    }
    std::string error;
    uffd::IoctlSet missing = ioctls_for(fd, *mapping, {.missing = true}, &error);
    uffd::IoctlSet minor;
    report.missing_ioctls = missing.names();
    report.available = !report.missing_ioctls.empty();
    if (!report.available) {
        report.note = "cannot register in MISSING mode: " + error;
    }
    if (kind != uffd::MemoryKind::Anonymous) {
        minor = ioctls_for(fd, *mapping, {.minor = true}, nullptr);
        report.minor_ioctls = minor.names();
    }
    report.wp_ioctls = ioctls_for(fd, *mapping, {.write_protect = true}, nullptr).names();
    if (report.available) {
        // The same choice a destination makes when it registers this kind.
        auto mode = migration::choose_placement(kind, missing, minor);
        report.placement = mode ? mode->describe() : "none: " + mode.error();
        if (mode) {
            report.placement_passed_over = mode->passed_over;
        }
    }
    return report;
}

std::uint64_t meminfo(std::string_view key) {
    std::ifstream in("/proc/meminfo");
    std::string name;
    std::uint64_t value = 0;
    std::string unit;
    while (in >> name >> value) {
        std::getline(in, unit);
        if (name.size() == key.size() + 1 && name.starts_with(key)) {
            return value;
        }
    }
    return 0;
}

void check_io_uring(HostReport& report) {
    io_uring ring{};
    int rc = ::io_uring_queue_init(4, &ring, 0);
    if (rc < 0) {
        report.io_uring_available = false;
        report.io_uring_detail = std::string("io_uring_setup failed: ") + std::strerror(-rc);
        std::ifstream disabled("/proc/sys/kernel/io_uring_disabled");
        int value = 0;
        if (disabled >> value && value != 0) {
            report.io_uring_detail += " (kernel.io_uring_disabled=" + std::to_string(value) + ")";
        }
        return;
    }
    io_uring_probe* probe = ::io_uring_get_probe_ring(&ring);
    int supported = 0;
    if (probe != nullptr) {
        for (int op = 0; op <= probe->last_op; ++op) {
            supported += (probe->ops[op].flags & IO_URING_OP_SUPPORTED) ? 1 : 0;
        }
        ::io_uring_free_probe(probe);
    }
    ::io_uring_queue_exit(&ring);
    report.io_uring_available = true;
    report.io_uring_detail = std::to_string(supported) + " opcodes supported";
}

}  // namespace

std::string_view version() noexcept {
    return UFFDM_VERSION;
}

std::string_view to_string(HostVerdict verdict) noexcept {
    switch (verdict) {
        case HostVerdict::KernelFaults:
            return "kernel-faults";
        case HostVerdict::UserFaultsOnly:
            return "user-faults-only";
        case HostVerdict::NoUserfaultfd:
            return "no-userfaultfd";
        case HostVerdict::Invalid:
            break;
    }
    return "invalid";
}

int HostReport::exit_code() const noexcept {
    switch (verdict) {
        case HostVerdict::KernelFaults:
            return 0;
        case HostVerdict::UserFaultsOnly:
            return 2;
        default:
            return 1;
    }
}

HostReport check_host(const CheckOptions& options) {
    HostReport report;
    utsname uts{};
    if (::uname(&uts) == 0) {
        report.kernel_release = uts.release;
        report.machine = uts.machine;
    }
    uffd::PrivilegeFacts facts = uffd::probe_privileges(options.device_path);
    uffd::GateDecision decision = uffd::decide(facts);
    for (const auto& g : decision.grants) {
        report.grants.push_back({std::string(uffd::to_string(g.grant)), g.holds, g.detail});
    }
    report.in_user_namespace = facts.in_user_namespace;
    report.grant = std::string(uffd::to_string(decision.grant));
    report.refusal = decision.refusal;

    auto opened = uffd::open_with_decision(facts, decision, false, {}, {});
    if (!opened) {
        report.verdict = HostVerdict::NoUserfaultfd;
        report.open_error = opened.error().message;
    } else {
        report.verdict = decision.scope == uffd::FaultScope::KernelAndUser
                             ? HostVerdict::KernelFaults
                             : HostVerdict::UserFaultsOnly;
        const uffd::UserfaultFd& fd = opened->uffd;
        report.open_route = std::string(uffd::to_string(fd.route()));
        report.features_offered = fd.offered().bits();
        report.feature_names = fd.offered().names();
        report.api_ioctls = fd.api_ioctls().names();
        for (uffd::MemoryKind kind :
             {uffd::MemoryKind::Anonymous, uffd::MemoryKind::Shmem, uffd::MemoryKind::Hugetlb}) {
            report.memory_kinds.push_back(check_kind(fd, kind));
        }
    }
    report.huge_page_size = meminfo("Hugepagesize") * 1024;
    report.huge_pages_total = meminfo("HugePages_Total");
    report.huge_pages_free = meminfo("HugePages_Free");
    check_io_uring(report);
    for (uffd::MemoryKind kind :
         {uffd::MemoryKind::Anonymous, uffd::MemoryKind::Shmem, uffd::MemoryKind::Hugetlb}) {
        report.dirty_tracking.push_back(check_dirty_tracking(kind));
    }
    return report;
}

}  // namespace uffdm
