// asio.hpp — The one place Boost.Asio is included (with what Boost 1.74 forgets to include).
#pragma once

#include <utility>  // Boost 1.74's awaitable.hpp uses std::exchange without including it

#include <boost/asio.hpp>

namespace uffdm::transport {
namespace asio = boost::asio;
using Socket = asio::generic::stream_protocol::socket;
}  // namespace uffdm::transport
