// process.cpp — fork/exec with output to a file, polling waitpid with a deadline.
#include "tests/support/process.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

namespace uffdm::test {

std::string cli_path() {
    const char* path = std::getenv("UFFDM_CLI");
    return path != nullptr ? path : "uffd-migrate";
}

Process::Process(std::vector<std::string> argv, std::function<bool()> setup) {
    char pattern[] = "/tmp/uffdm-process-XXXXXX";
    int fd = ::mkstemp(pattern);
    output_path_ = pattern;
    pid_ = ::fork();
    if (pid_ == 0) {
        ::dup2(fd, STDOUT_FILENO);
        ::dup2(fd, STDERR_FILENO);
        int null = ::open("/dev/null", O_RDONLY);
        ::dup2(null, STDIN_FILENO);
        sigset_t none;
        sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
        if (!setup()) {
            ::_exit(120);
        }
        std::vector<char*> args;
        for (auto& a : argv) {
            args.push_back(a.data());
        }
        args.push_back(nullptr);
        ::execv(args[0], args.data());
        std::fprintf(stderr, "exec %s failed\n", args[0]);
        ::_exit(121);
    }
    ::close(fd);
}

Process::~Process() {
    if (pid_ > 0 && status_ == -1) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
    }
    ::unlink(output_path_.c_str());
}

std::string Process::first_line(std::chrono::milliseconds limit) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
        std::string text = output();
        if (auto end = text.find('\n'); end != std::string::npos) {
            return text.substr(0, end);
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return "";
}

int Process::wait(std::chrono::milliseconds limit) {
    if (status_ != -1) {
        return status_;
    }
    auto deadline = std::chrono::steady_clock::now() + limit;
    for (;;) {
        int status = 0;
        if (::waitpid(pid_, &status, WNOHANG) == pid_) {
            status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
            return status_;
        }
        if (std::chrono::steady_clock::now() > deadline) {
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, nullptr, 0);
            status_ = -2;
            return -1;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
}

void Process::signal(int number) {
    if (pid_ > 0 && status_ == -1) {
        ::kill(pid_, number);
    }
}

std::string Process::output() const {
    std::ifstream in(output_path_);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
}

}  // namespace uffdm::test
