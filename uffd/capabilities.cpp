// capabilities.cpp — no_new_privs, securebits and libcap to leave a process with no privilege.
#include "uffd/capabilities.hpp"

#include <linux/securebits.h>
#include <sys/capability.h>
#include <sys/prctl.h>

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <string>

#include "uffd/system_error.hpp"

namespace uffdm::uffd {

std::expected<CapabilityState, std::error_code> read_capability_state() {
    std::ifstream in("/proc/self/status");
    if (!in) {
        return fail_errno();
    }
    CapabilityState state;
    std::string line;
    // Parsed without exceptions: a malformed line leaves its field at zero.
    auto number = [](const std::string& text, int base) -> std::uint64_t {
        char* end = nullptr;
        errno = 0;
        unsigned long long value = std::strtoull(text.c_str(), &end, base);
        return (errno != 0 || end == text.c_str()) ? 0 : value;
    };
    while (std::getline(in, line)) {
        auto colon = line.find(':');
        if (colon == std::string::npos) {
            continue;
        }
        std::string key = line.substr(0, colon);
        auto first = line.find_first_not_of(" \t", colon + 1);
        std::string value = first == std::string::npos ? std::string() : line.substr(first);
        if (key == "CapInh") {
            state.inheritable = number(value, 16);
        } else if (key == "CapPrm") {
            state.permitted = number(value, 16);
        } else if (key == "CapEff") {
            state.effective = number(value, 16);
        } else if (key == "CapBnd") {
            state.bounding = number(value, 16);
        } else if (key == "CapAmb") {
            state.ambient = number(value, 16);
        } else if (key == "NoNewPrivs") {
            state.no_new_privs = value == "1";
        } else if (key == "Threads") {
            state.threads = static_cast<int>(number(value, 10));
        }
    }
    return state;
}

std::expected<CapabilityState, std::error_code> drop_all_capabilities() {
    auto before = read_capability_state();
    if (!before) {
        return before;
    }
    if (before->threads != 1) {
        return fail(Errc::InvalidArgument);  // other threads would keep their capabilities
    }
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
        return fail_errno();
    }
    cap_t current = ::cap_get_proc();
    cap_flag_value_t setpcap = CAP_CLEAR;
    if (current != nullptr) {
        (void)::cap_get_flag(current, CAP_SETPCAP, CAP_EFFECTIVE, &setpcap);
        ::cap_free(current);
    }
    if (setpcap == CAP_SET) {
        for (cap_value_t cap = 0; ::prctl(PR_CAPBSET_READ, cap, 0, 0, 0) >= 0; ++cap) {
            if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0) {
                return fail_errno();
            }
        }
        // uid 0 would otherwise be handed a full permitted set again by execve.
        int bits = SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP |
                   SECBIT_NO_SETUID_FIXUP_LOCKED | SECBIT_KEEP_CAPS_LOCKED;
        if (::prctl(PR_SET_SECUREBITS, bits, 0, 0, 0) < 0) {
            return fail_errno();
        }
    }
    if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL) {
        return fail_errno();
    }
    cap_t none = ::cap_init();  // every flag clear
    if (none == nullptr) {
        return fail_errno();
    }
    int rc = ::cap_set_proc(none);
    int err = errno;
    ::cap_free(none);
    if (rc < 0) {
        return fail_errno(err);
    }
    auto after = read_capability_state();
    if (after && !after->holds_none()) {
        return fail(Errc::PermissionDenied);
    }
    return after;
}

}  // namespace uffdm::uffd
