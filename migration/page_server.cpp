// page_server.cpp — The source's start, stop, progress and report.
#include "migration/page_server.hpp"

namespace uffdm::migration {

PageServer::PageServer(const GuestMemory& memory, PageServerOptions options)
    : memory_(memory),
      options_(std::move(options)),
      pages_(memory, options_.bulk_run_bytes),
      link_(options_, pages_) {}

PageServer::~PageServer() {
    stop();
    if (precopy_) {
        precopy_->stop();
    }
}

void PageServer::switchover_now() {
    if (precopy_) {
        precopy_->switchover_now();
    }
}

std::expected<std::unique_ptr<PageServer>, transport::Failure> PageServer::open(
    const GuestMemory& memory, PageServerOptions options) {
    std::unique_ptr<PageServer> server(new PageServer(memory, std::move(options)));
    if (server->options_.live.enabled) {
        auto precopy =
            PrecopySource::start(server->options_.live, server->pages_,
                                 [raw = server.get()] { return raw->link_.bytes_sent(); });
        if (!precopy) {
            return std::unexpected(precopy.error());
        }
        server->precopy_ = std::move(*precopy);
        server->link_.set_precopy(server->precopy_.get());
    }
    if (auto opened = server->link_.open(); !opened) {
        return std::unexpected(opened.error());
    }
    return server;
}

void PageServer::stop() {
    link_.fail(transport::failure(Errc::Closed, "the source was stopped"));
}

SourceProgress PageServer::progress() const {
    const SourceCounts& counts = pages_.counts();
    SourceProgress p;
    p.pages_total = memory_.layout().total_pages();
    p.pages_sent = counts.streamed.load() + counts.answered.load() - counts.resent.load();
    p.requests = counts.requests.load();
    p.bytes_sent = link_.bytes_sent();
    p.connected = link_.connected();
    return p;
}

SourceStats PageServer::run() {
    if (precopy_) {
        precopy_->launch([this] { link_.wake_streams(); }, [this] { link_.wake_urgent(); },
                         [this](transport::Failure why) { link_.fail(std::move(why)); });
    }
    SourceLink::Span span = link_.serve([this] {
        if (options_.on_progress) {
            options_.on_progress(progress());
        }
    });
    const SourceCounts& counts = pages_.counts();
    SourceStats report;
    auto failure = link_.failure();
    report.ok = !failure;
    if (failure) {
        report.error = to_error(*failure);
    }
    report.bulk_channels = link_.bulk_channels();
    report.seconds =
        span.joined ? std::chrono::duration<double>(*span.ended - *span.joined).count() : 0.0;
    report.pages_total = memory_.layout().total_pages();
    report.pages_streamed = counts.streamed.load();
    report.pages_answered = counts.answered.load();
    report.pages_resent = counts.resent.load();
    report.resumes = counts.resumes.load();
    report.pauses = link_.pause_count();
    report.zero_pages = counts.zero.load();
    report.requests = counts.requests.load();
    report.bytes_sent = link_.bytes_sent();
    report.compression = link_.compression().report();
    report.max_bandwidth = options_.max_bandwidth;
    report.capped_seconds = link_.capped_seconds();
    if (precopy_) {
        precopy_->finish(!report.ok, report);
    }
    return report;
}

}  // namespace uffdm::migration
