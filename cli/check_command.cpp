// check_command.cpp — Renders a HostReport for people (text) and programs (JSON).
#include "cli/check_command.hpp"

#include <nlohmann/json.hpp>
#include <ostream>

namespace uffdm::cli {

namespace {

std::string join(const std::vector<std::string>& items) {
    std::string out;
    for (const auto& item : items) {
        out += (out.empty() ? "" : " ") + item;
    }
    return out.empty() ? "-" : out;
}

}  // namespace

void print_check_text(const HostReport& r, std::ostream& out) {
    out << "kernel        " << r.kernel_release << " (" << r.machine << ")\n";
    out << "verdict       " << to_string(r.verdict);
    if (r.verdict == HostVerdict::KernelFaults) {
        out << " via " << r.grant;
    }
    out << "\n";
    out << "grants\n";
    for (const auto& g : r.grants) {
        out << "  " << (g.holds ? "[yes] " : "[no]  ") << g.name << ": " << g.detail << "\n";
    }
    if (r.in_user_namespace) {
        out << "  note: this process runs in a user namespace\n";
    }
    if (!r.open_error.empty()) {
        out << "userfaultfd   cannot open: " << r.open_error << "\n";
    } else {
        out << "userfaultfd   opened via " << r.open_route << "\n";
        out << "features      " << join(r.feature_names) << "\n";
        out << "api ioctls    " << join(r.api_ioctls) << "\n";
        for (const auto& k : r.memory_kinds) {
            out << "memory " << k.kind << "\n";
            if (!k.available) {
                out << "  unavailable: " << k.note << "\n";
                continue;
            }
            out << "  missing     " << join(k.missing_ioctls) << "\n";
            if (k.kind != "anonymous") {
                out << "  minor       " << join(k.minor_ioctls) << "\n";
            }
            out << "  wp          " << join(k.wp_ioctls) << "\n";
            out << "  placement   " << k.placement << "\n";
            for (const auto& other : k.placement_passed_over) {
                out << "    not used: " << other << "\n";
            }
        }
    }
    out << "huge pages    " << r.huge_pages_free << " free of " << r.huge_pages_total << " ("
        << r.huge_page_size / 1024 << " KiB)\n";
    out << "io_uring      " << (r.io_uring_available ? "available: " : "unavailable: ")
        << r.io_uring_detail << "\n";
    // What a live source (precopy) needs: no privilege, only the kernel's write tracking.
    std::vector<std::string> tracked;
    for (const auto& d : r.dirty_tracking) {
        if (d.available) {
            tracked.push_back(d.kind);
        }
    }
    out << "dirty pages   "
        << (tracked.empty() ? std::string("not tracked: a source serves a paused guest only")
                            : join(tracked) + ": a live source tracks writes (no privilege)")
        << "\n";
    for (const auto& d : r.dirty_tracking) {
        if (!d.available) {
            out << "  " << d.kind << ": " << d.note << "\n";
        }
    }
    if (!r.refusal.empty()) {
        out << "\n" << r.refusal << "\n";
    }
}

void print_check_json(const HostReport& r, std::ostream& out) {
    nlohmann::json j;
    j["version"] = std::string(version());
    j["kernel"] = {{"release", r.kernel_release}, {"machine", r.machine}};
    j["verdict"] = std::string(to_string(r.verdict));
    j["exit_code"] = r.exit_code();
    j["grant"] = r.grant;
    j["refusal"] = r.refusal;
    j["in_user_namespace"] = r.in_user_namespace;
    j["grants"] = nlohmann::json::array();
    for (const auto& g : r.grants) {
        j["grants"].push_back({{"name", g.name}, {"holds", g.holds}, {"detail", g.detail}});
    }
    j["userfaultfd"] = {{"opened", r.open_error.empty()},
                        {"route", r.open_route},
                        {"error", r.open_error},
                        {"features_offered", r.features_offered},
                        {"feature_names", r.feature_names},
                        {"api_ioctls", r.api_ioctls}};
    j["memory_kinds"] = nlohmann::json::array();
    for (const auto& k : r.memory_kinds) {
        j["memory_kinds"].push_back({{"kind", k.kind},
                                     {"available", k.available},
                                     {"note", k.note},
                                     {"missing_ioctls", k.missing_ioctls},
                                     {"minor_ioctls", k.minor_ioctls},
                                     {"wp_ioctls", k.wp_ioctls},
                                     {"placement", k.placement},
                                     {"placement_passed_over", k.placement_passed_over}});
    }
    j["huge_pages"] = {{"page_size", r.huge_page_size},
                       {"total", r.huge_pages_total},
                       {"free", r.huge_pages_free}};
    j["io_uring"] = {{"available", r.io_uring_available}, {"detail", r.io_uring_detail}};
    j["dirty_tracking"] = nlohmann::json::array();
    for (const auto& d : r.dirty_tracking) {
        j["dirty_tracking"].push_back(
            {{"kind", d.kind}, {"available", d.available}, {"note", d.note}});
    }
    out << j.dump(2) << "\n";
}

}  // namespace uffdm::cli
