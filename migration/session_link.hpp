// session_link.hpp — The session lifecycle both sides share: channels, recoverable breaks, pauses.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "migration/report.hpp"
#include "transport/data_path.hpp"

namespace uffdm::migration {

using Clock = std::chrono::steady_clock;

// The channels of one session, on the two data paths each side runs: the urgent connection
// and its bulk connections. The owner's lock guards it (data paths are thread-safe; the ids
// here are not).
class ChannelSet {
  public:
    ChannelSet(transport::DataPath& urgent_path, transport::DataPath& bulk_path)
        : urgent_path_(&urgent_path), bulk_path_(&bulk_path) {}

    void set_urgent(transport::ChannelId id) { urgent_ = id; }
    void add_bulk(transport::ChannelId id) { bulk_.push_back(id); }
    [[nodiscard]] bool has_urgent() const noexcept { return urgent_.has_value(); }
    [[nodiscard]] std::size_t bulk_count() const noexcept { return bulk_.size(); }

    // Asks the urgent connection's loop for its next frames (a request queued, DONE, STREAM).
    void want_send_urgent() const;
    // Asks every bulk connection's loop for its next frames (a stream started or resumed).
    void want_send_bulk() const;
    void want_send_all() const {
        want_send_urgent();
        want_send_bulk();
    }
    // Ends every channel with an ERROR saying why; the ids stay until forget().
    void abort(const transport::Failure& why) const;
    // Ends every channel in order (GOODBYE after what is queued); the ids stay until forget().
    void close() const;
    void close_bulk() const;
    void forget() {
        urgent_.reset();
        bulk_.clear();
    }

  private:
    transport::DataPath* urgent_path_;
    transport::DataPath* bulk_path_;
    std::optional<transport::ChannelId> urgent_;
    std::vector<transport::ChannelId> bulk_;
};

// Which side the peer of a session is.
enum class Peer : std::uint8_t { Source, Destination };

// Whether a migration outlives a session that ended with `why`, waiting up to its reconnect
// timeout for a new session to resume it. A broken link (reset, silence, a peer that gave up
// on a broken session) is recoverable. A protocol violation, a layout refused, our own stop,
// or no reconnect timeout never is. A peer that ended the session on purpose (its ERROR, or an
// orderly close before DONE) is recoverable only when it is the source: a stopped source can
// be started again on its image and resume; a destination that stops has nothing to come back
// for. The one rule for both sides (protocol.md, "Recovery").
[[nodiscard]] bool recoverable_break(const transport::Failure& why, Peer peer,
                                     std::chrono::milliseconds reconnect_timeout);

// A migration's pauses: each runs from a break until a new session serves (on the destination,
// its first page placed; on the source, its RESUME), and the reconnect deadline runs from its
// start. The owner's lock guards it.
class PauseLog {
  public:
    explicit PauseLog(std::chrono::milliseconds reconnect_timeout)
        : reconnect_timeout_(reconnect_timeout) {}

    // `since` is when the migration started (the pause's at_seconds counts from it).
    void begin(Clock::time_point now, Clock::time_point since, std::string reason);
    // The pause is over: a new session serves.
    void end(Clock::time_point now);
    [[nodiscard]] bool active() const noexcept { return active_; }
    [[nodiscard]] std::size_t count() const noexcept { return pauses_.size(); }
    [[nodiscard]] const Pause& last() const { return pauses_.back(); }
    [[nodiscard]] Clock::time_point began() const noexcept { return began_; }
    // When the migration fails if no new session has served by then.
    [[nodiscard]] Clock::time_point deadline() const noexcept {
        return began_ + reconnect_timeout_;
    }
    [[nodiscard]] bool overdue(Clock::time_point now) const noexcept {
        return active_ && now >= deadline();
    }
    // Every pause, the one still running counted until `end`.
    [[nodiscard]] std::vector<Pause> report(Clock::time_point end) const;
    // "within 30000 ms", for the messages that say a deadline passed.
    [[nodiscard]] std::string within() const;

  private:
    std::chrono::milliseconds reconnect_timeout_;
    std::vector<Pause> pauses_;
    Clock::time_point began_;
    bool active_ = false;
};

}  // namespace uffdm::migration
