// loopback_source.hpp — A synthetic guest served on loopback by a thread of its own.
#pragma once

#include <chrono>
#include <expected>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "migration/guest_memory.hpp"
#include "migration/page_server.hpp"

namespace uffdm::migration {

// A synthetic guest served on loopback by a thread of its own; stopped if the test ends early.
struct LoopbackSource {
    explicit LoopbackSource(const SyntheticSpec& spec,
                            std::chrono::milliseconds reconnect_timeout = std::chrono::seconds(30))
        : memory(GuestMemory::synthetic(spec)) {
        if (!memory) {
            error = memory.error().detail;
            return;
        }
        PageServerOptions serve;
        serve.listen = *transport::parse_endpoint("tcp:127.0.0.1:0");
        serve.reconnect_timeout = reconnect_timeout;
        auto opened = PageServer::open(*memory, serve);
        if (!opened) {
            error = opened.error().detail;
            return;
        }
        server = std::move(*opened);
        thread = std::thread([this] { report = server->run(); });
    }
    ~LoopbackSource() {
        if (thread.joinable()) {
            server->stop();
            thread.join();
        }
    }
    std::expected<GuestMemory, transport::Failure> memory;
    std::unique_ptr<PageServer> server;
    std::optional<SourceStats> report;
    std::thread thread;
    std::string error;
};

}  // namespace uffdm::migration
