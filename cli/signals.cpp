// signals.cpp — sigtimedwait on a watcher thread.
#include "cli/signals.hpp"

#include <csignal>
#include <ctime>

namespace uffdm::cli {

namespace {

sigset_t stop_signals() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    return set;
}

}  // namespace

void block_stop_signals() {
    sigset_t set = stop_signals();
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

StopOnSignal::StopOnSignal(std::function<void(int)> on_signal)
    : watcher_([this, on_signal = std::move(on_signal)] {
          sigset_t set = stop_signals();
          timespec tick{0, 200'000'000};
          while (!done_.load()) {
              int number = sigtimedwait(&set, nullptr, &tick);
              if (number > 0 && received_.exchange(number) == 0) {
                  on_signal(number);
              }
          }
      }) {}

StopOnSignal::~StopOnSignal() {
    done_.store(true);
    watcher_.join();
}

}  // namespace uffdm::cli
