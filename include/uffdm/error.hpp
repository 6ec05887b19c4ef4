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

// The one category object of uffdm errors, defined in libuffdm (exported): a code the library
// made compares equal to uffdm::Errc values in the embedder's program, which an inline
// definition in this header would not guarantee across the shared library's boundary.
[[nodiscard]] const std::error_category& error_category() noexcept;

[[nodiscard]] inline std::error_code make_error_code(Errc e) noexcept {
    return {static_cast<int>(e), error_category()};
}

// What failed and what to do about it. code is a std::system_category errno or a uffdm::Errc.
struct Error {
    std::error_code code;
    std::string message;
};

}  // namespace uffdm

template <>
struct std::is_error_code_enum<uffdm::Errc> : std::true_type {};
