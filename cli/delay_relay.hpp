// delay_relay.hpp — A TCP relay that holds every byte for a fixed time: a longer round trip.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace uffdm::cli {

// Listens on 127.0.0.1 (in the calling thread's network namespace) and joins each connection it
// accepts to `host:port`, forwarding each direction's bytes `one_way` after they arrived: a
// link whose round trip is 2 x one_way longer, the way a WAN or a data centre's spine adds it
// (tc netem would, where the kernel has it; this one has not). Bytes waiting are bounded
// (16 MiB a direction: the reader waits), and a side that ends its writing is half-closed on the
// other. The relay is a middlebox: its own sockets carry no marking.
class DelayRelay {
  public:
    DelayRelay(std::string host, std::uint16_t port, std::chrono::microseconds one_way);
    ~DelayRelay();
    DelayRelay(const DelayRelay&) = delete;
    DelayRelay& operator=(const DelayRelay&) = delete;

    // 0 when it could not listen.
    [[nodiscard]] std::uint16_t port() const { return port_; }

  private:
    struct Pipe;
    void accept_loop();

    std::string host_;
    std::uint16_t target_port_;
    std::chrono::microseconds one_way_;
    int listener_ = -1;
    std::uint16_t port_ = 0;
    std::atomic<bool> stopping_{false};
    std::vector<std::shared_ptr<Pipe>> pipes_;  // the accept thread's, until it is joined
    std::thread acceptor_;
};

// The relay in a child process of its own, so that the caller stays single-threaded (a
// destination that drops its capabilities must be). The child ends when this object goes or
// when the caller exits.
class DelayRelayProcess {
  public:
    DelayRelayProcess(const std::string& host, std::uint16_t port,
                      std::chrono::microseconds one_way);
    ~DelayRelayProcess();
    DelayRelayProcess(const DelayRelayProcess&) = delete;
    DelayRelayProcess& operator=(const DelayRelayProcess&) = delete;

    // 0 when it could not start or listen.
    [[nodiscard]] std::uint16_t port() const { return port_; }

  private:
    int pid_ = -1;
    int lifeline_ = -1;  // its closing (ours, or our exit) ends the child
    std::uint16_t port_ = 0;
};

}  // namespace uffdm::cli
