// compression.cpp — lz4 blocks and zstd frames for PAGES runs, made and expanded with checks.
#include "migration/compression.hpp"

#include <lz4.h>
#include <zstd.h>

#include <limits>
#include <string>

namespace uffdm::migration {

using transport::violation;

struct RunCompressor::Contexts {
    ZSTD_CCtx* zstd = nullptr;
    ~Contexts() { ZSTD_freeCCtx(zstd); }
};

RunCompressor::RunCompressor() : contexts_(std::make_unique<Contexts>()) {}
RunCompressor::~RunCompressor() = default;
RunCompressor::RunCompressor(RunCompressor&&) noexcept = default;
RunCompressor& RunCompressor::operator=(RunCompressor&&) noexcept = default;

bool RunCompressor::compress(wire::Encoding encoding, int zstd_level,
                             std::span<const std::byte> raw, std::vector<std::byte>& out) {
    if (raw.empty() || raw.size() > static_cast<std::size_t>(LZ4_MAX_INPUT_SIZE)) {
        return false;
    }
    // Room for the result only while it is shorter than the run: a run that does not shrink
    // fails to fit and goes raw (and no time is spent finishing it).
    out.resize(raw.size() - 1);
    if (encoding == wire::Encoding::Lz4) {
        int written = LZ4_compress_default(
            reinterpret_cast<const char*>(raw.data()), reinterpret_cast<char*>(out.data()),
            static_cast<int>(raw.size()), static_cast<int>(out.size()));
        if (written <= 0) {
            return false;
        }
        out.resize(static_cast<std::size_t>(written));
        return true;
    }
    if (encoding != wire::Encoding::Zstd) {
        return false;
    }
    if (contexts_->zstd == nullptr) {
        contexts_->zstd = ZSTD_createCCtx();
        if (contexts_->zstd == nullptr) {
            return false;
        }
    }
    // One frame that states its content size (the destination checks it before expanding).
    ZSTD_CCtx_reset(contexts_->zstd, ZSTD_reset_session_and_parameters);
    ZSTD_CCtx_setParameter(contexts_->zstd, ZSTD_c_compressionLevel, zstd_level);
    ZSTD_CCtx_setParameter(contexts_->zstd, ZSTD_c_contentSizeFlag, 1);
    std::size_t written =
        ZSTD_compress2(contexts_->zstd, out.data(), out.size(), raw.data(), raw.size());
    if (ZSTD_isError(written) != 0U || written == 0) {
        return false;
    }
    out.resize(written);
    return true;
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
    const std::uint64_t raw_bytes = run.raw_bytes(layout);
    auto what = [&] {
        return std::string("PAGES ") + wire::name(run.header.encoding) + " run of " +
               std::to_string(run.header.count) + " pages at region " +
               std::to_string(run.header.region) + " page " + std::to_string(run.header.first_page);
    };
    buffer_.resize(raw_bytes);
    if (run.header.encoding == wire::Encoding::Lz4) {
        // The block states no size: it is expanded into exactly the run's bytes, and lz4's safe
        // decoder never writes past them (a block that would is refused like a corrupt one).
        int got = LZ4_decompress_safe(
            reinterpret_cast<const char*>(run.data.data()), reinterpret_cast<char*>(buffer_.data()),
            static_cast<int>(run.data.size()), static_cast<int>(raw_bytes));
        if (got < 0) {
            return std::unexpected(violation(what() +
                                             ": a corrupt lz4 block, or one that expands "
                                             "past the run's " +
                                             std::to_string(raw_bytes) + " bytes"));
        }
        if (static_cast<std::uint64_t>(got) != raw_bytes) {
            return std::unexpected(violation(what() + " expands to " + std::to_string(got) +
                                             " bytes; the descriptor says " +
                                             std::to_string(raw_bytes)));
        }
    } else {
        unsigned long long stated = ZSTD_getFrameContentSize(run.data.data(), run.data.size());
        if (stated == ZSTD_CONTENTSIZE_ERROR) {
            return std::unexpected(violation(what() + ": not a zstd frame"));
        }
        if (stated == ZSTD_CONTENTSIZE_UNKNOWN) {
            return std::unexpected(violation(what() + ": the zstd frame states no content size"));
        }
        if (stated > raw_bytes) {
            return std::unexpected(
                violation(what() + ": the zstd frame states " + std::to_string(stated) +
                          " bytes, more than the run holds (" + std::to_string(raw_bytes) + ")"));
        }
        if (stated != raw_bytes) {
            return std::unexpected(
                violation(what() + ": the zstd frame states " + std::to_string(stated) +
                          " bytes; the descriptor says " + std::to_string(raw_bytes)));
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
        std::size_t got = ZSTD_decompressDCtx(contexts_->zstd, buffer_.data(), buffer_.size(),
                                              run.data.data(), run.data.size());
        if (ZSTD_isError(got) != 0U) {
            return std::unexpected(
                violation(what() + ": a corrupt zstd frame (" + ZSTD_getErrorName(got) + ")"));
        }
        if (got != raw_bytes) {
            return std::unexpected(violation(what() + " expands to " + std::to_string(got) +
                                             " bytes; the descriptor says " +
                                             std::to_string(raw_bytes)));
        }
    }
    wire::PagesView expanded = run;
    expanded.header.encoding = wire::Encoding::Raw;
    expanded.data = buffer_;
    return expanded;
}

}  // namespace uffdm::migration
