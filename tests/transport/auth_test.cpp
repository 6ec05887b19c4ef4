// auth_test.cpp — Token files, proofs, and the handshake state machines against each other.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <set>

#include "tests/support/transport_support.hpp"
#include "transport/auth.hpp"
#include "transport/endpoint.hpp"
#include "transport/handshake.hpp"

namespace uffdm::transport {
namespace {

using test::secret_of;

class TokenFile : public ::testing::Test {
  protected:
    void SetUp() override {
        char name[] = "/tmp/uffdm-token-XXXXXX";
        int fd = ::mkstemp(name);
        ASSERT_GE(fd, 0);
        ::close(fd);
        path_ = name;
    }
    void TearDown() override { std::filesystem::remove(path_); }
    void write(const std::string& content, mode_t mode) {
        std::ofstream(path_) << content;
        ASSERT_EQ(::chmod(path_.c_str(), mode), 0);
    }
    std::string path_;
};

TEST_F(TokenFile, PrivateFileIsReadAndWhitespaceTrimmed) {
    write("  correct-horse-battery-staple\n", 0600);
    auto secret = Secret::from_token_file(path_);
    ASSERT_TRUE(secret) << secret.error().detail;
    EXPECT_EQ(secret->bytes().size(), std::string("correct-horse-battery-staple").size());
}

TEST_F(TokenFile, ReadableByGroupOrOthersIsRefusedWithTheFix) {
    for (mode_t mode : {0640, 0604, 0660, 0644}) {
        write("correct-horse-battery-staple", mode);
        auto secret = Secret::from_token_file(path_);
        ASSERT_FALSE(secret) << std::oct << mode;
        EXPECT_EQ(secret.error().code, Errc::PermissionDenied);
        EXPECT_NE(secret.error().detail.find("chmod 600"), std::string::npos);
    }
}

TEST_F(TokenFile, ASymbolicLinkIsRefusedEvenToAPrivateFileOfOurs) {
    write("correct-horse-battery-staple", 0600);
    ASSERT_TRUE(Secret::from_token_file(path_));  // the file itself is fine
    std::string link = path_ + ".link";
    ASSERT_EQ(::symlink(path_.c_str(), link.c_str()), 0);
    auto secret = Secret::from_token_file(link);
    std::filesystem::remove(link);
    ASSERT_FALSE(secret);
    EXPECT_EQ(secret.error().code, Errc::PermissionDenied);
    EXPECT_NE(secret.error().detail.find("is a symbolic link"), std::string::npos)
        << secret.error().detail;
}

TEST_F(TokenFile, AFileOwnedByAnotherUserIsRefusedNamingItsOwner) {
    if (::geteuid() != 0) {
        GTEST_SKIP() << "giving a file to another user needs root";
    }
    write("correct-horse-battery-staple", 0600);
    ASSERT_EQ(::chown(path_.c_str(), 65534, 65534), 0);
    auto secret = Secret::from_token_file(path_);
    ASSERT_FALSE(secret);
    EXPECT_EQ(secret.error().code, Errc::PermissionDenied);
    EXPECT_NE(secret.error().detail.find("owned by uid 65534, not by this user"), std::string::npos)
        << secret.error().detail;
}

TEST_F(TokenFile, ShortEmptyOrMissingIsRefused) {
    write("short", 0600);
    EXPECT_EQ(Secret::from_token_file(path_).error().code, Errc::InvalidArgument);
    write("", 0600);
    EXPECT_FALSE(Secret::from_token_file(path_));
    auto missing = Secret::from_token_file("/nonexistent/token");
    ASSERT_FALSE(missing);
    EXPECT_NE(missing.error().detail.find("/nonexistent/token"), std::string::npos);
    EXPECT_FALSE(Secret::from_token_file("/tmp"));  // a directory
}

TEST(Proofs, DependOnSecretLabelAndEveryHelloField) {
    Secret a = secret_of("0123456789abcdef0123");
    Secret b = secret_of("0123456789abcdef0124");
    const Hello hello{.min_version = 1,
                      .max_version = 1,
                      .role = Role::Bulk,
                      .bulk_index = 2,
                      .auth = AuthMode::HmacSha256,
                      .session_id = 0x1122334455667788,
                      .client_nonce = fresh_nonce()};
    Nonce ns = fresh_nonce();
    EXPECT_TRUE(proofs_equal(server_proof(a, hello, ns), server_proof(a, hello, ns)));
    EXPECT_TRUE(proofs_equal(client_proof(a, hello, ns), client_proof(a, hello, ns)));
    EXPECT_FALSE(proofs_equal(server_proof(a, hello, ns), server_proof(b, hello, ns)));
    EXPECT_FALSE(proofs_equal(client_proof(a, hello, ns), client_proof(b, hello, ns)));
    EXPECT_FALSE(proofs_equal(server_proof(a, hello, ns), client_proof(a, hello, ns)));
    EXPECT_FALSE(proofs_equal(client_proof(a, hello, ns), client_proof(a, hello, fresh_nonce())));
    EXPECT_FALSE(proofs_equal(server_proof(a, hello, ns), server_proof(a, hello, fresh_nonce())));
    // Each field of HELLO on its own: a proof made for one HELLO never passes for another, so a
    // man in the middle cannot change the role, the session, the versions or the mode.
    std::vector<std::pair<const char*, std::function<void(Hello&)>>> changes{
        {"min_version", [](Hello& h) { h.min_version = 2; }},
        {"max_version", [](Hello& h) { h.max_version = 2; }},
        {"role", [](Hello& h) { h.role = Role::Urgent; }},
        {"bulk_index", [](Hello& h) { h.bulk_index = 3; }},
        {"auth", [](Hello& h) { h.auth = AuthMode::None; }},
        {"session_id", [](Hello& h) { h.session_id ^= 1U << 20; }},
        {"client_nonce", [](Hello& h) { h.client_nonce[31] ^= std::byte{0x80}; }},
    };
    for (const auto& [field, change] : changes) {
        Hello other = hello;
        change(other);
        ASSERT_NE(encode(other), encode(hello)) << field << " did not change the HELLO";
        EXPECT_FALSE(proofs_equal(client_proof(a, hello, ns), client_proof(a, other, ns)))
            << "the client proof ignores " << field;
        EXPECT_FALSE(proofs_equal(server_proof(a, hello, ns), server_proof(a, other, ns)))
            << "the server proof ignores " << field;
    }
}

TEST(Proofs, NoncesAreFresh) {
    std::set<Nonce> seen;
    for (int i = 0; i < 100; ++i) {
        EXPECT_TRUE(seen.insert(fresh_nonce()).second);
    }
}

Frame parse_one(const std::vector<std::byte>& bytes) {
    FrameDecoder decoder;
    decoder.feed(bytes);
    auto frame = decoder.next();
    EXPECT_TRUE(frame && frame->has_value());
    return std::move(**frame);
}

struct Outcome {
    std::optional<Joined> client;
    std::optional<Joined> server;
    std::optional<Failure> client_failed;
    std::optional<Failure> server_failed;
};

// Runs both state machines against each other in memory.
Outcome run(ClientHandshakeConfig client_config, ServerHandshakeConfig server_config) {
    ClientHandshake client(client_config);
    ServerHandshake server(std::move(server_config));
    Outcome out;
    std::vector<std::byte> to_server = client.start();
    for (int round = 0; round < 4 && !to_server.empty(); ++round) {
        auto s = server.on_frame(parse_one(to_server));
        out.server = s.joined;
        out.server_failed = s.failed;
        to_server.clear();
        if (s.send.empty()) {
            break;
        }
        auto c = client.on_frame(parse_one(s.send));
        out.client = c.joined;
        out.client_failed = c.failed;
        to_server = c.send;
    }
    return out;
}

ServerHandshakeConfig server_with(const Secret* secret) {
    return {.secret = secret,
            .max_bulk_channels = 4,
            .may_join = [](std::uint64_t session,
                           std::uint8_t index) { return session == 77 && index < 2; },
            .new_session_id = [] { return std::uint64_t{77}; }};
}

TEST(Handshake, SameSecretJoinsAnUrgentConnectionToANewSession) {
    Secret secret = secret_of("a-shared-secret-of-enough-length");
    auto out = run({.secret = &secret, .role = Role::Urgent}, server_with(&secret));
    ASSERT_TRUE(out.server) << (out.server_failed ? out.server_failed->detail : "");
    ASSERT_TRUE(out.client) << (out.client_failed ? out.client_failed->detail : "");
    EXPECT_EQ(out.server->session_id, 77u);
    EXPECT_EQ(out.client->session_id, 77u);
    EXPECT_EQ(out.client->max_bulk_channels, 4);
}

TEST(Handshake, BulkConnectionJoinsAnExistingSession) {
    Secret secret = secret_of("a-shared-secret-of-enough-length");
    auto out = run({.secret = &secret, .role = Role::Bulk, .session_id = 77, .bulk_index = 1},
                   server_with(&secret));
    ASSERT_TRUE(out.server && out.client);
    EXPECT_EQ(out.server->role, Role::Bulk);
    EXPECT_EQ(out.server->bulk_index, 1);
}

TEST(Handshake, BulkConnectionWithAForeignSessionIsRefused) {
    Secret secret = secret_of("a-shared-secret-of-enough-length");
    auto out = run({.secret = &secret, .role = Role::Bulk, .session_id = 78, .bulk_index = 0},
                   server_with(&secret));
    EXPECT_FALSE(out.server);
    EXPECT_FALSE(out.client);
    ASSERT_TRUE(out.client_failed);
    // A session the server no longer knows is one it ended: a break to recover from by making a
    // new session, not a refusal to give up on.
    EXPECT_EQ(out.client_failed->code, Errc::PeerLost);
    EXPECT_NE(out.client_failed->detail.find("unknown session"), std::string::npos);
}

TEST(Handshake, WrongSecretIsRefusedByTheClientBeforeItProvesAnything) {
    Secret client_secret = secret_of("a-shared-secret-of-enough-length");
    Secret server_secret = secret_of("another-secret-of-enough-length!");
    auto out = run({.secret = &client_secret, .role = Role::Urgent}, server_with(&server_secret));
    EXPECT_FALSE(out.server);
    ASSERT_TRUE(out.client_failed);
    EXPECT_NE(out.client_failed->detail.find("server proof"), std::string::npos);
}

TEST(Handshake, MissingSecretOnEitherSideIsRefused) {
    Secret secret = secret_of("a-shared-secret-of-enough-length");
    auto no_client_secret = run({.secret = nullptr, .role = Role::Urgent}, server_with(&secret));
    EXPECT_FALSE(no_client_secret.server);
    ASSERT_TRUE(no_client_secret.server_failed);
    EXPECT_NE(no_client_secret.server_failed->detail.find("requires hmac-sha256"),
              std::string::npos);
    auto no_server_secret = run({.secret = &secret, .role = Role::Urgent}, server_with(nullptr));
    EXPECT_FALSE(no_server_secret.server);
    EXPECT_FALSE(no_server_secret.client);
    // Refused by the server's own rule, at once: not a client left waiting.
    ASSERT_TRUE(no_server_secret.server_failed);
    EXPECT_EQ(no_server_secret.server_failed->code, Errc::PermissionDenied)
        << no_server_secret.server_failed->detail;
    EXPECT_NE(no_server_secret.server_failed->detail.find(
                  "client authenticates with hmac-sha256, server requires none"),
              std::string::npos)
        << no_server_secret.server_failed->detail;
    ASSERT_TRUE(no_server_secret.client_failed);
    EXPECT_NE(no_server_secret.client_failed->detail.find("peer refused: authentication failed"),
              std::string::npos)
        << no_server_secret.client_failed->detail;
}

TEST(Handshake, InsecureModeNeedsNoSecretOnEitherSide) {
    auto out = run({.secret = nullptr, .role = Role::Urgent}, server_with(nullptr));
    EXPECT_TRUE(out.server && out.client);
}

TEST(Handshake, ReplayedResponseIsRefused) {
    Secret secret = secret_of("a-shared-secret-of-enough-length");
    // Record a good handshake.
    ClientHandshake client({.secret = &secret, .role = Role::Urgent});
    ServerHandshake first(server_with(&secret));
    auto hello = client.start();
    auto challenge = first.on_frame(parse_one(hello));
    auto response = client.on_frame(parse_one(challenge.send));
    ASSERT_TRUE(first.on_frame(parse_one(response.send)).joined);
    // Replay HELLO and RESPONSE to a fresh server: its new nonce makes the proof stale.
    ServerHandshake second(server_with(&secret));
    ASSERT_FALSE(second.on_frame(parse_one(hello)).failed);
    auto replay = second.on_frame(parse_one(response.send));
    EXPECT_FALSE(replay.joined);
    ASSERT_TRUE(replay.failed);
    EXPECT_EQ(replay.failed->code, Errc::PermissionDenied);
    auto sent = parse_one(replay.send);
    EXPECT_EQ(sent.header.type, FrameType::Error);
    EXPECT_EQ(decode_error(sent.payload)->code, ErrorCode::AuthFailed);
}

TEST(Handshake, ServerRefusesFramesOutOfOrder) {
    ServerHandshake server(server_with(nullptr));
    auto step = server.on_frame(parse_one(frame_of(FrameType::Response, Response{})));
    ASSERT_TRUE(step.failed);
    EXPECT_NE(step.failed->detail.find("expected HELLO"), std::string::npos);
    auto again = server.on_frame(parse_one(frame_of(FrameType::Response, Response{})));
    EXPECT_TRUE(again.failed);  // finished: never accepts anything later
}

TEST(Handshake, ApplicationDataBeforeAcceptIsRefused) {
    ServerHandshake server(server_with(nullptr));
    auto step = server.on_frame(parse_one(encode_frame(FrameType::FirstApplication, {})));
    EXPECT_TRUE(step.failed);
    ClientHandshake client({.secret = nullptr, .role = Role::Urgent});
    (void)client.start();
    auto c = client.on_frame(parse_one(encode_frame(FrameType::FirstApplication, {})));
    EXPECT_TRUE(c.failed);
}

TEST(Handshake, VersionMismatchNamesBothRanges) {
    ServerHandshake server(server_with(nullptr));
    Hello hello{.min_version = 5,
                .max_version = 9,
                .role = Role::Urgent,
                .auth = AuthMode::None,
                .client_nonce = {}};
    auto step = server.on_frame(parse_one(frame_of(FrameType::Hello, hello)));
    ASSERT_TRUE(step.failed);
    EXPECT_NE(step.failed->detail.find("5..9"), std::string::npos) << step.failed->detail;
}

TEST(Endpoint, ParsesTcpV4V6NamesAndUnix) {
    auto v4 = parse_endpoint("tcp:127.0.0.1:4000");
    ASSERT_TRUE(v4);
    EXPECT_EQ(v4->host, "127.0.0.1");
    EXPECT_EQ(v4->port, 4000);
    EXPECT_TRUE(v4->is_loopback());
    auto v6 = parse_endpoint("tcp:[::1]:0");
    ASSERT_TRUE(v6);
    EXPECT_EQ(v6->host, "::1");
    EXPECT_TRUE(v6->is_loopback());
    EXPECT_EQ(v6->to_string(), "tcp:[::1]:0");
    auto name = parse_endpoint("tcp:localhost:65535");
    ASSERT_TRUE(name);
    EXPECT_TRUE(name->is_loopback());
    auto unix_socket = parse_endpoint("unix:/run/uffdm.sock");
    ASSERT_TRUE(unix_socket);
    EXPECT_EQ(unix_socket->path, "/run/uffdm.sock");
    EXPECT_TRUE(unix_socket->is_loopback());
    EXPECT_FALSE(parse_endpoint("tcp:10.0.0.1:4000")->is_loopback());
    EXPECT_FALSE(parse_endpoint("tcp:0.0.0.0:4000")->is_loopback());
    EXPECT_FALSE(parse_endpoint("tcp:[::]:4000")->is_loopback());
}

TEST(Endpoint, RejectsMalformedAddressesWithTheReason) {
    for (const char* bad :
         {"", "udp:1.2.3.4:5", "tcp:1.2.3.4", "tcp::80", "tcp:host:65536", "tcp:host:-1",
          "tcp:host:80x", "tcp:::1:80", "tcp:[::1]80", "tcp:[nothex]:80", "unix:"}) {
        auto e = parse_endpoint(bad);
        ASSERT_FALSE(e) << bad;
        EXPECT_EQ(e.error().code, Errc::InvalidArgument);
        EXPECT_NE(e.error().detail.find("expected tcp:HOST:PORT"), std::string::npos);
    }
    EXPECT_FALSE(parse_endpoint("unix:/" + std::string(200, 'a')));
}

}  // namespace
}  // namespace uffdm::transport
