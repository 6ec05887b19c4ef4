// host_corpus.hpp — Pages of this host's own files: guest content that compresses like real RAM.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace uffdm::migration {

// Up to 64 MiB read once, in a fixed order, from the host's shared libraries and programs (ELF
// code and data), C headers and licence texts, each file's tail zero-padded to a page as a page
// cache holds it. Real guests hold mostly such things (code, text, the kernel's and programs'
// data); the synthetic guest's HostFiles content picks its non-zero pages from here. The same on
// any two processes of one host (the demo's source and destination), not across hosts.
class HostCorpus {
  public:
    // Built on first use, shared and never changed afterwards.
    [[nodiscard]] static const HostCorpus& get();

    [[nodiscard]] std::uint64_t pages() const noexcept { return bytes_.size() / kPage; }
    // Corpus page `index` (modulo pages()), as page_size bytes: smaller guest pages take part
    // of it, larger ones several corpus pages in a row.
    [[nodiscard]] std::span<const std::byte> page(std::uint64_t index,
                                                  std::uint64_t page_size) const noexcept;

    static constexpr std::uint64_t kPage = 4096;
    static constexpr std::uint64_t kBytes = 64ULL << 20;

  private:
    HostCorpus();
    std::vector<std::byte> bytes_;  // whole pages; 2 MiB past the end repeat its start
};

}  // namespace uffdm::migration
