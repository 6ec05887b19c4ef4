// data_path_support.hpp — Test handlers for the data path: a recorder, a running loop, payloads.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "transport/data_path.hpp"

namespace uffdm::test {

using namespace std::chrono_literals;
using transport::ChannelHandler;
using transport::ChannelId;
using transport::DataPath;
using transport::DataPathOptions;
using transport::Failure;
using transport::FrameType;
using transport::FrameView;
using transport::OutgoingFrame;

inline constexpr auto kApp = static_cast<FrameType>(0x41);

// Records what arrives and serves frames from a queue; every access under one mutex because the
// test thread reads while the loop thread writes.
class Recorder final : public ChannelHandler {
  public:
    struct Received {
        FrameType type;
        std::vector<std::byte> payload;
    };

    void on_frame(ChannelId, const FrameView& frame) override {
        if (frame_delay_.count() > 0) {
            std::this_thread::sleep_for(frame_delay_);
        }
        std::lock_guard lock(mutex_);
        received_.push_back({frame.type, {frame.payload.begin(), frame.payload.end()}});
        if (keep_) {
            kept_.push_back({frame.keep(), frame.payload});
        }
        changed_.notify_all();
    }
    std::optional<OutgoingFrame> next_frame(ChannelId) override {
        std::lock_guard lock(mutex_);
        if (outbox_.empty()) {
            return std::nullopt;
        }
        OutgoingFrame frame = outbox_.front();
        outbox_.pop_front();
        ++taken_;
        max_outstanding_ = std::max(max_outstanding_, taken_ - sent_.size());
        return frame;
    }
    void on_sent(ChannelId, std::uint64_t token) override {
        std::lock_guard lock(mutex_);
        sent_.push_back(token);
        changed_.notify_all();
    }
    void on_closed(ChannelId, const Failure& why) override {
        std::lock_guard lock(mutex_);
        closed_ = why;
        changed_.notify_all();
    }

    // Queues a frame whose payload the data path borrows from a copy of `data` this recorder
    // keeps: a recorder is declared before the data path it serves and outlives it, where a
    // test's own buffer declared after the path would be freed while the loop may still read it.
    void queue(std::span<const std::byte> data, std::uint64_t token,
               std::span<const std::byte> inline_bytes = {}) {
        OutgoingFrame frame{.type = kApp};
        EXPECT_TRUE(frame.set_inline(inline_bytes));
        frame.token = token;
        std::lock_guard lock(mutex_);
        frame.borrowed[0] = payloads_.emplace_back(data.begin(), data.end());
        outbox_.push_back(frame);
    }

    template <typename Pred>
    bool wait(Pred pred, std::chrono::milliseconds limit = 10s) {
        std::unique_lock lock(mutex_);
        return changed_.wait_for(lock, limit, [&] { return pred(*this); });
    }

    // Accessors for use inside wait() predicates (the mutex is held there) and after the
    // channel ended.
    std::vector<Received> received_;
    std::vector<std::uint64_t> sent_;
    std::optional<Failure> closed_;
    std::size_t taken_ = 0;
    std::size_t max_outstanding_ = 0;
    std::chrono::milliseconds frame_delay_{0};
    // Keep every frame (FrameView::keep): its ticket and its payload in the ring.
    bool keep_ = false;
    struct Kept {
        std::uint64_t ticket;
        std::span<const std::byte> payload;
    };
    std::vector<Kept> kept_;

    std::mutex mutex_;

  private:
    std::condition_variable changed_;
    std::deque<OutgoingFrame> outbox_;
    std::deque<std::vector<std::byte>> payloads_;  // what outbox_ frames borrow
};

// A data path on its own thread, stopped and joined on destruction. Declare the handlers before
// it: they must outlive their channels' on_closed.
class Running {
  public:
    explicit Running(DataPathOptions options) {
        auto created = DataPath::create(std::move(options));
        EXPECT_TRUE(created) << created.error().detail;
        path_ = std::move(*created);
        thread_ = std::thread([this] { path_->run(); });
    }
    ~Running() {
        path_->stop();
        thread_.join();
    }
    DataPath* operator->() { return path_.get(); }

  private:
    std::unique_ptr<DataPath> path_;
    std::thread thread_;
};

inline std::vector<std::byte> pattern(std::size_t size, unsigned seed) {
    std::vector<std::byte> out(size);
    std::uint32_t x = seed * 2654435761U + 1;
    for (auto& b : out) {
        x = x * 1103515245U + 12345U;
        b = static_cast<std::byte>(x >> 24);
    }
    return out;
}

}  // namespace uffdm::test
