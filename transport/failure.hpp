// failure.hpp — An error code with the sentence that explains it (field, value, what to do).
#pragma once

#include <string>
#include <system_error>

#include <uffdm/error.hpp>

namespace uffdm::transport {

struct Failure {
    std::error_code code;
    std::string detail;
};

[[nodiscard]] inline Failure failure(Errc code, std::string detail) {
    return {make_error_code(code), std::move(detail)};
}

// A peer broke the protocol: a bad field, a message out of turn.
[[nodiscard]] inline Failure violation(std::string detail) {
    return failure(Errc::ProtocolViolation, std::move(detail));
}

}  // namespace uffdm::transport
