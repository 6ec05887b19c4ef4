// data_path.cpp — Choosing the data path backend, and what both backends share.
#include "transport/data_path.hpp"

#include <cstdlib>
#include <string_view>

#include "transport/backends.hpp"

namespace uffdm::transport {

std::string_view to_string(Backend backend) noexcept {
    switch (backend) {
        case Backend::Auto:
            return "auto";
        case Backend::IoUring:
            return "io_uring";
        case Backend::Asio:
            return "asio";
        case Backend::Invalid:
            break;
    }
    return "invalid";
}

void accumulate(DataPathStats& into, const DataPathStats& from) noexcept {
    into.frames_sent += from.frames_sent;
    into.frames_received += from.frames_received;
    into.bytes_sent += from.bytes_sent;
    into.bytes_received += from.bytes_received;
    into.send_calls += from.send_calls;
    into.receive_calls += from.receive_calls;
    into.pings_sent += from.pings_sent;
}

std::expected<std::unique_ptr<DataPath>, Failure> DataPath::create(DataPathOptions options) {
    if (options.send_window_frames == 0 || options.max_payload > kMaxPayload ||
        options.uring_entries < 8) {
        return std::unexpected(failure(
            Errc::InvalidArgument, "data path options: send window 0, max payload above " +
                                       std::to_string(kMaxPayload) + ", or fewer than 8 entries"));
    }
    Backend wanted = options.backend;
    if (wanted == Backend::Auto) {
        const char* forced = std::getenv("UFFDM_DATA_PATH");
        if (forced != nullptr && std::string_view(forced) == "asio") {
            wanted = Backend::Asio;
        }
    }
    if (wanted == Backend::Asio) {
        return make_asio_data_path(std::move(options));
    }
    if (wanted != Backend::IoUring && wanted != Backend::Auto) {
        return std::unexpected(failure(Errc::InvalidArgument, "data path backend is invalid"));
    }
    auto uring = make_uring_data_path(options);
    if (uring || wanted == Backend::IoUring) {
        return uring;
    }
    // io_uring disabled (kernel.io_uring_disabled, seccomp, an old kernel): same interface.
    return make_asio_data_path(std::move(options));
}

}  // namespace uffdm::transport
