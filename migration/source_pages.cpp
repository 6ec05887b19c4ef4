// source_pages.cpp — The source's sent bitmaps, answer and stream runs, PAGES frames.
#include "migration/source_pages.hpp"

#include <algorithm>
#include <bit>

#include "migration/page_hash.hpp"
#include "transport/byte_order.hpp"

namespace uffdm::migration {

namespace {

constexpr std::uint64_t kPageMask = (std::uint64_t{1} << 48) - 1;

}  // namespace

SentPages::SentPages(const GuestMemory& memory, std::uint64_t stream_run_bytes)
    : memory_(memory), stream_run_bytes_(stream_run_bytes) {
    for (const auto& region : memory.layout().regions) {
        sent_.emplace_back(region.pages());
        delivered_.emplace_back(region.pages());
    }
}

void SentPages::start_fresh() {
    for (std::size_t r = 0; r < sent_.size(); ++r) {
        sent_[r].clear();
        delivered_[r].clear();
    }
    started_here_ = true;
}

void SentPages::resume_from(const std::vector<PageBitmap>& received,
                            const std::vector<PageBitmap>* stale) {
    for (std::size_t r = 0; r < sent_.size(); ++r) {
        PageBitmap& sent = sent_[r];
        PageBitmap& delivered = delivered_[r];
        for (std::size_t w = 0; w < sent.words(); ++w) {
            delivered.assign_word(w, delivered.word(w) | sent.word(w));
            std::uint64_t has = received.empty() ? 0 : received[r].word(w);
            if (stale != nullptr && !stale->empty()) {
                has &= ~(*stale)[r].word(w);
            }
            sent.assign_word(w, has);
        }
    }
    counts_.resumes.fetch_add(1, std::memory_order_relaxed);
    rewind();
}

void SentPages::mark_unsent(const std::vector<PageBitmap>& written) {
    for (std::size_t r = 0; r < sent_.size() && r < written.size(); ++r) {
        for (std::size_t w = 0; w < sent_[r].words(); ++w) {
            if (std::uint64_t bits = written[r].word(w); bits != 0) {
                // Sent once: the destination may hold that copy (a BITMAP may claim it).
                delivered_[r].set_bits(w, sent_[r].word(w) & bits);
                sent_[r].clear_bits(w, bits);
            }
        }
    }
}

void SentPages::rewind() {
    hint_.store(0, std::memory_order_relaxed);
    hint_seq_.fetch_add(1, std::memory_order_release);
}

std::string SentPages::unsent_claim(const std::vector<PageBitmap>& received) const {
    if (!started_here_ || received.empty()) {
        return {};
    }
    for (std::size_t r = 0; r < received.size(); ++r) {
        const PageBitmap& sent = sent_[r];
        const PageBitmap& delivered = delivered_[r];
        for (std::size_t w = 0; w < sent.words(); ++w) {
            std::uint64_t never = received[r].word(w) & ~(sent.word(w) | delivered.word(w));
            if (never != 0) {
                return "BITMAP claims page " +
                       std::to_string(w * 64 + static_cast<std::size_t>(std::countr_zero(never))) +
                       " of region " + std::to_string(r) +
                       " is present, but this source never sent it";
            }
        }
    }
    return {};
}

void SentPages::note_request(std::uint32_t region, std::uint64_t page) {
    counts_.requests.fetch_add(1, std::memory_order_relaxed);
    hint_.store((std::uint64_t{region} << 48) | (page & kPageMask), std::memory_order_relaxed);
    hint_seq_.fetch_add(1, std::memory_order_release);
}

PageRun SentPages::answer(std::uint32_t region, std::uint64_t first, std::uint64_t count) {
    PageBitmap& sent = sent_[region];
    bool zero = memory_.is_zero(region, first);
    std::uint64_t run = 1;
    while (run < count && memory_.is_zero(region, first + run) == zero) {
        ++run;
    }
    for (std::uint64_t p = first; p < first + run; ++p) {
        if (!sent.test_and_set(p)) {
            // Streamed already, but the destination asked: it has not arrived there yet, and
            // the urgent connection will deliver it first.
            counts_.resent.fetch_add(1, std::memory_order_relaxed);
        }
    }
    counts_.answered.fetch_add(run, std::memory_order_relaxed);
    if (zero) {
        counts_.zero.fetch_add(run, std::memory_order_relaxed);
    }
    return {region, first, run, zero};
}

std::optional<PageRun> SentPages::next_stream_run(bool compressed) {
    if (auto seq = hint_seq_.load(std::memory_order_acquire); seq != seen_seq_) {
        seen_seq_ = seq;
        std::uint64_t hint = hint_.load(std::memory_order_relaxed);
        region_ = static_cast<std::uint32_t>(hint >> 48);
        page_ = hint & kPageMask;
    }
    const auto& regions = memory_.layout().regions;
    // One more visit than there are regions: the first region again from page 0, for the
    // pages before where a hint put the cursor.
    for (std::size_t visit = 0; visit <= regions.size(); ++visit) {
        PageBitmap& sent = sent_[region_];
        for (std::uint64_t p = sent.next_clear(page_); p < sent.size();
             p = sent.next_clear(p + 1)) {
            if (sent.test_and_set(p)) {
                PageRun run = grow(sent, p, compressed);
                counts_.streamed.fetch_add(run.count, std::memory_order_relaxed);
                counts_.zero.fetch_add(run.count - run.data_pages(), std::memory_order_relaxed);
                return run;
            }
        }
        region_ = static_cast<std::uint32_t>((region_ + 1) % regions.size());
        page_ = 0;
    }
    return std::nullopt;
}

PageRun SentPages::grow(PageBitmap& sent, std::uint64_t first, bool compressed) {
    std::uint64_t page_size = memory_.layout().regions[region_].page_size;
    std::uint64_t limit = std::min(wire::max_pages_per_frame(page_size),
                                   std::max<std::uint64_t>(1, stream_run_bytes_ / page_size));
    std::uint64_t end = std::min(sent.size(), first + limit);
    PageRun run{region_, first, 1, memory_.is_zero(region_, first)};
    while (first + run.count < end && !sent.test(first + run.count)) {
        std::uint64_t at = first + run.count;
        if (memory_.is_zero(region_, at) == run.zero) {
            if (!sent.test_and_set(at)) {
                break;  // the urgent loop answered it meanwhile
            }
            ++run.count;
            continue;
        }
        std::uint64_t gap = compressed && !run.zero ? zero_gap(sent, at, end) : 0;
        if (gap == 0) {
            break;
        }
        // Taken one by one: a page the urgent loop answers meanwhile ends the run there.
        std::uint64_t taken = 0;
        while (taken < gap && sent.test_and_set(at + taken)) {
            std::uint64_t i = run.count + taken;
            run.zero_map[i / 64] |= std::uint64_t{1} << (i % 64);
            ++taken;
        }
        run.count += taken;
        run.zero_inside += taken;
        if (taken < gap) {
            break;
        }
    }
    page_ = first + run.count;
    return run;
}

std::uint64_t SentPages::zero_gap(const PageBitmap& sent, std::uint64_t at,
                                  std::uint64_t end) const {
    for (std::uint64_t gap = 0; gap <= kZeroGap && at + gap < end; ++gap) {
        if (sent.test(at + gap)) {
            return 0;
        }
        if (!memory_.is_zero(region_, at + gap)) {
            return gap;
        }
    }
    return 0;  // longer, or the run's end comes first
}

transport::OutgoingFrame FrameBuilder::pages(const PageRun& run, bool hashes, bool answer,
                                             bool live) {
    Pending pending = begin(run, hashes, answer, live);
    compress(pending, compressor_);
    return finish(pending);
}

bool FrameBuilder::stream_compresses() {
    if (!stream_codec_) {
        stream_codec_ = policy_.next_stream(CompressionPolicy::Clock::now());
    }
    return stream_codec_->encoding != wire::Encoding::Raw;
}

bool FrameBuilder::stream_takes_zero_gaps() {
    // Not for one of Auto's samples: a sample run grown over the gaps covered 32 times the
    // pages of the small runs of a stream that stays raw (a fifth of a random guest went as
    // samples on loopback, expanded and spread out by the destination: auto 1.11x of off).
    return stream_compresses() && !stream_codec_->sample && policy_.zero_maps();
}

std::uint64_t FrameBuilder::zero_hash(std::uint64_t page_size) {
    if (zero_hash_size_ != page_size) {
        std::vector<std::byte> zeros(page_size);
        zero_hash_ = page_hash(zeros);
        zero_hash_size_ = page_size;
    }
    return zero_hash_;
}

FrameBuilder::Pending FrameBuilder::begin(const PageRun& run, bool hashes, bool answer, bool live) {
    Pending p;
    p.answer = answer;
    p.header = wire::PagesHeader{
        .region = run.region,
        .encoding = run.zero ? wire::Encoding::Zero : wire::Encoding::Raw,
        .flags = static_cast<std::uint8_t>((hashes && !run.zero ? wire::PagesHeader::kHashes : 0) |
                                           (answer ? wire::PagesHeader::kAnswer : 0)),
        .first_page = run.first,
        .count = static_cast<std::uint32_t>(run.count)};
    p.frame = transport::OutgoingFrame{.type = wire::frame_type(wire::MessageType::Pages)};
    if (run.zero) {
        return p;
    }
    p.data = memory_.pages(run.region, run.first, run.count);
    const std::uint64_t page_size = p.data.size() / run.count;
    p.data_bytes = page_size * run.data_pages();
    p.zero_map = run.zero_map;
    p.zero_words = run.zero_words().size();
    if (answer) {
        p.codec = policy_.for_answer();
    } else {
        (void)stream_compresses();
        p.codec = *stream_codec_;
        stream_codec_.reset();
        policy_.streamed(p.data_bytes);
    }
    if (hashes || p.codec.encoding != wire::Encoding::Raw) {
        p.slot = next_++ % slots_.size();
        if (hashes && live) {
            auto& copy = copies_[p.slot];
            copy.assign(p.data.begin(), p.data.end());
            p.data = copy;
        }
        if (hashes) {
            auto& slot = slots_[p.slot];
            slot.resize(run.count * 8);
            for (std::uint64_t i = 0; i < run.count; ++i) {
                bool zero = wire::zero_bit(run.zero_words(), i);
                transport::store_le<std::uint64_t>(
                    slot, i * 8,
                    zero ? zero_hash(page_size)
                         : page_hash(p.data.subspan(i * page_size, page_size)));
            }
            p.frame.borrowed[0] = slot;
        }
    }
    return p;
}

void FrameBuilder::compress(Pending& p, RunCompressor& compressor) {
    if (!p.compresses()) {
        return;
    }
    p.shrank =
        p.zero_words == 0
            ? compressor.compress(p.codec.encoding, p.codec.zstd_level, p.data, packed_[p.slot])
            : compressor.compress(p.codec.encoding, p.codec.zstd_level, p.data,
                                  p.data.size() / p.header.count,
                                  std::span(p.zero_map.data(), p.zero_words), packed_[p.slot]);
    // CPU time, not the wall's: on shared cores another thread's turn would count as this
    // encoding's cost (Auto's samples read a half of their speed under load).
    p.spent = compressor.spent();
}

transport::OutgoingFrame FrameBuilder::finish(Pending& p) {
    if (p.compresses()) {
        policy_.record(p.codec, p.data_bytes, p.shrank ? packed_[p.slot].size() : 0, p.spent,
                       !p.answer);
        if (p.shrank) {
            p.header.encoding = p.codec.encoding;
            p.data = packed_[p.slot];
        }
    }
    if (p.header.encoding != wire::Encoding::Raw && p.zero_words != 0) {
        (void)p.frame.set_inline(
            wire::encode(p.header, std::span(p.zero_map.data(), p.zero_words)));
    } else {
        // Sent raw (it did not shrink): the zero pages go as the data they are.
        (void)p.frame.set_inline(wire::encode(p.header));
    }
    if (!p.data.empty()) {
        p.frame.borrowed[1] = p.data;
    }
    return std::move(p.frame);
}

}  // namespace uffdm::migration
