// system_error.hpp — Turning errno into std::error_code and std::unexpected.
#pragma once

#include <cerrno>
#include <expected>
#include <system_error>

#include <uffdm/error.hpp>

namespace uffdm::uffd {

[[nodiscard]] inline std::error_code errno_code(int err) noexcept {
    return {err, std::system_category()};
}

[[nodiscard]] inline std::unexpected<std::error_code> fail_errno(int err = errno) noexcept {
    return std::unexpected(errno_code(err));
}

[[nodiscard]] inline std::unexpected<std::error_code> fail(Errc e) noexcept {
    return std::unexpected(make_error_code(e));
}

}  // namespace uffdm::uffd
