// live_guest.hpp — The source's running guest for `demo --precopy`: synthetic content, then
// writer threads that stamp pages with versions, so that any page can be checked afterwards.
#pragma once

#include <uffdm/uffdm.hpp>

#include <atomic>
#include <cstdint>
#include <expected>
#include <span>
#include <string>
#include <thread>
#include <vector>

namespace uffdm::cli {

struct WriterSpec {
    unsigned writers = 2;
    double pages_per_second = 20000;  // all writers together; 0: as fast as they can
    unsigned hot_percent = 5;         // the pages they write, scattered over the guest
};

// Which page versions the guest held when its writers were paused: 0 = never written (the
// synthetic content), v > 0 = the synthetic content with the stamp of version v at its start.
using PageVersions = std::vector<std::vector<std::uint32_t>>;  // per region, per page

// A stamped page: its first 16 bytes say which page and which version; the rest is unchanged.
[[nodiscard]] bool live_page_matches(const SyntheticGuest& guest, const PageVersions& versions,
                                     std::uint32_t region, std::uint64_t page,
                                     const void* data) noexcept;
[[nodiscard]] std::expected<void, std::string> write_versions(const std::string& path,
                                                              const PageVersions& versions);
[[nodiscard]] std::expected<PageVersions, std::string> read_versions(const std::string& path);

class SourceWriters {
  public:
    SourceWriters(std::vector<std::span<std::byte>> regions, const SyntheticGuest& guest,
                  WriterSpec spec);
    SourceWriters(const SourceWriters&) = delete;
    SourceWriters& operator=(const SourceWriters&) = delete;
    ~SourceWriters() { pause(); }

    void start();
    // Stops every writer and waits for it: from here on the guest's memory does not change.
    void pause();
    [[nodiscard]] const PageVersions& versions() const noexcept { return versions_; }
    [[nodiscard]] std::uint64_t writes() const noexcept { return writes_.load(); }
    [[nodiscard]] std::uint64_t hot_pages() const noexcept { return hot_.size(); }

  private:
    void run(unsigned index);

    std::vector<std::span<std::byte>> regions_;
    SyntheticGuest guest_;
    WriterSpec spec_;
    std::vector<std::pair<std::uint32_t, std::uint64_t>> hot_;  // (region, page)
    PageVersions versions_;
    std::atomic<bool> stop_{false};
    std::atomic<std::uint64_t> writes_{0};
    std::vector<std::thread> threads_;
};

}  // namespace uffdm::cli
