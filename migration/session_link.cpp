// session_link.cpp — A session's channel set, the recoverable-break rule and the pause log.
#include "migration/session_link.hpp"

namespace uffdm::migration {

void ChannelSet::want_send_urgent() const {
    if (urgent_) {
        urgent_path_->want_send(*urgent_);
    }
}

void ChannelSet::want_send_bulk() const {
    for (transport::ChannelId id : bulk_) {
        bulk_path_->want_send(id);
    }
}

void ChannelSet::abort(const transport::Failure& why) const {
    if (urgent_) {
        urgent_path_->abort(*urgent_, why);
    }
    for (transport::ChannelId id : bulk_) {
        bulk_path_->abort(id, why);
    }
}

void ChannelSet::close() const {
    if (urgent_) {
        urgent_path_->close(*urgent_);
    }
    close_bulk();
}

void ChannelSet::close_bulk() const {
    for (transport::ChannelId id : bulk_) {
        bulk_path_->close(id);
    }
}

bool recoverable_break(const transport::Failure& why, Peer peer,
                       std::chrono::milliseconds reconnect_timeout) {
    if (reconnect_timeout.count() <= 0 || why.code == Errc::ProtocolViolation ||
        why.code == Errc::InvalidArgument || why.code == Errc::Closed ||
        why.code == Errc::Unsupported) {
        return false;
    }
    if (!why.code || why.code == Errc::PeerAborted) {
        return peer == Peer::Source;
    }
    return true;
}

void PauseLog::begin(Clock::time_point now, Clock::time_point since, std::string reason) {
    active_ = true;
    began_ = now;
    pauses_.push_back(
        {std::chrono::duration<double>(now - since).count(), 0, std::move(reason), false});
}

void PauseLog::end(Clock::time_point now) {
    if (!active_) {
        return;
    }
    active_ = false;
    pauses_.back().seconds = std::chrono::duration<double>(now - began_).count();
    pauses_.back().resumed = true;
}

std::vector<Pause> PauseLog::report(Clock::time_point end) const {
    std::vector<Pause> all = pauses_;
    if (active_ && !all.empty()) {
        all.back().seconds = std::chrono::duration<double>(end - began_).count();
    }
    return all;
}

std::string PauseLog::within() const {
    return "within " + std::to_string(reconnect_timeout_.count()) + " ms";
}

}  // namespace uffdm::migration
