// page_server.hpp — The source: serves one migration of a guest's memory to a destination.
#pragma once

#include <expected>
#include <memory>

#include "migration/guest_memory.hpp"
#include "migration/report.hpp"
#include "migration/source_link.hpp"
#include "migration/source_pages.hpp"

namespace uffdm::migration {

// Threads: run() drives the listener (Asio); the link (source_link.hpp) runs one data path loop
// for the urgent connection (requests are answered ahead of everything, on their own socket
// and thread) and another that streams on every bulk connection. Each page is sent once unless
// the destination asks for it.
class PageServer {
  public:
    [[nodiscard]] static std::expected<std::unique_ptr<PageServer>, transport::Failure> open(
        const GuestMemory& memory, PageServerOptions options);
    PageServer(const PageServer&) = delete;
    PageServer& operator=(const PageServer&) = delete;
    ~PageServer();

    [[nodiscard]] transport::Endpoint local_endpoint() const { return link_.local_endpoint(); }
    // Serves one destination until it reports every page present (DONE) or the migration fails
    // (the destination vanishes, sends something wrong, or stop() is called).
    [[nodiscard]] SourceStats run();
    // Thread-safe.
    void stop();
    [[nodiscard]] SourceProgress progress() const;
    // A live source: the switchover at the end of the current round (thread-safe).
    void switchover_now();

  private:
    PageServer(const GuestMemory& memory, PageServerOptions options);

    // Declaration order is shutdown order: the link's loops use the sent pages.
    const GuestMemory& memory_;
    PageServerOptions options_;
    SentPages pages_;
    SourceLink link_;
    std::unique_ptr<PrecopySource> precopy_;  // a live source's rounds (its thread uses link_)
};

}  // namespace uffdm::migration
