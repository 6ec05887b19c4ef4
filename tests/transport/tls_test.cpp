// tls_test.cpp — TLS 1.3 with real certificates: mutual authentication, refusals, ciphertext.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <mutex>
#include <span>
#include <vector>

#include "tests/support/data_path_support.hpp"
#include "tests/support/tcp_relay.hpp"
#include "tests/support/tls_support.hpp"
#include "tests/support/transport_support.hpp"
#include "transport/listener.hpp"

namespace uffdm::transport {
namespace {

using test::kApp;
using test::pattern;
using test::Recorder;
using test::Running;

class Tls : public ::testing::Test {
  protected:
    void SetUp() override {
        if (!pki_.available()) {
            GTEST_SKIP() << pki_.why();
        }
    }
    std::shared_ptr<TlsContext> server(const std::string& leaf = "server",
                                       const std::string& client_ca = "ca") {
        auto ctx = TlsContext::create(TlsContext::Side::Server,
                                      {.certificate = pki_.pem(leaf),
                                       .private_key = pki_.key(leaf),
                                       .trusted_ca = client_ca.empty() ? "" : pki_.pem(client_ca),
                                       .server_name = ""});
        EXPECT_TRUE(ctx) << ctx.error().detail;
        return ctx ? *ctx : nullptr;
    }
    std::shared_ptr<TlsContext> client(const std::string& leaf = "client",
                                       const std::string& ca = "ca",
                                       const std::string& name = "localhost") {
        auto ctx = TlsContext::create(TlsContext::Side::Client,
                                      {.certificate = leaf.empty() ? "" : pki_.pem(leaf),
                                       .private_key = leaf.empty() ? "" : pki_.key(leaf),
                                       .trusted_ca = pki_.pem(ca),
                                       .server_name = name});
        EXPECT_TRUE(ctx) << ctx.error().detail;
        return ctx ? *ctx : nullptr;
    }
    test::TestPki pki_;
};

// Forwards bytes between a client and the real server, keeping what the client sent: what an
// eavesdropper on the wire would see.
class Tap {
  public:
    explicit Tap(std::uint16_t server_port)
        : relay_(server_port, [this](std::span<const std::byte> pending) {
              std::lock_guard lock(mutex_);
              seen_.insert(seen_.end(), pending.begin(), pending.end());
              return test::TcpRelay::Verdict{.forward = pending.size()};
          }) {}
    [[nodiscard]] std::uint16_t port() const { return relay_.port(); }
    std::vector<std::byte> seen() {
        std::lock_guard lock(mutex_);
        return seen_;
    }

  private:
    std::mutex mutex_;
    std::vector<std::byte> seen_;
    test::TcpRelay relay_;  // last: it stops before what its callback uses goes
};

class TlsDataPath : public Tls, public ::testing::WithParamInterface<Backend> {};

TEST_P(TlsDataPath, MutualTlsCarriesFramesBothWaysAndTheWireShowsOnlyCiphertext) {
    // A listener behind a tap: the client connects to the tap, which forwards to the listener.
    asio::io_context io;
    std::optional<Connection> server_side;
    ListenerOptions options;
    options.endpoint = *parse_endpoint("tcp:127.0.0.1:0");
    options.tls = server();
    auto listener =
        Listener::open(io, options, [&](Connection c) { server_side.emplace(std::move(c)); });
    ASSERT_TRUE(listener) << listener.error().detail;
    (*listener)->start();
    Tap tap((*listener)->local_endpoint().port);
    std::optional<std::expected<Connection, Failure>> client_side;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
            auto socket = co_await connect_to(
                *parse_endpoint("tcp:127.0.0.1:" + std::to_string(tap.port())), {});
            if (!socket) {
                client_side.emplace(std::unexpected(socket.error()));
                co_return;
            }
            client_side.emplace(co_await client_handshake(std::move(*socket),
                                                          {.role = Role::Urgent}, {}, client()));
        },
        asio::detached);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while ((!client_side || !server_side) && std::chrono::steady_clock::now() < deadline) {
        io.run_one_for(std::chrono::milliseconds(50));
    }
    ASSERT_TRUE(client_side);
    ASSERT_TRUE(*client_side) << client_side->error().detail;
    ASSERT_TRUE(server_side);
    EXPECT_TRUE((*client_side)->is_tls());

    // A payload with a recognisable marker, sent through the data path in both directions.
    // The right side keeps every frame in its small ring (68 KiB: 16 of them) until this thread
    // has checked it and released it: decrypted records wait in OpenSSL meanwhile.
    auto marker = pattern(4096, 42);
    std::vector<std::vector<std::byte>> numbered;
    for (int i = 0; i < 40; ++i) {
        numbered.push_back(pattern(4096, static_cast<unsigned>(i) + 7));
        std::copy(marker.begin(), marker.begin() + 64, numbered.back().begin());
    }
    Recorder left;
    Recorder right;
    right.keep_ = true;
    DataPathOptions o;
    o.backend = GetParam();
    DataPathOptions small = o;
    small.max_payload = 64U << 10;
    small.receive_ring_bytes = 64U << 10;
    Running a(o);
    Running b(small);
    for (int i = 0; i < 40; ++i) {
        left.queue(numbered[static_cast<std::size_t>(i)], static_cast<std::uint64_t>(i));
        right.queue(marker, static_cast<std::uint64_t>(i));
    }
    ChannelId l = a->add(std::move(**client_side), left);
    ChannelId r = b->add(std::move(*server_side), right);
    a->want_send(l);
    b->want_send(r);
    ASSERT_TRUE(left.wait([](Recorder& x) { return x.received_.size() == 40; }));
    ASSERT_TRUE(right.wait([](Recorder& x) { return x.received_.size() >= 16; }));
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    std::size_t released = 0;
    {
        std::lock_guard lock(right.mutex_);
        ASSERT_LT(right.received_.size(), 40U) << "the full ring of kept frames did not stop it";
    }
    for (int turn = 0; turn < 500 && released < 40; ++turn) {
        std::vector<std::uint64_t> tickets;
        {
            std::lock_guard lock(right.mutex_);
            for (; released < right.kept_.size(); ++released) {
                const auto& kept = right.kept_[released].payload;
                ASSERT_TRUE(std::equal(kept.begin(), kept.end(), numbered[released].begin(),
                                       numbered[released].end()))
                    << "kept frame " << released << " was written over";
                tickets.push_back(right.kept_[released].ticket);
            }
        }
        for (auto ticket : tickets) {
            b->release(r, ticket);
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ASSERT_EQ(released, 40U);
    auto wire = tap.seen();
    auto found = std::search(wire.begin(), wire.end(), marker.begin(), marker.begin() + 64);
    EXPECT_EQ(found, wire.end()) << "plaintext on the wire";
    EXPECT_GT(wire.size(), 40u * 4096u);
    (*listener)->stop();
}

INSTANTIATE_TEST_SUITE_P(Backends, TlsDataPath, ::testing::Values(Backend::IoUring, Backend::Asio),
                         [](const auto& info) {
                             return info.param == Backend::IoUring ? std::string("IoUring")
                                                                   : std::string("Asio");
                         });

// The listener refused the one connection (not a timeout, not a join), and the client failed
// with words naming why, not with "did not join within 10 s".
void expect_refused(const test::JoinedPair& pair, const std::string& client_words) {
    EXPECT_FALSE(pair.client.has_value());
    EXPECT_FALSE(pair.server.has_value());
    EXPECT_EQ(pair.server_stats.refused, 1u);
    EXPECT_EQ(pair.server_stats.timed_out, 0u);
    EXPECT_EQ(pair.server_stats.joined, 0u);
    ASSERT_TRUE(pair.client_failure) << pair.error;
    EXPECT_NE(pair.client_failure->detail.find(client_words), std::string::npos)
        << pair.client_failure->detail;
}

TEST_F(Tls, ClientWithoutACertificateIsRefusedByAMutualTlsServer) {
    auto pair = test::joined_pair("tcp:127.0.0.1:0", nullptr, server(), client(""));
    expect_refused(*pair, "certificate required");
}

TEST_F(Tls, ClientCertificateFromAnotherCaIsRefused) {
    auto pair = test::joined_pair("tcp:127.0.0.1:0", nullptr, server(), client("rogue-client"));
    expect_refused(*pair, "unknown ca");
}

TEST_F(Tls, ServerCertificateFromAnotherCaIsRefusedByTheClient) {
    auto pair = test::joined_pair("tcp:127.0.0.1:0", nullptr, server("rogue-server"), client());
    expect_refused(*pair, "certificate");
}

TEST_F(Tls, ServerNameThatTheCertificateDoesNotCarryIsRefused) {
    auto pair = test::joined_pair("tcp:127.0.0.1:0", nullptr, server(),
                                  client("client", "ca", "not-this-host.example"));
    expect_refused(*pair, "certificate");
}

TEST_F(Tls, PlainClientAtATlsServerAndTlsClientAtAPlainServerBothFail) {
    auto plain_client = test::joined_pair("tcp:127.0.0.1:0", nullptr, server(), nullptr);
    expect_refused(*plain_client, "accepts only TLS 1.3 connections");
    auto plain_server = test::joined_pair("tcp:127.0.0.1:0", nullptr, nullptr, client());
    expect_refused(*plain_server, "answered without TLS");
}

TEST_F(Tls, TokenAndTlsTogetherAuthenticateTwice) {
    auto secret = test::secret_of("a-shared-secret-of-enough-length");
    auto pair = test::joined_pair("tcp:127.0.0.1:0", &secret, server("server", ""), client(""));
    ASSERT_TRUE(pair->error.empty()) << pair->error;
    EXPECT_TRUE(pair->client->is_tls());
}

TEST_F(Tls, AWrongTokenOverTlsIsRefusedByTheHmacStep) {
    // TLS alone would let this client in (the server asks no client certificate): only the
    // token's proof can refuse it, so the refusal shows that step ran inside TLS.
    auto server_secret = test::secret_of("a-shared-secret-of-enough-length");
    auto client_secret = test::secret_of("another-secret-of-enough-length");
    auto pair = test::joined_pair("tcp:127.0.0.1:0", &server_secret, server("server", ""),
                                  client(""), &client_secret);
    expect_refused(*pair, "server proof does not match");
}

TEST_F(Tls, PrivateKeyReadableByOthersIsRefused) {
    ::chmod(pki_.key("server").c_str(), 0644);
    auto ctx = TlsContext::create(TlsContext::Side::Server, {.certificate = pki_.pem("server"),
                                                             .private_key = pki_.key("server"),
                                                             .trusted_ca = "",
                                                             .server_name = ""});
    ASSERT_FALSE(ctx);
    EXPECT_EQ(ctx.error().code, Errc::PermissionDenied);
    EXPECT_NE(ctx.error().detail.find("chmod 600"), std::string::npos);
}

TEST_F(Tls, ImpossibleConfigurationsAreRefusedWithTheReason) {
    auto no_ca = TlsContext::create(TlsContext::Side::Client, {});
    ASSERT_FALSE(no_ca);
    EXPECT_NE(no_ca.error().detail.find("CA"), std::string::npos);
    auto no_cert = TlsContext::create(
        TlsContext::Side::Server,
        {.certificate = "", .private_key = "", .trusted_ca = pki_.pem("ca"), .server_name = ""});
    EXPECT_FALSE(no_cert);
    auto missing =
        TlsContext::create(TlsContext::Side::Client, {.certificate = "",
                                                      .private_key = "",
                                                      .trusted_ca = "/nonexistent/ca.pem",
                                                      .server_name = ""});
    ASSERT_FALSE(missing);
    EXPECT_NE(missing.error().detail.find("/nonexistent/ca.pem"), std::string::npos);
    auto mismatched =
        TlsContext::create(TlsContext::Side::Server, {.certificate = pki_.pem("server"),
                                                      .private_key = pki_.key("client"),
                                                      .trusted_ca = "",
                                                      .server_name = ""});
    EXPECT_FALSE(mismatched);
}

TEST_F(Tls, NonLoopbackListenerNeedsClientAuthenticationNotJustTls) {
    asio::io_context io;
    ListenerOptions options;
    options.endpoint = *parse_endpoint("tcp:0.0.0.0:0");
    options.tls = server("server", "");  // encrypts, but anyone may connect
    auto open = Listener::open(io, options, [](Connection) {});
    ASSERT_FALSE(open);
    EXPECT_EQ(open.error().code, Errc::PermissionDenied);
    options.tls = server("server", "ca");  // mutual TLS: clients are known
    EXPECT_TRUE(Listener::open(io, options, [](Connection) {}));
}

}  // namespace
}  // namespace uffdm::transport
