// progress.cpp — Drawing the bar with \r, rate from the start, ETA from the remaining fraction.
#include "cli/progress.hpp"

#include <unistd.h>

#include "cli/sizes.hpp"

namespace uffdm::cli {

ProgressBar::ProgressBar(std::string label, std::FILE* out)
    : label_(std::move(label)), out_(out), enabled_(::isatty(::fileno(out)) == 1) {}

ProgressBar::~ProgressBar() {
    finish();
}

void ProgressBar::update(std::uint64_t done, std::uint64_t total, std::uint64_t bytes,
                         const std::string& tail) {
    if (!enabled_) {
        return;
    }
    auto now = std::chrono::steady_clock::now();
    if (drawn_ && now - last_ < std::chrono::milliseconds(100) && done != total) {
        return;
    }
    last_ = now;
    drawn_ = true;
    double fraction = total == 0 ? 0.0 : static_cast<double>(done) / static_cast<double>(total);
    double seconds = std::chrono::duration<double>(now - start_).count();
    constexpr int kWidth = 30;
    int filled = static_cast<int>(fraction * kWidth);
    std::string bar(static_cast<std::size_t>(filled), '#');
    bar.append(static_cast<std::size_t>(kWidth - filled), '.');
    double rate = seconds > 0 ? static_cast<double>(bytes) / seconds : 0;
    std::string eta =
        fraction > 0.01 && fraction < 1
            ? std::to_string(static_cast<int>(seconds * (1 - fraction) / fraction)) + "s"
            : "-";
    std::fprintf(out_, "\r%s [%s] %3.0f%%  %s/s  ETA %s  %s\033[K", label_.c_str(), bar.c_str(),
                 fraction * 100, format_bytes(rate).c_str(), eta.c_str(), tail.c_str());
    std::fflush(out_);
}

void ProgressBar::finish() {
    if (enabled_ && drawn_) {
        std::fprintf(out_, "\r\033[K");
        std::fflush(out_);
        drawn_ = false;
    }
}

}  // namespace uffdm::cli
