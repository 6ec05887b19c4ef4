// test_support.hpp — Helpers shared by the suites: forked children and a fault-serving thread.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdio>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "uffd/event_fd.hpp"
#include "uffd/fault_reader.hpp"
#include "uffd/userfault_fd.hpp"

namespace uffdm::test {

struct ChildResult {
    int status = 0;      // as from waitpid
    std::string output;  // what the child wrote to its report stream

    [[nodiscard]] bool exited_with(int code) const;
    [[nodiscard]] bool killed_by(int signal) const;
    [[nodiscard]] std::string describe() const;
};

// Runs body in a forked child. The child writes to `report` and returns its exit code; it
// never returns into googletest. Bounded: a child alive after timeout_s is killed.
ChildResult run_in_child(const std::function<int(std::FILE* report)>& body, int timeout_s = 30);

// Becomes uid/gid 65534 (nobody). keep lists capabilities to keep in the permitted and
// effective sets, and as ambient ones across an execve; every other capability is gone.
// Returns false (with errno) on failure.
bool become_nobody(const std::vector<int>& keep_capabilities);

inline constexpr uid_t kNobody = 65534;

// The features tests open with: everything that changes no semantics of munmap/madvise/fork
// (the EVENT_* features make those calls wait for the reader, so tests ask for them
// explicitly).
uffd::FeatureSet cooperative_features();
uffd::OpenOptions test_open_options();

// A reader thread that resolves each page fault with `resolve` and records it.
class FaultServerThread {
  public:
    using Resolver = std::function<void(const uffd::UserfaultFd&, const uffd::PageFault&)>;

    FaultServerThread(const uffd::UserfaultFd& uffd, Resolver resolve);
    ~FaultServerThread();
    FaultServerThread(const FaultServerThread&) = delete;
    FaultServerThread& operator=(const FaultServerThread&) = delete;

    [[nodiscard]] std::vector<uffd::PageFault> faults() const;
    [[nodiscard]] std::string error() const;

  private:
    void run();

    const uffd::UserfaultFd& uffd_;
    Resolver resolve_;
    uffd::EventFd stop_;
    mutable std::mutex mutex_;
    std::vector<uffd::PageFault> faults_;
    std::string error_;
    std::thread thread_;
};

// Resolver that copies one page filled with `byte` (page size from the argument).
FaultServerThread::Resolver fill_page_with(unsigned char byte, std::size_t page_size);

// A page-sized buffer filled with byte.
std::vector<unsigned char> page_of(unsigned char byte, std::size_t page_size);

// True once every thread in tids is blocked in handle_userfault (reads
// /proc/self/task/TID/wchan), or after the deadline; returns whether they all were seen.
bool wait_until_blocked_in_fault(const std::vector<pid_t>& tids, int timeout_ms = 5000);
// The same for any kernel wait function name.
bool wait_until_blocked_in(const std::vector<pid_t>& tids, std::string_view wchan,
                           int timeout_ms = 5000);

// read(2)s data from a pipe into dst: the copy_to_user faults in kernel mode. Returns what
// read returned (errno kept).
ssize_t kernel_read_into(std::byte* dst, const std::vector<unsigned char>& data);

// Registers a fresh anonymous page on fd, serves it from a thread, and makes the kernel fault
// on it with read(2). Returns "" when the fault was served, or what went wrong.
std::string kernel_fault_served(const uffd::UserfaultFd& fd);

}  // namespace uffdm::test
