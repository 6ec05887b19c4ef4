// test_support.cpp — Forking children, switching users, and serving faults in tests.
#include "tests/support/test_support.hpp"

#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/capability.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fcntl.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <memory>

#include "uffd/mapping.hpp"

namespace uffdm::test {

bool ChildResult::exited_with(int code) const {
    return WIFEXITED(status) && WEXITSTATUS(status) == code;
}

bool ChildResult::killed_by(int signal) const {
    return WIFSIGNALED(status) && WTERMSIG(status) == signal;
}

std::string ChildResult::describe() const {
    std::string how = WIFEXITED(status)     ? "exit " + std::to_string(WEXITSTATUS(status))
                      : WIFSIGNALED(status) ? "signal " + std::to_string(WTERMSIG(status))
                                            : "status " + std::to_string(status);
    return how + "; child said: " + output;
}

ChildResult run_in_child(const std::function<int(std::FILE* report)>& body, int timeout_s) {
    int pipefd[2];
    if (::pipe2(pipefd, O_CLOEXEC) < 0) {
        return {-1, std::string("pipe: ") + std::strerror(errno)};
    }
    std::fflush(nullptr);
    pid_t pid = ::fork();
    if (pid < 0) {
        return {-1, std::string("fork: ") + std::strerror(errno)};
    }
    if (pid == 0) {
        ::close(pipefd[0]);
        std::FILE* report = ::fdopen(pipefd[1], "w");
        int code = 98;
        try {
            code = body(report);
        } catch (...) {
            std::fputs("exception in child", report);
            code = 99;
        }
        std::fflush(report);
        ::_exit(code);
    }
    ::close(pipefd[1]);
    ChildResult result;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
    char buffer[4096];
    for (;;) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                        deadline - std::chrono::steady_clock::now())
                        .count();
        if (left <= 0) {
            ::kill(pid, SIGKILL);
            result.output += " [killed: timed out]";
            break;
        }
        pollfd pfd{.fd = pipefd[0], .events = POLLIN, .revents = 0};
        if (::poll(&pfd, 1, static_cast<int>(left)) <= 0) {
            continue;
        }
        ssize_t n = ::read(pipefd[0], buffer, sizeof buffer);
        if (n <= 0) {
            break;
        }
        result.output.append(buffer, static_cast<std::size_t>(n));
    }
    ::close(pipefd[0]);
    ::waitpid(pid, &result.status, 0);
    return result;
}

bool become_nobody(const std::vector<int>& keep_capabilities) {
    if (!keep_capabilities.empty() && ::prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0) {
        return false;
    }
    if (::setgroups(0, nullptr) < 0 || ::setresgid(kNobody, kNobody, kNobody) < 0 ||
        ::setresuid(kNobody, kNobody, kNobody) < 0) {
        return false;
    }
    cap_t caps = ::cap_init();
    std::vector<cap_value_t> values(keep_capabilities.begin(), keep_capabilities.end());
    if (!values.empty()) {
        ::cap_set_flag(caps, CAP_PERMITTED, static_cast<int>(values.size()), values.data(),
                       CAP_SET);
        ::cap_set_flag(caps, CAP_EFFECTIVE, static_cast<int>(values.size()), values.data(),
                       CAP_SET);
        // Inheritable too, so that they can be raised as ambient and survive an execve.
        ::cap_set_flag(caps, CAP_INHERITABLE, static_cast<int>(values.size()), values.data(),
                       CAP_SET);
    }
    int rc = ::cap_set_proc(caps);
    ::cap_free(caps);
    for (cap_value_t value : values) {
        if (rc == 0 && ::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, value, 0, 0) < 0) {
            rc = -1;
        }
    }
    return rc == 0;
}

uffd::FeatureSet cooperative_features() {
    using uffd::Feature;
    return uffd::FeatureSet{Feature::PagefaultFlagWp,  Feature::MissingHugetlbfs,
                            Feature::MissingShmem,     Feature::ThreadId,
                            Feature::MinorHugetlbfs,   Feature::MinorShmem,
                            Feature::WpHugetlbfsShmem, Feature::WpUnpopulated,
                            Feature::Poison,           Feature::Move};
}

uffd::OpenOptions test_open_options() {
    uffd::OpenOptions options;
    options.optional = cooperative_features();
    return options;
}

FaultServerThread::FaultServerThread(const uffd::UserfaultFd& uffd, Resolver resolve)
    : uffd_(uffd), resolve_(std::move(resolve)), stop_(*uffd::EventFd::create()) {
    thread_ = std::thread([this] { run(); });
}

FaultServerThread::~FaultServerThread() {
    (void)stop_.signal();
    thread_.join();
}

void FaultServerThread::run() {
    uffd::FaultReader reader(uffd_, stop_);
    for (;;) {
        auto batch = reader.next();
        if (!batch) {
            std::lock_guard lock(mutex_);
            error_ = batch.error().message();
            return;
        }
        if (batch->stopped) {
            return;
        }
        for (auto& event : batch->events) {
            if (auto* fault = std::get_if<uffd::PageFault>(&event)) {
                {
                    std::lock_guard lock(mutex_);
                    faults_.push_back(*fault);
                }
                resolve_(uffd_, *fault);
            }
        }
    }
}

std::vector<uffd::PageFault> FaultServerThread::faults() const {
    std::lock_guard lock(mutex_);
    return faults_;
}

std::string FaultServerThread::error() const {
    std::lock_guard lock(mutex_);
    return error_;
}

std::vector<unsigned char> page_of(unsigned char byte, std::size_t page_size) {
    return std::vector<unsigned char>(page_size, byte);
}

FaultServerThread::Resolver fill_page_with(unsigned char byte, std::size_t page_size) {
    auto content = std::make_shared<std::vector<unsigned char>>(page_of(byte, page_size));
    return [content, page_size](const uffd::UserfaultFd& fd, const uffd::PageFault& fault) {
        auto placed = fd.copy(fault.page(page_size), content->data(), page_size);
        if (!placed && placed.error() == Errc::AlreadyPresent) {
            (void)fd.wake(fault.page(page_size), page_size);
        }
    };
}

bool wait_until_blocked_in_fault(const std::vector<pid_t>& tids, int timeout_ms) {
    return wait_until_blocked_in(tids, "handle_userfault", timeout_ms);
}

bool wait_until_blocked_in(const std::vector<pid_t>& tids, std::string_view wanted,
                           int timeout_ms) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (std::chrono::steady_clock::now() < deadline) {
        std::size_t blocked = 0;
        for (pid_t tid : tids) {
            std::ifstream in("/proc/self/task/" + std::to_string(tid) + "/wchan");
            std::string wchan;
            in >> wchan;
            blocked += wchan == wanted ? 1 : 0;
        }
        if (blocked == tids.size()) {
            return true;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return false;
}

ssize_t kernel_read_into(std::byte* dst, const std::vector<unsigned char>& data) {
    int pipefd[2];
    if (::pipe(pipefd) < 0) {
        return -1;
    }
    (void)!::write(pipefd[1], data.data(), data.size());
    ssize_t got = ::read(pipefd[0], dst, data.size());
    int err = errno;
    ::close(pipefd[0]);
    ::close(pipefd[1]);
    errno = err;
    return got;
}

std::string kernel_fault_served(const uffd::UserfaultFd& fd) {
    std::size_t page = uffd::base_page_size();
    auto mapping = uffd::Mapping::anonymous(page);
    if (!mapping) {
        return "mmap: " + mapping.error().message();
    }
    auto reg = fd.register_mapping(*mapping, uffd::RegisterModes::missing_only());
    if (!reg) {
        return "register: " + reg.error().message();
    }
    FaultServerThread server(fd, fill_page_with(0xee, page));
    std::vector<unsigned char> data(64, 0x12);
    ssize_t got = kernel_read_into(mapping->data(), data);
    if (got != 64) {
        return std::string("read(2) into guest memory failed: ") + std::strerror(errno);
    }
    if (static_cast<unsigned char>(mapping->data()[0]) != 0x12 ||
        static_cast<unsigned char>(mapping->data()[64]) != 0xee) {
        return "wrong content after the kernel fault";
    }
    if (server.faults().size() != 1) {
        return "expected one fault, saw " + std::to_string(server.faults().size());
    }
    return "";
}

}  // namespace uffdm::test
