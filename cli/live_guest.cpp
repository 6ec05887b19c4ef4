// live_guest.cpp — Writers that stamp hot pages at a rate, and the check of a stamped page.
#include "cli/live_guest.hpp"

#include <chrono>
#include <cstring>
#include <fstream>

namespace uffdm::cli {

namespace {

constexpr std::uint64_t kLiveStampMagic = 0x5053544d44464655ULL;  // "UFFDMTSP"

std::uint64_t stamp_mix(std::uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    return x ^ (x >> 33);
}

void stamp_page(std::byte* page, std::uint32_t region, std::uint64_t index, std::uint32_t version) {
    std::uint64_t words[2] = {kLiveStampMagic ^ (std::uint64_t{region} << 48) ^ index, version};
    std::memcpy(page, words, sizeof words);
}

}  // namespace

bool live_page_matches(const SyntheticGuest& guest, const PageVersions& versions,
                       std::uint32_t region, std::uint64_t page, const void* data) noexcept {
    std::uint32_t version =
        region < versions.size() && page < versions[region].size() ? versions[region][page] : 0;
    if (version == 0) {
        return synthetic_page_matches(guest, region, page, data);
    }
    thread_local std::vector<std::byte> expected;
    expected.resize(guest.page_size);
    synthetic_page_fill(guest, region, page, expected.data());
    stamp_page(expected.data(), region, page, version);
    return std::memcmp(expected.data(), data, guest.page_size) == 0;
}

std::expected<void, std::string> write_versions(const std::string& path,
                                                const PageVersions& versions) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    std::uint64_t regions = versions.size();
    out.write(reinterpret_cast<const char*>(&regions), sizeof regions);
    for (const auto& region : versions) {
        std::uint64_t pages = region.size();
        out.write(reinterpret_cast<const char*>(&pages), sizeof pages);
        out.write(reinterpret_cast<const char*>(region.data()),
                  static_cast<std::streamsize>(pages * sizeof(std::uint32_t)));
    }
    if (!out.flush()) {
        return std::unexpected("cannot write " + path);
    }
    return {};
}

std::expected<PageVersions, std::string> read_versions(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::uint64_t regions = 0;
    if (!in.read(reinterpret_cast<char*>(&regions), sizeof regions) || regions > 64) {
        return std::unexpected("cannot read the page versions in " + path);
    }
    PageVersions versions(regions);
    for (auto& region : versions) {
        std::uint64_t pages = 0;
        if (!in.read(reinterpret_cast<char*>(&pages), sizeof pages) || pages > (1ULL << 32)) {
            return std::unexpected("cannot read the page versions in " + path);
        }
        region.resize(pages);
        if (!in.read(reinterpret_cast<char*>(region.data()),
                     static_cast<std::streamsize>(pages * sizeof(std::uint32_t)))) {
            return std::unexpected("the page versions in " + path + " are cut short");
        }
    }
    return versions;
}

SourceWriters::SourceWriters(std::vector<std::span<std::byte>> regions, const SyntheticGuest& guest,
                             WriterSpec spec)
    : regions_(std::move(regions)), guest_(guest), spec_(spec) {
    for (std::uint32_t r = 0; r < regions_.size(); ++r) {
        std::uint64_t pages = regions_[r].size() / guest.page_size;
        versions_.emplace_back(pages, 0);
        for (std::uint64_t p = 0; p < pages; ++p) {
            if (stamp_mix(guest.seed ^ (std::uint64_t{r} << 40) ^ (p * 0x9e3779b97f4a7c15ULL)) %
                    100 <
                spec.hot_percent) {
                hot_.emplace_back(r, p);
            }
        }
    }
}

void SourceWriters::start() {
    if (hot_.empty() || spec_.writers == 0) {
        return;
    }
    for (unsigned i = 0; i < spec_.writers; ++i) {
        threads_.emplace_back([this, i] { run(i); });
    }
}

void SourceWriters::pause() {
    stop_.store(true);
    for (auto& thread : threads_) {
        thread.join();
    }
    threads_.clear();
}

// Writer i owns the hot pages i, i + writers, ... (so each page's version has one writer) and
// stamps one of them at random, at its share of the rate.
void SourceWriters::run(unsigned index) {
    using clock = std::chrono::steady_clock;
    std::uint64_t state = stamp_mix(guest_.seed + index + 1);
    std::uint64_t mine = (hot_.size() + spec_.writers - 1 - index) / spec_.writers;
    if (mine == 0) {
        return;
    }
    double rate = spec_.pages_per_second / spec_.writers;
    auto began = clock::now();
    std::uint64_t done = 0;
    while (!stop_.load(std::memory_order_relaxed)) {
        if (rate > 0) {
            double due = std::chrono::duration<double>(clock::now() - began).count() * rate;
            if (static_cast<double>(done) >= due) {
                std::this_thread::sleep_for(std::chrono::microseconds(200));
                continue;
            }
        }
        state = stamp_mix(state);
        auto [region, page] = hot_[index + (state % mine) * spec_.writers];
        std::uint32_t version = ++versions_[region][page];
        stamp_page(regions_[region].data() + page * guest_.page_size, region, page, version);
        ++done;
        writes_.fetch_add(1, std::memory_order_relaxed);
    }
}

}  // namespace uffdm::cli
