// netns.hpp — Two "hosts" for tests: a pair of network namespaces joined by a veth link.
#pragma once

#include <string>

namespace uffdm::cli {

// Creates namespaces PREFIX-a-PID and PREFIX-b-PID, a veth pair between them, 10.77.0.1/24 in A
// and 10.77.0.2/24 in B (addresses that exist only inside these namespaces), and removes all
// of it on destruction. available() is false (with why()) where namespaces cannot be made.
class NetnsPair {
  public:
    explicit NetnsPair(const std::string& prefix = "uffdm");
    ~NetnsPair();
    NetnsPair(const NetnsPair&) = delete;
    NetnsPair& operator=(const NetnsPair&) = delete;

    [[nodiscard]] bool available() const { return available_; }
    [[nodiscard]] const std::string& why() const { return why_; }
    [[nodiscard]] const std::string& a() const { return a_; }
    [[nodiscard]] const std::string& b() const { return b_; }
    static constexpr const char* kAddressA = "10.77.0.1";
    static constexpr const char* kAddressB = "10.77.0.2";

    // Switches the calling thread into a namespace; sockets created afterwards live there.
    bool enter(const std::string& name);
    // Back to the namespace the thread started in.
    bool leave();
    // A rate-limited link: on each end's egress a token bucket (tc tbf) at `rate` (as tc
    // writes it: "1gbit", "10gbit") with pfifo_fast's three priority bands under it, so that a
    // packet's socket priority decides which waits, as on a real NIC's queue. "" when done,
    // else why not.
    [[nodiscard]] std::string shape(const std::string& rate);
    // Runs `ip` with arguments; true on success.
    static bool ip(const std::string& arguments);
    // For a process about to drop its capabilities (and with them the right to delete
    // namespaces): a child keeps them and deletes the namespaces when this process exits.
    bool hand_cleanup_to_child();

  private:
    std::string va_;
    std::string vb_;
    std::string a_;
    std::string b_;
    bool available_ = false;
    std::string why_;
    int original_ = -1;
    bool cleanup_handed_over_ = false;
};

}  // namespace uffdm::cli
