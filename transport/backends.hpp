// backends.hpp — The two data path implementations, for DataPath::create only.
#pragma once

#include "transport/data_path.hpp"

namespace uffdm::transport {

[[nodiscard]] std::expected<std::unique_ptr<DataPath>, Failure> make_uring_data_path(
    DataPathOptions options);
[[nodiscard]] std::unique_ptr<DataPath> make_asio_data_path(DataPathOptions options);

// Adds each counter of from to into (not fixed_buffer_channels, which is a level).
void accumulate(DataPathStats& into, const DataPathStats& from) noexcept;

}  // namespace uffdm::transport
