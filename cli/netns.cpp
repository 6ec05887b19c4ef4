// netns.cpp — ip(8) to build the veth pair, setns(2) to move a thread between namespaces.
#include "cli/netns.hpp"

#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <cstdlib>
#include <utility>

namespace uffdm::cli {

bool NetnsPair::ip(const std::string& arguments) {
    std::string command = "ip " + arguments + " >/dev/null 2>&1";
    return std::system(command.c_str()) == 0;
}

NetnsPair::NetnsPair(const std::string& prefix) {
    std::string id = std::to_string(::getpid());
    a_ = prefix + "-a-" + id;
    b_ = prefix + "-b-" + id;
    va_ = "ufa" + id;  // interface names: at most 15 characters
    vb_ = "ufb" + id;
    const std::string& va = va_;
    const std::string& vb = vb_;
    original_ = ::open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    if (::geteuid() != 0 || original_ < 0) {
        why_ = "network namespaces need root";
        return;
    }
    if (!ip("netns add " + a_) || !ip("netns add " + b_)) {
        why_ = "ip netns add failed (no iproute2, or namespaces not permitted)";
        return;
    }
    available_ = ip("link add " + va + " type veth peer name " + vb) &&
                 ip("link set " + va + " netns " + a_) && ip("link set " + vb + " netns " + b_) &&
                 ip("-n " + a_ + " addr add " + kAddressA + "/24 dev " + va) &&
                 ip("-n " + b_ + " addr add " + kAddressB + "/24 dev " + vb) &&
                 ip("-n " + a_ + " link set " + va + " up") &&
                 ip("-n " + b_ + " link set " + vb + " up") && ip("-n " + a_ + " link set lo up") &&
                 ip("-n " + b_ + " link set lo up");
    if (!available_) {
        why_ = "could not set up the veth pair";
    }
}

std::string NetnsPair::shape(const std::string& rate) {
    // A burst of 1 ms at the rate (at least 64 KiB), and a queue of 20 ms behind it.
    for (const auto& [ns, dev] : {std::pair{a_, va_}, std::pair{b_, vb_}}) {
        std::string tc = "tc -n " + ns + " qdisc add dev " + dev;
        std::string root = tc + " root handle 1: tbf rate " + rate + " burst 256kb latency 20ms";
        std::string bands = tc + " parent 1:1 pfifo_fast";
        if (std::system((root + " >/dev/null 2>&1").c_str()) != 0 ||
            std::system((bands + " >/dev/null 2>&1").c_str()) != 0) {
            return "cannot shape the link (" + root + "; then pfifo_fast under it)";
        }
    }
    return "";
}

NetnsPair::~NetnsPair() {
    leave();
    if (original_ >= 0) {
        ::close(original_);
    }
    if (!cleanup_handed_over_) {
        // Deleting a namespace deletes the veth end inside it, and with it the pair.
        ip("netns del " + a_);
        ip("netns del " + b_);
    }
}

bool NetnsPair::hand_cleanup_to_child() {
    int lifeline[2];
    if (::pipe2(lifeline, O_CLOEXEC) < 0) {
        return false;
    }
    pid_t child = ::fork();
    if (child < 0) {
        return false;
    }
    if (child == 0) {
        ::close(lifeline[1]);
        char byte = 0;  // EOF: the parent has exited (its end closes with it)
        while (::read(lifeline[0], &byte, 1) > 0) {
        }
        ip("netns del " + a_);
        ip("netns del " + b_);
        ::_exit(0);
    }
    ::close(lifeline[0]);  // the write end stays open, unused, until this process exits
    cleanup_handed_over_ = true;
    return true;
}

bool NetnsPair::enter(const std::string& name) {
    int fd = ::open(("/run/netns/" + name).c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return false;
    }
    bool ok = ::setns(fd, CLONE_NEWNET) == 0;
    ::close(fd);
    return ok;
}

bool NetnsPair::leave() {
    return original_ >= 0 && ::setns(original_, CLONE_NEWNET) == 0;
}

}  // namespace uffdm::cli
