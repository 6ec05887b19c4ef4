// capabilities.hpp — Dropping every capability once the userfaultfd is open, and reading them back.
#pragma once

#include <cstdint>
#include <expected>
#include <system_error>

#include <uffdm/error.hpp>

namespace uffdm::uffd {

// The capability sets of the calling thread and the no_new_privs flag, as /proc/self/status
// shows them.
struct CapabilityState {
    std::uint64_t inheritable = 0;
    std::uint64_t permitted = 0;
    std::uint64_t effective = 0;
    std::uint64_t bounding = 0;
    std::uint64_t ambient = 0;
    bool no_new_privs = false;
    int threads = 0;

    [[nodiscard]] bool holds_none() const noexcept {
        return inheritable == 0 && permitted == 0 && effective == 0 && ambient == 0;
    }
};

[[nodiscard]] std::expected<CapabilityState, std::error_code> read_capability_state();

// Sets no_new_privs, clears the bounding set (when CAP_SETPCAP allows), locks root out of
// regaining capabilities through exec (securebits, when allowed), clears the ambient set and
// then the effective, permitted and inheritable sets. An open userfaultfd keeps working: the
// privilege was checked when it was created.
//
// Capabilities are per thread on Linux, so this must run while the process has one thread;
// otherwise it fails with Errc::InvalidArgument and changes nothing.
[[nodiscard]] std::expected<CapabilityState, std::error_code> drop_all_capabilities();

}  // namespace uffdm::uffd
