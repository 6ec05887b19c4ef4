// synthetic.cpp — splitmix64 to pick each page's kind, xorshift64* to generate its bytes.
#include "migration/synthetic.hpp"

#include <algorithm>
#include <bit>
#include <cstring>
#include <system_error>
#include <thread>
#include <vector>

#include "migration/host_corpus.hpp"

namespace uffdm::migration {

namespace {

constexpr std::uint64_t kRepeatPool = 16;

std::uint64_t splitmix(std::uint64_t x) noexcept {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

std::uint64_t page_key(const SyntheticSpec& spec, std::uint32_t region, std::uint64_t page) {
    return splitmix(spec.seed ^ splitmix((std::uint64_t{region} << 48) ^ page));
}

// The generator state a page's bytes start from.
std::uint64_t content_seed(const SyntheticSpec& spec, std::uint32_t region, std::uint64_t page,
                           PageContent kind) {
    std::uint64_t key = page_key(spec, region, page);
    if (kind == PageContent::Repeated) {
        return splitmix(spec.seed ^ (0xabcdULL << 32) ^ (key % kRepeatPool)) | 1;
    }
    return splitmix(key) | 1;
}

// xorshift64*: one 8-byte word per step.
struct Words {
    std::uint64_t state;
    std::uint64_t next() noexcept {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        return state * 0x2545f4914f6cdd1dULL;
    }
};

// HostFiles: the corpus page a non-zero page shows, tiled over pages larger than 2 MiB.
std::uint64_t corpus_index(const SyntheticSpec& spec, std::uint32_t region, std::uint64_t page,
                           PageContent kind) {
    std::uint64_t key = content_seed(spec, region, page, kind);
    return (key >> 8) * (spec.page_size / HostCorpus::kPage);
}

}  // namespace

wire::Layout SyntheticSpec::layout() const {
    wire::Layout layout;
    std::uint64_t pages = size / page_size;
    for (std::uint32_t i = 0; i < regions; ++i) {
        std::uint64_t share = pages / regions + (i < pages % regions ? 1 : 0);
        layout.regions.push_back({i, page_size, share * page_size});
    }
    return layout;
}

std::string SyntheticSpec::problem() const {
    if (!std::has_single_bit(page_size) || page_size < wire::kMinPageSize ||
        page_size > wire::kMaxPageSize) {
        return "page size " + std::to_string(page_size) + " is not a power of two in 4 KiB..1 GiB";
    }
    if (regions == 0 || regions > wire::kMaxRegions) {
        return "regions " + std::to_string(regions) + " outside 1.." +
               std::to_string(wire::kMaxRegions);
    }
    if (size == 0 || size % page_size != 0 || size / page_size < regions) {
        return "size " + std::to_string(size) + " is not a multiple of the page size " +
               std::to_string(page_size) + " with at least one page per region";
    }
    if (zero_percent > 100 || repeat_percent > 100) {
        return "percentages must be 0..100";
    }
    if (content == SyntheticContent::HostFiles && HostCorpus::get().pages() == 0) {
        return "host-files content: no readable files under /usr/lib, /usr/bin or /usr/include";
    }
    return "";
}

PageContent content_of(const SyntheticSpec& spec, std::uint32_t region,
                       std::uint64_t page) noexcept {
    std::uint64_t key = page_key(spec, region, page);
    if (key % 100 < spec.zero_percent) {
        return PageContent::Zero;
    }
    return (key >> 32) % 100 < spec.repeat_percent ? PageContent::Repeated : PageContent::Unique;
}

// Not instrumented by ThreadSanitizer: it writes into memory its caller owns alone (a page
// being built, a scratch copy), and fill_new_region's threads each write their own pages.
__attribute__((no_sanitize("thread"))) void fill_page(const SyntheticSpec& spec,
                                                      std::uint32_t region, std::uint64_t page,
                                                      std::span<std::byte> out) noexcept {
    PageContent kind = content_of(spec, region, page);
    if (kind == PageContent::Zero) {
        std::memset(out.data(), 0, out.size());
        return;
    }
    if (spec.content == SyntheticContent::HostFiles) {
        auto from = HostCorpus::get().page(corpus_index(spec, region, page, kind), spec.page_size);
        for (std::size_t at = 0; at < out.size(); at += from.size()) {
            std::memcpy(out.data() + at, from.data(), std::min(from.size(), out.size() - at));
        }
        return;
    }
    Words words{content_seed(spec, region, page, kind)};
    for (std::size_t at = 0; at + 8 <= out.size(); at += 8) {
        std::uint64_t w = words.next();
        std::memcpy(out.data() + at, &w, 8);
    }
}

void fill_new_region(const SyntheticSpec& spec, std::uint32_t region, std::uint64_t pages,
                     std::byte* base) noexcept {
    auto fill = [&](std::uint64_t first, std::uint64_t end) {
        for (std::uint64_t page = first; page < end; ++page) {
            if (content_of(spec, region, page) != PageContent::Zero) {
                fill_page(spec, region, page, {base + page * spec.page_size, spec.page_size});
            }
        }
    };
    // A helper thread only for a share of at least 4096 pages (16 MiB of 4 KiB pages).
    constexpr std::uint64_t kPagesPerThread = 4096;
    std::uint64_t threads = std::min<std::uint64_t>(
        std::max(1U, std::thread::hardware_concurrency()), pages / kPagesPerThread);
    if (threads <= 1) {
        fill(0, pages);
        return;
    }
    std::vector<std::jthread> helpers;
    std::uint64_t share = pages / threads;
    for (std::uint64_t t = 1; t < threads; ++t) {
        std::uint64_t first = t * share;
        std::uint64_t end = t + 1 == threads ? pages : first + share;
        try {
            helpers.emplace_back([&fill, first, end] { fill(first, end); });
        } catch (const std::system_error&) {
            fill(first, end);  // no thread to be had: this one does that share too
        }
    }
    fill(0, share);
}

bool page_matches(const SyntheticSpec& spec, std::uint32_t region, std::uint64_t page,
                  std::span<const std::byte> data) noexcept {
    PageContent kind = content_of(spec, region, page);
    if (kind == PageContent::Zero) {
        std::uint64_t any = 0;
        for (std::size_t at = 0; at + 8 <= data.size(); at += 8) {
            std::uint64_t w = 0;
            std::memcpy(&w, data.data() + at, 8);
            any |= w;
        }
        return any == 0;
    }
    if (spec.content == SyntheticContent::HostFiles) {
        auto from = HostCorpus::get().page(corpus_index(spec, region, page, kind), spec.page_size);
        for (std::size_t at = 0; at < data.size(); at += from.size()) {
            std::size_t n = std::min(from.size(), data.size() - at);
            if (std::memcmp(data.data() + at, from.data(), n) != 0) {
                return false;
            }
        }
        return true;
    }
    Words words{content_seed(spec, region, page, kind)};
    for (std::size_t at = 0; at + 8 <= data.size(); at += 8) {
        std::uint64_t w = 0;
        std::memcpy(&w, data.data() + at, 8);
        if (w != words.next()) {
            return false;
        }
    }
    return true;
}

}  // namespace uffdm::migration
