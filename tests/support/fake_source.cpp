// fake_source.cpp — The scripted source on an Asio thread.
#include "tests/support/fake_source.hpp"

#include <sys/socket.h>

#include "migration/compression.hpp"
#include "migration/page_hash.hpp"
#include "transport/byte_order.hpp"

namespace uffdm::test {

using namespace migration;
namespace asio = transport::asio;

FakeSource::FakeSource(wire::Layout layout, std::uint64_t honest_pages, Misbehaviour what)
    : layout_(std::move(layout)), honest_pages_(honest_pages), what_(what) {
    if (is_live(what)) {
        layout_.flags = wire::Layout::kLive;
    }
    transport::ListenerOptions options;
    options.endpoint = *transport::parse_endpoint("tcp:127.0.0.1:0");
    auto listener = transport::Listener::open(io_, options, [this](transport::Connection c) {
        auto connection = std::make_shared<transport::Connection>(std::move(c));
        held_.push_back(connection);  // bulk connections are held open and never written to
        if (connection->joined().role == transport::Role::Urgent) {
            asio::co_spawn(io_, serve(connection), asio::detached);
        }
    });
    listener_ = *listener;
    endpoint_ = listener_->local_endpoint().to_string();
    listener_->start();
    thread_ = std::thread([this] { io_.run_for(std::chrono::seconds(60)); });
}

FakeSource::~FakeSource() {
    io_.stop();
    thread_.join();
}

asio::awaitable<void> FakeSource::serve(std::shared_ptr<transport::Connection> urgent) {
    // A coroutine of its own, so the frame outlives the write that reads it.
    auto send_on = [](std::shared_ptr<transport::Connection> connection, wire::MessageType type,
                      std::vector<std::byte> payload) -> asio::awaitable<bool> {
        auto frame = transport::encode_frame(wire::frame_type(type), payload);
        co_return (co_await connection->write(frame)).has_value();
    };
    const std::uint64_t page_size = layout_.regions[0].page_size;
    bool hashes = false;
    auto pages_frame = [&](std::uint64_t first, std::uint64_t data_bytes, bool wrong_hash,
                           bool answer) {
        wire::PagesHeader header{
            .region = 0,
            .encoding = wire::Encoding::Raw,
            .flags = static_cast<std::uint8_t>((hashes ? wire::PagesHeader::kHashes : 0) |
                                               (answer ? wire::PagesHeader::kAnswer : 0)),
            .first_page = first,
            .count = 1};
        auto head = wire::encode(header);
        std::vector<std::byte> payload(head.begin(), head.end());
        std::vector<std::byte> data(data_bytes, honest_byte(first));
        if (hashes) {
            std::vector<std::byte> hash(8);
            transport::store_le<std::uint64_t>(hash, 0, page_hash(data) ^ (wrong_hash ? 1 : 0));
            payload.insert(payload.end(), hash.begin(), hash.end());
        }
        payload.insert(payload.end(), data.begin(), data.end());
        return payload;
    };

    // A run of one page whose compressed bytes hold `raw_bytes` of the page's honest content
    // (`garbage`: bytes that are no block at all).
    auto compressed_frame = [&](std::uint64_t first, wire::Encoding encoding,
                                std::uint64_t raw_bytes, bool garbage) {
        wire::PagesHeader header{
            .region = 0, .encoding = encoding, .flags = 0, .first_page = first, .count = 1};
        auto head = wire::encode(header);
        std::vector<std::byte> payload(head.begin(), head.end());
        std::vector<std::byte> packed(100, std::byte{0xff});
        if (!garbage) {
            std::vector<std::byte> data(raw_bytes, honest_byte(first));
            migration::RunCompressor compressor;
            (void)compressor.compress(encoding, 3, data, packed);
        }
        payload.insert(payload.end(), packed.begin(), packed.end());
        return payload;
    };

    if (what_ == Misbehaviour::PagesBeforeStart) {
        // LAYOUT and a page in one write: the destination reads both before it can answer.
        auto layout = transport::encode_frame(wire::frame_type(wire::MessageType::Layout),
                                              wire::encode(layout_));
        auto page = transport::encode_frame(wire::frame_type(wire::MessageType::Pages),
                                            pages_frame(0, page_size, false, false));
        layout.insert(layout.end(), page.begin(), page.end());
        misbehaved_.store(true);
        (void)co_await urgent->write(layout);
    } else {
        (void)co_await send_on(urgent, wire::MessageType::Layout, wire::encode(layout_));
    }
    for (;;) {
        auto frame = co_await urgent->read_frame();
        if (!frame) {
            co_return;
        }
        if (frame->header.type == wire::frame_type(wire::MessageType::Start)) {
            hashes = (wire::decode_start(frame->payload)->flags & wire::Start::kWantHashes) != 0;
            break;
        }
    }
    // A destination connects every connection of its session before it says START.
    std::shared_ptr<transport::Connection> stream = urgent;
    for (const auto& c : held_) {
        if (c->joined().role == transport::Role::Bulk &&
            c->joined().session_id == urgent->joined().session_id) {
            stream = c;
            break;
        }
    }
    for (std::uint64_t p = 0; p < honest_pages_; ++p) {
        (void)co_await send_on(stream, wire::MessageType::Pages,
                               pages_frame(p, page_size, false, false));
    }
    std::function<bool()> ready;
    {
        std::lock_guard lock(ready_mutex_);
        ready = ready_;
    }
    if (ready) {
        asio::steady_timer timer(io_);
        for (int i = 0; i < 10000 && !ready(); ++i) {
            timer.expires_after(std::chrono::milliseconds(1));
            co_await timer.async_wait(asio::use_awaitable);
        }
    }
    // Round 0 ended honestly and acknowledged; then, for a true switchover, page 0 discarded
    // (the destination still lacks pages a thread waits on, so it keeps its ranges
    // registered) and RUNNING awaited.
    auto await_frame = [&](wire::MessageType type) -> asio::awaitable<bool> {
        for (int i = 0; i < 1000; ++i) {
            auto frame = co_await urgent->read_frame();
            if (!frame) {
                co_return false;
            }
            if (frame->header.type == wire::frame_type(type)) {
                co_return true;
            }
        }
        co_return false;
    };
    auto discard = [&](std::uint32_t region, std::uint64_t words) {
        return wire::encode(
            wire::BitmapChunk{.region = region, .first_page = 0, .count = 64, .words = {words}});
    };
    bool acknowledged_round = what_ == Misbehaviour::LiveSwitchoverMiscounted ||
                              what_ == Misbehaviour::LiveDiscardAfterSwitchover ||
                              what_ == Misbehaviour::LiveRoundEndAfterSwitchover;
    if (acknowledged_round) {
        (void)co_await send_on(stream, wire::MessageType::RoundEnd,
                               wire::encode(wire::RoundEnd{0, honest_pages_}));
        if (!co_await await_frame(wire::MessageType::RoundDone)) {
            co_return;
        }
    }
    if (what_ == Misbehaviour::LiveDiscardAfterSwitchover ||
        what_ == Misbehaviour::LiveRoundEndAfterSwitchover) {
        (void)co_await send_on(urgent, wire::MessageType::Discard, discard(0, 1));
        (void)co_await send_on(urgent, wire::MessageType::Switchover,
                               wire::encode(wire::Switchover{1, 1}));
        if (!co_await await_frame(wire::MessageType::Running)) {
            co_return;
        }
    }
    misbehaved_.store(true);
    const std::uint64_t last = layout_.regions[0].pages() - 1;
    switch (what_) {
        case Misbehaviour::Lz4Corrupt:
            (void)co_await send_on(
                stream, wire::MessageType::Pages,
                compressed_frame(honest_pages_, wire::Encoding::Lz4, page_size, true));
            break;
        case Misbehaviour::Lz4ShortRun:
            (void)co_await send_on(
                stream, wire::MessageType::Pages,
                compressed_frame(honest_pages_, wire::Encoding::Lz4, page_size / 2, false));
            break;
        case Misbehaviour::ZstdBomb:
            (void)co_await send_on(
                stream, wire::MessageType::Pages,
                compressed_frame(honest_pages_, wire::Encoding::Zstd, 2 * page_size, false));
            break;
        case Misbehaviour::Lz4Unnegotiated:
            (void)co_await send_on(
                stream, wire::MessageType::Pages,
                compressed_frame(honest_pages_, wire::Encoding::Lz4, page_size, false));
            break;
        case Misbehaviour::PageOutsideRegion:
            (void)co_await send_on(stream, wire::MessageType::Pages,
                                   pages_frame(last + 1, page_size, false, false));
            break;
        case Misbehaviour::ShortPage:
            (void)co_await send_on(stream, wire::MessageType::Pages,
                                   pages_frame(honest_pages_, page_size - 1, false, false));
            break;
        case Misbehaviour::WrongHash:
            (void)co_await send_on(stream, wire::MessageType::Pages,
                                   pages_frame(honest_pages_, page_size, true, false));
            break;
        case Misbehaviour::DiesMidRun: {
            linger hard{.l_onoff = 1, .l_linger = 0};
            ::setsockopt(urgent->socket().native_handle(), SOL_SOCKET, SO_LINGER, &hard,
                         sizeof hard);
            boost::system::error_code ignored;
            for (auto& c : held_) {
                c->socket().close(ignored);
            }
            co_return;
        }
        case Misbehaviour::SecondLayout:
            (void)co_await send_on(urgent, wire::MessageType::Layout, wire::encode(layout_));
            break;
        case Misbehaviour::PagesBeforeStart:
            break;  // sent with the LAYOUT
        case Misbehaviour::UnrequestedAnswer:
            (void)co_await send_on(urgent, wire::MessageType::Pages,
                                   pages_frame(last, page_size, false, true));
            break;
        case Misbehaviour::StreamOnUrgent:
            (void)co_await send_on(urgent, wire::MessageType::Pages,
                                   pages_frame(last, page_size, false, false));
            break;
        case Misbehaviour::AnswerOnBulk:
            (void)co_await send_on(stream, wire::MessageType::Pages,
                                   pages_frame(last, page_size, false, true));
            break;
        case Misbehaviour::FalseStreamEnd:
            (void)co_await send_on(stream, wire::MessageType::StreamEnd,
                                   wire::encode(wire::StreamEnd{honest_pages_ + 1}));
            break;
        case Misbehaviour::PagesAfterStreamEnd:
            (void)co_await send_on(stream, wire::MessageType::StreamEnd,
                                   wire::encode(wire::StreamEnd{honest_pages_}));
            (void)co_await send_on(stream, wire::MessageType::Pages,
                                   pages_frame(last, page_size, false, false));
            break;
        case Misbehaviour::LiveFalseRoundEnd:
            (void)co_await send_on(stream, wire::MessageType::RoundEnd,
                                   wire::encode(wire::RoundEnd{0, honest_pages_ + 1}));
            break;
        case Misbehaviour::LiveSwitchoverBeforeRoundEnd:
            (void)co_await send_on(urgent, wire::MessageType::Switchover,
                                   wire::encode(wire::Switchover{0, 0}));
            break;
        case Misbehaviour::LiveSwitchoverMiscounted:
            (void)co_await send_on(urgent, wire::MessageType::Discard, discard(0, 1));
            (void)co_await send_on(urgent, wire::MessageType::Switchover,
                                   wire::encode(wire::Switchover{1, 2}));
            break;
        case Misbehaviour::LiveDiscardOutOfRange:
            (void)co_await send_on(urgent, wire::MessageType::Discard, discard(5, 1));
            break;
        case Misbehaviour::LiveDiscardAfterSwitchover:
            (void)co_await send_on(urgent, wire::MessageType::Discard, discard(0, 2));
            break;
        case Misbehaviour::LiveRoundEndAfterSwitchover:
            (void)co_await send_on(stream, wire::MessageType::RoundEnd,
                                   wire::encode(wire::RoundEnd{1, 0}));
            break;
        case Misbehaviour::RoundEndFromPausedSource:
            (void)co_await send_on(stream, wire::MessageType::RoundEnd,
                                   wire::encode(wire::RoundEnd{0, honest_pages_}));
            break;
    }
    while (co_await urgent->read_frame()) {
        // Requests are read and never answered, until the destination hangs up.
    }
}

}  // namespace uffdm::test
