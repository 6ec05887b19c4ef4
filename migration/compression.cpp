// compression.cpp — lz4 blocks and zstd frames for PAGES runs, made and expanded with checks.
#include "migration/compression.hpp"

#include <lz4.h>
#include <time.h>
#include <zstd.h>

#include <cstring>
#include <limits>
#include <string>

namespace uffdm::migration {

using transport::violation;

std::chrono::nanoseconds thread_cpu_time() noexcept {
    timespec ts{};
    ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec);
}

// One zstd context per level used (Auto alternates between levels: a context that changed level
// for each run rebuilt its tables each time, and its samples measured a half of the speed the
// level reaches on a context of its own).
struct RunCompressor::Contexts {
    std::vector<std::pair<int, ZSTD_CCtx*>> zstd;
    ~Contexts() {
        for (auto& [level, context] : zstd) {
            ZSTD_freeCCtx(context);
        }
    }
    ZSTD_CCtx* for_level(int level) {
        for (auto& [l, context] : zstd) {
            if (l == level) {
                return context;
            }
        }
        ZSTD_CCtx* context = ZSTD_createCCtx();
        if (context == nullptr) {
            return nullptr;
        }
        // Each run one frame that states its content size (the destination checks it).
        ZSTD_CCtx_setParameter(context, ZSTD_c_compressionLevel, level);
        ZSTD_CCtx_setParameter(context, ZSTD_c_contentSizeFlag, 1);
        // Its workspace sized and touched once for the largest run: grown run by run instead,
        // each new page a fault inside a timed compression (the level's first samples read a
        // third of its speed).
        static const std::vector<std::byte> zeros(wire::kMaxRunBytes);
        std::size_t room = ZSTD_compressBound(zeros.size());
        auto out = std::make_unique_for_overwrite<std::byte[]>(room);  // touched where written
        (void)ZSTD_compress2(context, out.get(), room, zeros.data(), zeros.size());
        zstd.emplace_back(level, context);
        return context;
    }
};

RunCompressor::RunCompressor() : contexts_(std::make_unique<Contexts>()) {}
RunCompressor::~RunCompressor() = default;
RunCompressor::RunCompressor(RunCompressor&&) noexcept = default;
RunCompressor& RunCompressor::operator=(RunCompressor&&) noexcept = default;

bool RunCompressor::compress(wire::Encoding encoding, int zstd_level,
                             std::span<const std::byte> raw, std::vector<std::byte>& out) {
    return !raw.empty() && compress_into(encoding, zstd_level, raw, raw.size() - 1, out);
}

bool RunCompressor::compress(wire::Encoding encoding, int zstd_level,
                             std::span<const std::byte> run, std::uint64_t page_size,
                             std::span<const std::uint64_t> zero_words,
                             std::vector<std::byte>& out) {
    if (run.empty() || page_size == 0) {
        return false;
    }
    gathered_.clear();
    std::uint64_t pages = run.size() / page_size;
    for (std::uint64_t i = 0; i < pages; ++i) {
        if (wire::zero_bit(zero_words, i)) {
            continue;
        }
        auto page = run.subspan(i * page_size, page_size);
        gathered_.insert(gathered_.end(), page.begin(), page.end());
    }
    return !gathered_.empty() &&
           compress_into(encoding, zstd_level, gathered_, run.size() - 1, out);
}

bool RunCompressor::compress_into(wire::Encoding encoding, int zstd_level,
                                  std::span<const std::byte> raw, std::size_t room,
                                  std::vector<std::byte>& out) {
    if (raw.empty() || raw.size() > static_cast<std::size_t>(LZ4_MAX_INPUT_SIZE) || room == 0) {
        return false;
    }
    // Room for the result only while it is shorter than the run: a run that does not shrink
    // fails to fit and goes raw (and no time is spent finishing it). Written into this
    // compressor's own buffer, which stays warm, then copied out: the caller's buffers are many
    // (one per frame in flight) and a first touch of each page of theirs is a page fault (about
    // 30 us on the VMs this was measured on): copying touches only the result's pages.
    if (scratch_.size() < room) {
        scratch_.resize(room);
    }
    std::span<std::byte> into(scratch_.data(), room);
    ZSTD_CCtx* context = nullptr;
    if (encoding == wire::Encoding::Zstd) {
        context = contexts_->for_level(zstd_level);  // (its first use is not timed)
        if (context == nullptr) {
            return false;
        }
    }
    auto started = thread_cpu_time();
    auto copy_out = [&](std::size_t written) {
        spent_ = thread_cpu_time() - started;  // the compression's own (warm buffers) time
        out.assign(into.begin(), into.begin() + static_cast<std::ptrdiff_t>(written));
        return true;
    };
    if (encoding == wire::Encoding::Lz4) {
        int written = LZ4_compress_default(
            reinterpret_cast<const char*>(raw.data()), reinterpret_cast<char*>(into.data()),
            static_cast<int>(raw.size()), static_cast<int>(into.size()));
        if (written <= 0) {
            spent_ = thread_cpu_time() - started;
            return false;
        }
        return copy_out(static_cast<std::size_t>(written));
    }
    if (encoding != wire::Encoding::Zstd) {
        return false;
    }
    ZSTD_CCtx_reset(context, ZSTD_reset_session_only);
    std::size_t written = ZSTD_compress2(context, into.data(), into.size(), raw.data(), raw.size());
    if (ZSTD_isError(written) != 0U || written == 0) {
        spent_ = thread_cpu_time() - started;
        return false;
    }
    return copy_out(written);
}

struct RunExpander::Contexts {
    ZSTD_DCtx* zstd = nullptr;
    ~Contexts() { ZSTD_freeDCtx(zstd); }
};

RunExpander::RunExpander() : contexts_(std::make_unique<Contexts>()) {}
RunExpander::~RunExpander() = default;
RunExpander::RunExpander(RunExpander&&) noexcept = default;
RunExpander& RunExpander::operator=(RunExpander&&) noexcept = default;

std::expected<wire::PagesView, transport::Failure> RunExpander::read(
    std::span<const std::byte> payload, const wire::Layout& layout, std::uint32_t start_flags) {
    auto run = wire::decode_pages(payload, layout, start_flags);
    if (!run) {
        return std::unexpected(run.error());
    }
    return expand(*run, layout);
}

std::expected<wire::PagesView, transport::Failure> RunExpander::expand(const wire::PagesView& run,
                                                                       const wire::Layout& layout) {
    if (!wire::compressed(run.header.encoding)) {
        return run;
    }
    const std::uint64_t want = run.packed_bytes(layout);  // the zero map's pages left out
    auto what = [&] {
        return std::string("PAGES ") + wire::name(run.header.encoding) + " run of " +
               std::to_string(run.header.count) + " pages at region " +
               std::to_string(run.header.region) + " page " + std::to_string(run.header.first_page);
    };
    const bool mapped = !run.zero_map.empty();
    std::vector<std::byte>& into = mapped ? packed_ : buffer_;
    into.resize(want);
    if (run.header.encoding == wire::Encoding::Lz4) {
        // The block states no size: it is expanded into exactly the run's bytes, and lz4's safe
        // decoder never writes past them (a block that would is refused like a corrupt one).
        int got = LZ4_decompress_safe(reinterpret_cast<const char*>(run.data.data()),
                                      reinterpret_cast<char*>(into.data()),
                                      static_cast<int>(run.data.size()), static_cast<int>(want));
        if (got < 0) {
            return std::unexpected(violation(what() +
                                             ": a corrupt lz4 block, or one that expands "
                                             "past the run's " +
                                             std::to_string(want) + " bytes"));
        }
        if (static_cast<std::uint64_t>(got) != want) {
            return std::unexpected(violation(what() + " expands to " + std::to_string(got) +
                                             " bytes; the descriptor says " +
                                             std::to_string(want)));
        }
    } else {
        unsigned long long stated = ZSTD_getFrameContentSize(run.data.data(), run.data.size());
        if (stated == ZSTD_CONTENTSIZE_ERROR) {
            return std::unexpected(violation(what() + ": not a zstd frame"));
        }
        if (stated == ZSTD_CONTENTSIZE_UNKNOWN) {
            return std::unexpected(violation(what() + ": the zstd frame states no content size"));
        }
        if (stated > want) {
            return std::unexpected(
                violation(what() + ": the zstd frame states " + std::to_string(stated) +
                          " bytes, more than the run holds (" + std::to_string(want) + ")"));
        }
        if (stated != want) {
            return std::unexpected(
                violation(what() + ": the zstd frame states " + std::to_string(stated) +
                          " bytes; the descriptor says " + std::to_string(want)));
        }
        std::size_t frame = ZSTD_findFrameCompressedSize(run.data.data(), run.data.size());
        if (ZSTD_isError(frame) != 0U || frame != run.data.size()) {
            return std::unexpected(
                violation(what() + ": bytes follow the zstd frame, or the frame is cut short"));
        }
        if (contexts_->zstd == nullptr) {
            contexts_->zstd = ZSTD_createDCtx();
            if (contexts_->zstd == nullptr) {
                return std::unexpected(
                    transport::Failure{std::make_error_code(std::errc::not_enough_memory),
                                       "cannot make a zstd decompression context"});
            }
        }
        std::size_t got = ZSTD_decompressDCtx(contexts_->zstd, into.data(), into.size(),
                                              run.data.data(), run.data.size());
        if (ZSTD_isError(got) != 0U) {
            return std::unexpected(
                violation(what() + ": a corrupt zstd frame (" + ZSTD_getErrorName(got) + ")"));
        }
        if (got != want) {
            return std::unexpected(violation(what() + " expands to " + std::to_string(got) +
                                             " bytes; the descriptor says " +
                                             std::to_string(want)));
        }
    }
    if (mapped) {
        // The pages in order, zeros where the map says.
        const std::uint64_t page_size = layout.regions[run.header.region].page_size;
        buffer_.resize(run.raw_bytes(layout));
        std::uint64_t from = 0;
        for (std::uint64_t i = 0; i < run.header.count; ++i) {
            std::byte* to = buffer_.data() + i * page_size;
            if (run.zero_at(i)) {
                std::memset(to, 0, page_size);
            } else {
                std::memcpy(to, packed_.data() + from, page_size);
                from += page_size;
            }
        }
    }
    wire::PagesView expanded = run;
    expanded.header.encoding = wire::Encoding::Raw;
    expanded.header.flags &= static_cast<std::uint8_t>(~wire::PagesHeader::kZeroMap);
    expanded.zero_map = {};
    expanded.data = buffer_;
    expanded.zeros_inside = true;
    return expanded;
}

}  // namespace uffdm::migration
