// host_corpus.cpp — Reads the host's files into one buffer, round-robin over three kinds.
#include "migration/host_corpus.hpp"

#include <algorithm>
#include <array>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>

namespace uffdm::migration {

namespace {

constexpr std::uint64_t kMaxFile = 4ULL << 20;  // no single file dominates
constexpr std::uint64_t kTail = 2ULL << 20;     // a huge page read at the last index fits

std::vector<std::filesystem::path> files_under(const char* root, bool recursive,
                                               bool (*wanted)(const std::filesystem::path&)) {
    std::vector<std::filesystem::path> out;
    std::error_code error;
    auto take = [&](const std::filesystem::directory_entry& entry) {
        std::error_code e;
        if (entry.is_regular_file(e) && !entry.is_symlink(e) && wanted(entry.path())) {
            out.push_back(entry.path());
        }
    };
    if (recursive) {
        for (std::filesystem::recursive_directory_iterator
                 it(root, std::filesystem::directory_options::skip_permission_denied, error),
             end;
             !error && it != end; it.increment(error)) {
            take(*it);
        }
    } else {
        for (std::filesystem::directory_iterator it(root, error), end; !error && it != end;
             it.increment(error)) {
            take(*it);
        }
    }
    std::sort(out.begin(), out.end());
    return out;
}

bool shared_library(const std::filesystem::path& p) {
    return p.filename().string().find(".so") != std::string::npos;
}
bool any_file(const std::filesystem::path&) {
    return true;
}
bool text(const std::filesystem::path& p) {
    auto ext = p.extension().string();
    return ext == ".h" || ext == ".hpp" || ext.empty() || ext == ".txt";
}

}  // namespace

const HostCorpus& HostCorpus::get() {
    static const HostCorpus corpus;  // immutable once built; C++ makes its first use safe
    return corpus;
}

HostCorpus::HostCorpus() {
    std::array<std::vector<std::filesystem::path>, 3> kinds = {
        files_under("/usr/lib/x86_64-linux-gnu", false, shared_library),
        files_under("/usr/bin", false, any_file), files_under("/usr/include", true, text)};
    auto licences = files_under("/usr/share/common-licenses", false, any_file);
    kinds[2].insert(kinds[2].begin(), licences.begin(), licences.end());
    bytes_.reserve(kBytes + kTail);
    std::array<std::size_t, 3> next{};
    // One buffer for every file: a fresh 4 MiB one per file (thousands of files, most small)
    // made building the corpus take a minute under the sanitizers, zeroing and faulting it in.
    std::vector<char> data(kMaxFile);
    bool any = true;
    while (bytes_.size() < kBytes && any) {
        any = false;
        for (std::size_t k = 0; k < kinds.size() && bytes_.size() < kBytes; ++k) {
            if (next[k] >= kinds[k].size()) {
                continue;
            }
            any = true;
            std::ifstream in(kinds[k][next[k]++], std::ios::binary);
            in.read(data.data(), static_cast<std::streamsize>(data.size()));
            auto got = static_cast<std::uint64_t>(in.gcount());
            if (got == 0) {
                continue;
            }
            got = std::min(got, kBytes - bytes_.size());
            std::size_t at = bytes_.size();
            bytes_.resize(at + (got + kPage - 1) / kPage * kPage);  // zeros after the tail
            std::memcpy(bytes_.data() + at, data.data(), got);
        }
    }
    if (bytes_.empty()) {
        return;
    }
    std::size_t whole = bytes_.size();
    bytes_.resize(whole + kTail);
    for (std::size_t i = 0; i < kTail; ++i) {
        bytes_[whole + i] = bytes_[i % whole];
    }
}

std::span<const std::byte> HostCorpus::page(std::uint64_t index,
                                            std::uint64_t page_size) const noexcept {
    std::uint64_t at = (index % pages()) * kPage;
    return {bytes_.data() + at, std::min(page_size, kTail)};
}

}  // namespace uffdm::migration
