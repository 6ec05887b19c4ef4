// process.hpp — A program run as a child process: its output in a file, bounded waits, signals.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <string>
#include <vector>

namespace uffdm::test {

class Process {
  public:
    // Starts argv[0] (a path) with stdout and stderr in a temporary file. setup runs in the child
    // before exec (drop privileges, limits); returning false exits the child with 120.
    explicit Process(
        std::vector<std::string> argv, std::function<bool()> setup = [] { return true; });
    ~Process();  // kills a child still running
    Process(const Process&) = delete;
    Process& operator=(const Process&) = delete;

    // The first output line, without its newline ("" if none within the limit).
    std::string first_line(std::chrono::milliseconds limit = std::chrono::seconds(60));
    // The exit code (128+N for signal N), or -1 when it did not end within the limit (then it
    // is killed).
    int wait(std::chrono::milliseconds limit = std::chrono::seconds(120));
    void signal(int number);
    [[nodiscard]] std::string output() const;
    [[nodiscard]] pid_t pid() const { return pid_; }

  private:
    pid_t pid_ = -1;
    std::string output_path_;
    int status_ = -1;
};

// The uffd-migrate binary under test ($UFFDM_CLI).
std::string cli_path();

}  // namespace uffdm::test
