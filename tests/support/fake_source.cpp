// fake_source.cpp — The scripted source on an Asio thread.
#include "tests/support/fake_source.hpp"

#include <sys/socket.h>

#include "migration/page_hash.hpp"
#include "transport/byte_order.hpp"

namespace uffdm::test {

using namespace migration;
namespace asio = transport::asio;

FakeSource::FakeSource(wire::Layout layout, std::uint64_t honest_pages, Misbehaviour what)
    : layout_(std::move(layout)), honest_pages_(honest_pages), what_(what) {
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
    auto send = [&](wire::MessageType type,
                    std::vector<std::byte> payload) -> asio::awaitable<bool> {
        auto frame = transport::encode_frame(wire::frame_type(type), payload);
        co_return (co_await urgent->write(frame)).has_value();
    };
    (void)co_await send(wire::MessageType::Layout, wire::encode(layout_));

    bool hashes = false;
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
    const std::uint64_t page_size = layout_.regions[0].page_size;
    auto pages_frame = [&](std::uint64_t first, std::uint64_t data_bytes, bool wrong_hash) {
        wire::PagesHeader header{.region = 0,
                                 .encoding = wire::Encoding::Raw,
                                 .flags = hashes ? wire::PagesHeader::kHashes : std::uint8_t{0},
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
    for (std::uint64_t p = 0; p < honest_pages_; ++p) {
        (void)co_await send(wire::MessageType::Pages, pages_frame(p, page_size, false));
    }
    misbehaved_.store(true);
    switch (what_) {
        case Misbehaviour::PageOutsideRegion:
            (void)co_await send(wire::MessageType::Pages,
                                pages_frame(layout_.regions[0].pages(), page_size, false));
            break;
        case Misbehaviour::ShortPage:
            (void)co_await send(wire::MessageType::Pages,
                                pages_frame(honest_pages_, page_size - 1, false));
            break;
        case Misbehaviour::WrongHash:
            (void)co_await send(wire::MessageType::Pages,
                                pages_frame(honest_pages_, page_size, true));
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
    }
    while (co_await urgent->read_frame()) {
        // Requests are read and never answered, until the destination hangs up.
    }
}

}  // namespace uffdm::test
