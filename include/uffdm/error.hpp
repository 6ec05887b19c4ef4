// error.hpp — The error meanings uffd-migrate callers act on, as a std::error_category.
#pragma once

#include <string>
#include <system_error>
#include <type_traits>

namespace uffdm {

// Kernel errors travel as std::system_category codes; these name the meanings
// that callers branch on. Every value is documented with what to do about it.
enum class Errc : int {
    Invalid = 0,
    RetryLater = 1,         // EAGAIN: the mapping changed (REMOVE/UNMAP queued); read events, retry
    AlreadyPresent = 2,     // EEXIST: the page is there already; success, but wake the waiters
    Unsupported = 3,        // the running kernel did not grant the feature or ioctl
    PermissionDenied = 4,   // a privilege is missing; the message names the fix
    ProtocolViolation = 5,  // a peer sent something the protocol forbids
    PeerLost = 6,           // the peer went away
    Unaligned = 7,          // an address or length is not a multiple of the page size
    NotRegistered = 8,      // the range is not (wholly) inside one registration of this userfaultfd
    Closed = 9,             // the object was moved from or closed
    InvalidArgument = 10,   // zero length, overflow, or contradictory options
    NotMapped = 11,         // part of the address range has no mapping at all
    PeerAborted = 12,       // the peer ended the connection on purpose (its ERROR says why)
    TimedOut = 13,          // a deadline passed (e.g. no reconnection in time)
};

class ErrorCategory final : public std::error_category {
  public:
    [[nodiscard]] const char* name() const noexcept override { return "uffdm"; }
    [[nodiscard]] std::string message(int value) const override {
        switch (static_cast<Errc>(value)) {
            case Errc::Invalid:
                return "no error";
            case Errc::RetryLater:
                return "the address space changed under the operation; retry after reading events";
            case Errc::AlreadyPresent:
                return "page already present";
            case Errc::Unsupported:
                return "not supported by the running kernel";
            case Errc::PermissionDenied:
                return "permission denied";
            case Errc::ProtocolViolation:
                return "protocol violation";
            case Errc::PeerLost:
                return "peer lost";
            case Errc::PeerAborted:
                return "the peer ended the connection";
            case Errc::TimedOut:
                return "deadline passed";
            case Errc::Unaligned:
                return "address or length not aligned to the page size";
            case Errc::NotRegistered:
                return "range not inside a registration of this userfaultfd";
            case Errc::Closed:
                return "object is closed";
            case Errc::InvalidArgument:
                return "invalid argument";
            case Errc::NotMapped:
                return "address range is not wholly mapped";
        }
        return "unknown uffdm error " + std::to_string(value);
    }
};

[[nodiscard]] inline const std::error_category& error_category() noexcept {
    static const ErrorCategory category;
    return category;
}

[[nodiscard]] inline std::error_code make_error_code(Errc e) noexcept {
    return {static_cast<int>(e), error_category()};
}

}  // namespace uffdm

template <>
struct std::is_error_code_enum<uffdm::Errc> : std::true_type {};
