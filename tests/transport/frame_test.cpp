// frame_test.cpp — Frame header and control messages: round trips and every rejection.
#include <gtest/gtest.h>

#include "transport/byte_order.hpp"
#include "transport/control.hpp"
#include "transport/frame.hpp"

namespace uffdm::transport {
namespace {

std::vector<std::byte> bytes(std::initializer_list<int> values) {
    std::vector<std::byte> out;
    for (int v : values) {
        out.push_back(static_cast<std::byte>(v));
    }
    return out;
}

std::array<std::byte, kHeaderSize> header_for(FrameType type, std::uint32_t length) {
    return encode_header({.version = kMaxVersion, .type = type, .length = length});
}

TEST(FrameHeader, RoundTripsEveryControlTypeAndTheApplicationRange) {
    for (FrameType type :
         {FrameType::Hello, FrameType::Challenge, FrameType::Response, FrameType::Accept,
          FrameType::Error, FrameType::Ping, FrameType::Pong, FrameType::Goodbye,
          FrameType::FirstApplication, FrameType::LastApplication}) {
        std::uint32_t length = payload_bound(type).min;
        auto encoded = header_for(type, length);
        auto decoded = decode_header(encoded);
        ASSERT_TRUE(decoded) << to_string(type) << ": " << decoded.error().detail;
        EXPECT_EQ(decoded->type, type);
        EXPECT_EQ(decoded->length, length);
        EXPECT_EQ(decoded->version, kMaxVersion);
    }
}

TEST(FrameHeader, IsLittleEndianOnTheWire) {
    auto h = header_for(FrameType::Ping, 8);
    EXPECT_EQ(std::vector<std::byte>(h.begin(), h.begin() + 12),
              bytes({'U', 'F', 'M', 'G', 4, 0, 6, 0, 8, 0, 0, 0}));
}

void expect_rejected(std::array<std::byte, kHeaderSize> h, const std::string& mentions) {
    auto decoded = decode_header(h);
    ASSERT_FALSE(decoded);
    EXPECT_EQ(decoded.error().code, Errc::ProtocolViolation);
    EXPECT_NE(decoded.error().detail.find(mentions), std::string::npos) << decoded.error().detail;
}

TEST(FrameHeader, RejectsWrongMagic) {
    auto h = header_for(FrameType::Ping, 8);
    h[0] = std::byte{'X'};
    expect_rejected(h, "magic");
}

TEST(FrameHeader, RejectsWrongVersion) {
    auto h = header_for(FrameType::Ping, 8);
    store_le<std::uint16_t>(h, 4, 99);
    expect_rejected(h, "version 99");
    store_le<std::uint16_t>(h, 4, 0);
    expect_rejected(h, "version 0");
}

TEST(FrameHeader, RejectsUnknownTypes) {
    for (int type : {0, 9, 0x3f, 0x80, 0xff}) {
        auto h = header_for(FrameType::Ping, 8);
        store_le<std::uint8_t>(h, 6, static_cast<std::uint8_t>(type));
        expect_rejected(h, "unknown");
    }
}

TEST(FrameHeader, RejectsReservedBits) {
    auto h = header_for(FrameType::Ping, 8);
    store_le<std::uint8_t>(h, 7, 0x80);
    expect_rejected(h, "flags");
    h = header_for(FrameType::Ping, 8);
    store_le<std::uint32_t>(h, 12, 1);
    expect_rejected(h, "reserved");
}

TEST(FrameHeader, RejectsLengthsOutsideTheTypesBound) {
    expect_rejected(header_for(FrameType::Hello, 63), "length 63");
    expect_rejected(header_for(FrameType::Goodbye, 1), "length 1");
    expect_rejected(header_for(FrameType::FirstApplication, kMaxPayload + 1), "outside");
    expect_rejected(header_for(FrameType::Error, 8 + 257), "outside");
}

TEST(FrameDecoder, CutsAStreamIntoFramesAcrossArbitrarySplits) {
    auto stream = frame_of(FrameType::Accept, Accept{7, 1, 4});
    auto ping = encode_frame(FrameType::Ping, encode_ping({42}));
    stream.insert(stream.end(), ping.begin(), ping.end());
    for (std::size_t split = 1; split < stream.size(); ++split) {
        FrameDecoder decoder;
        decoder.feed(std::span(stream).first(split));
        std::vector<Frame> frames;
        while (auto f = decoder.next()) {
            if (!*f) {
                break;
            }
            frames.push_back(std::move(**f));
        }
        decoder.feed(std::span(stream).subspan(split));
        while (auto f = decoder.next()) {
            if (!*f) {
                break;
            }
            frames.push_back(std::move(**f));
        }
        ASSERT_EQ(frames.size(), 2u) << "split at " << split;
        EXPECT_EQ(decode_accept(frames[0].payload)->session_id, 7u);
        EXPECT_EQ(decode_ping(frames[1].payload)->token, 42u);
    }
}

TEST(FrameDecoder, TruncatedFrameWaitsForMore) {
    auto frame = encode_frame(FrameType::Ping, encode_ping({1}));
    FrameDecoder decoder;
    decoder.feed(std::span(frame).first(frame.size() - 1));
    auto next = decoder.next();
    ASSERT_TRUE(next);
    EXPECT_FALSE(next->has_value());
    EXPECT_EQ(decoder.buffered(), frame.size() - 1);
}

TEST(FrameDecoder, GarbageAfterAValidFrameFailsAndNothingPastItIsUsed) {
    auto stream = encode_frame(FrameType::Ping, encode_ping({1}));
    auto garbage =
        bytes({'G', 'E', 'T', ' ', '/', ' ', 'H', 'T', 'T', 'P', '/', '1', '.', '1', '\r', '\n'});
    stream.insert(stream.end(), garbage.begin(), garbage.end());
    auto ping = encode_frame(FrameType::Ping, encode_ping({2}));
    stream.insert(stream.end(), ping.begin(), ping.end());
    FrameDecoder decoder;
    decoder.feed(stream);
    auto first = decoder.next();
    ASSERT_TRUE(first && first->has_value());
    auto second = decoder.next();
    ASSERT_FALSE(second);
    EXPECT_NE(second.error().detail.find("magic"), std::string::npos);
    EXPECT_TRUE(decoder.failed());
    EXPECT_FALSE(decoder.next());  // stays failed: the valid PING behind it is never used
}

TEST(FrameDecoder, ConnectionLimitBelowTheProtocolMaximum) {
    FrameDecoder decoder(4096);
    decoder.feed(header_for(FrameType::FirstApplication, 4097));
    auto next = decoder.next();
    ASSERT_FALSE(next);
    EXPECT_NE(next.error().detail.find("limit 4096"), std::string::npos);
}

TEST(Control, HelloRoundTripsAndRejectsEveryBadField) {
    Hello hello{.min_version = 1,
                .max_version = 1,
                .role = Role::Bulk,
                .bulk_index = 3,
                .auth = AuthMode::HmacSha256,
                .session_id = 0x1122334455667788,
                .client_nonce = {}};
    hello.client_nonce[5] = std::byte{9};
    auto payload = encode(hello);
    auto back = decode_hello(payload);
    ASSERT_TRUE(back) << back.error().detail;
    EXPECT_EQ(back->session_id, hello.session_id);
    EXPECT_EQ(back->bulk_index, 3);
    EXPECT_EQ(back->client_nonce, hello.client_nonce);
    EXPECT_EQ(encode(*back), payload);

    auto mutate = [&](std::size_t offset, int value, const char* mentions) {
        auto bad = payload;
        bad[offset] = static_cast<std::byte>(value);
        auto r = decode_hello(bad);
        ASSERT_FALSE(r) << "offset " << offset;
        EXPECT_NE(r.error().detail.find(mentions), std::string::npos) << r.error().detail;
    };
    mutate(0, 2, "version range");  // min 2 > max 1
    mutate(4, 0, "role");
    mutate(4, 7, "role");
    mutate(5, 16, "bulk_index");
    mutate(6, 0, "auth");
    mutate(6, 3, "auth");
    mutate(7, 1, "byte 7");
    mutate(60, 1, "bytes 48..63");
    EXPECT_FALSE(decode_hello(std::span(payload).first(63)));

    Hello urgent = hello;
    urgent.role = Role::Urgent;
    urgent.bulk_index = 0;
    EXPECT_FALSE(decode_hello(encode(urgent)));  // urgent must open a session: id 0
    urgent.session_id = 0;
    EXPECT_TRUE(decode_hello(encode(urgent)));
    Hello bulk_without_session = hello;
    bulk_without_session.session_id = 0;
    EXPECT_FALSE(decode_hello(encode(bulk_without_session)));
}

TEST(Control, ChallengeResponseRoundTrip) {
    Challenge c{};
    c.server_nonce[0] = std::byte{1};
    c.server_proof[31] = std::byte{2};
    auto back = decode_challenge(encode(c));
    ASSERT_TRUE(back);
    EXPECT_EQ(back->server_nonce, c.server_nonce);
    EXPECT_EQ(back->server_proof, c.server_proof);
    Response r{};
    r.client_proof[7] = std::byte{3};
    EXPECT_EQ(decode_response(encode(r))->client_proof, r.client_proof);
    EXPECT_FALSE(decode_response(encode(c)));
    EXPECT_FALSE(decode_challenge(encode(r)));
}

TEST(Control, AcceptRoundTripsAndRejectsBadValues) {
    auto back = decode_accept(encode(Accept{99, 1, 16}));
    ASSERT_TRUE(back);
    EXPECT_EQ(back->session_id, 99u);
    EXPECT_EQ(back->max_bulk_channels, 16);
    EXPECT_FALSE(decode_accept(encode(Accept{0, 1, 1})));
    EXPECT_TRUE(decode_accept(encode(Accept{1, 2, 1})));  // version 2: a live source's
    EXPECT_TRUE(decode_accept(encode(Accept{1, 3, 1})));  // version 3: compressed runs
    EXPECT_TRUE(decode_accept(encode(Accept{1, 4, 1})));  // version 4: zero maps
    EXPECT_FALSE(decode_accept(encode(Accept{1, 5, 1})));
    EXPECT_FALSE(decode_accept(encode(Accept{1, 1, 17})));
    auto reserved = encode(Accept{1, 1, 1});
    reserved[15] = std::byte{1};
    EXPECT_FALSE(decode_accept(reserved));
}

TEST(Control, ErrorRoundTripsAndRejectsBadText) {
    auto back = decode_error(encode(ErrorMessage{ErrorCode::AuthFailed, "no"}));
    ASSERT_TRUE(back);
    EXPECT_EQ(back->code, ErrorCode::AuthFailed);
    EXPECT_EQ(back->text, "no");
    // Encoding clips and sanitises; decoding refuses what encoding would never produce.
    auto clipped = decode_error(encode(ErrorMessage{ErrorCode::Busy, std::string(400, 'x')}));
    EXPECT_EQ(clipped->text.size(), kMaxErrorText);
    EXPECT_EQ(decode_error(encode(ErrorMessage{ErrorCode::Busy, "a\nb"}))->text, "a?b");
    auto bad = encode(ErrorMessage{ErrorCode::Busy, "abc"});
    bad[9] = std::byte{0};
    EXPECT_FALSE(decode_error(bad));
    auto wrong_length = encode(ErrorMessage{ErrorCode::Busy, "abc"});
    store_le<std::uint32_t>(wrong_length, 4, 2);
    EXPECT_FALSE(decode_error(wrong_length));
    EXPECT_FALSE(decode_error(encode(ErrorMessage{ErrorCode::Invalid, ""})));
    auto unknown = encode(ErrorMessage{ErrorCode::Busy, ""});
    store_le<std::uint32_t>(unknown, 0, 1000);
    EXPECT_FALSE(decode_error(unknown));
}

TEST(Control, PingRoundTrip) {
    EXPECT_EQ(decode_ping(encode_ping({0xdeadbeefcafef00d}))->token, 0xdeadbeefcafef00du);
    EXPECT_FALSE(decode_ping(bytes({1, 2, 3})));
}

}  // namespace
}  // namespace uffdm::transport
