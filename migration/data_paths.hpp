// data_paths.hpp — The two event loops each side of a migration runs, and the frames they send.
#pragma once

#include <pthread.h>

#include <expected>
#include <memory>

#include "migration/wire.hpp"
#include "transport/data_path.hpp"

namespace uffdm::migration {

// Two loops, so that placing or streaming a background run never delays a fault's answer on
// the same thread.
struct DataPaths {
    std::unique_ptr<transport::DataPath> urgent;
    std::unique_ptr<transport::DataPath> bulk;
    std::size_t window = 0;  // frames in flight per channel (the send window)
};

[[nodiscard]] inline std::expected<DataPaths, transport::Failure> make_data_paths(
    transport::Backend backend, const transport::LivenessOptions& liveness) {
    transport::DataPathOptions options;
    options.backend = backend;
    options.liveness = liveness;
    DataPaths paths;
    paths.window = options.send_window_frames;
    for (auto* path : {&paths.urgent, &paths.bulk}) {
        auto created = transport::DataPath::create(options);
        if (!created) {
            return std::unexpected(created.error());
        }
        *path = std::move(*created);
    }
    return paths;
}

// Names the calling thread (at most 15 characters, the kernel's limit) for top -H and perf.
inline void name_this_thread(const char* name) noexcept {
    (void)::pthread_setname_np(::pthread_self(), name);
}

// How a channel ended, for a report ("it said goodbye" when the peer closed it in order).
[[nodiscard]] inline std::string describe_end(const transport::Failure& why) {
    return why.detail.empty() ? std::string("it said goodbye") : why.detail;
}

// A migration message small enough to travel inline (everything but PAGES and LAYOUT).
[[nodiscard]] inline transport::OutgoingFrame message_frame(wire::MessageType type,
                                                            std::span<const std::byte> payload,
                                                            std::uint64_t token = 0) {
    transport::OutgoingFrame frame{.type = wire::frame_type(type)};
    (void)frame.set_inline(payload);
    frame.token = token;
    return frame;
}

}  // namespace uffdm::migration
