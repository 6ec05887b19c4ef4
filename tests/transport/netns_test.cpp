// netns_test.cpp — The handshake between two "hosts": network namespaces joined by veth.
#include <gtest/gtest.h>

#include <future>

#include "tests/support/netns.hpp"
#include "transport/listener.hpp"

namespace uffdm::transport {
namespace {

Secret secret_of(const std::string& text) {
    std::vector<std::byte> key;
    for (char c : text) {
        key.push_back(static_cast<std::byte>(c));
    }
    return *Secret::from_bytes(key);
}

std::expected<Joined, Failure> join(const Endpoint& endpoint, ClientHandshakeConfig config) {
    asio::io_context io;
    auto result = asio::co_spawn(
        io,
        [&]() -> asio::awaitable<std::expected<Joined, Failure>> {
            auto socket = co_await connect_to(endpoint, {});
            if (!socket) {
                co_return std::unexpected(socket.error());
            }
            auto connection = co_await client_handshake(std::move(*socket), config, {});
            if (!connection) {
                co_return std::unexpected(connection.error());
            }
            co_return connection->joined();
        },
        asio::use_future);
    io.run();
    return result.get();
}

class TwoHosts : public ::testing::Test {
  protected:
    void SetUp() override {
        if (!hosts_.available()) {
            GTEST_SKIP() << "two-host tests need network namespaces: " << hosts_.why();
        }
    }
    test::NetnsPair hosts_;
};

TEST_F(TwoHosts, AuthenticatedSessionAcrossAVethLink) {
    Secret secret = secret_of("a-shared-secret-of-enough-length");
    asio::io_context io;
    ASSERT_TRUE(hosts_.enter(hosts_.a()));
    ListenerOptions options;
    options.endpoint = *parse_endpoint(std::string("tcp:") + test::NetnsPair::kAddressA + ":0");
    options.secret = &secret;
    std::vector<Joined> joined;
    std::vector<std::shared_ptr<Connection>> keep;
    auto listener = Listener::open(io, options, [&](Connection c) {
        joined.push_back(c.joined());
        keep.push_back(std::make_shared<Connection>(std::move(c)));
    });
    ASSERT_TRUE(hosts_.leave());
    ASSERT_TRUE(listener) << listener.error().detail;
    (*listener)->start();
    std::thread server([&] { io.run_for(std::chrono::seconds(10)); });

    // The client runs on host B: its socket is created in B's namespace.
    ASSERT_TRUE(hosts_.enter(hosts_.b()));
    Endpoint remote = (*listener)->local_endpoint();
    auto urgent = join(remote, {.secret = &secret, .role = Role::Urgent});
    auto bulk = urgent ? join(remote, {.secret = &secret,
                                       .role = Role::Bulk,
                                       .session_id = urgent->session_id,
                                       .bulk_index = 0})
                       : urgent;
    auto wrong = join(remote, {.secret = nullptr, .role = Role::Urgent});
    // From B, A's address is reachable only over the veth link; loopback in B has nothing.
    auto local = join(*parse_endpoint("tcp:127.0.0.1:" + std::to_string(remote.port)),
                      {.secret = &secret, .role = Role::Urgent});
    ASSERT_TRUE(hosts_.leave());
    (*listener)->stop();
    io.stop();
    server.join();

    ASSERT_TRUE(urgent) << urgent.error().detail;
    ASSERT_TRUE(bulk) << bulk.error().detail;
    EXPECT_EQ(bulk->session_id, urgent->session_id);
    EXPECT_FALSE(wrong);
    EXPECT_FALSE(local);
    EXPECT_EQ(joined.size(), 2u);
}

TEST_F(TwoHosts, UnauthenticatedListenerOnTheLinkAddressIsRefused) {
    asio::io_context io;
    ASSERT_TRUE(hosts_.enter(hosts_.a()));
    ListenerOptions options;
    options.endpoint = *parse_endpoint(std::string("tcp:") + test::NetnsPair::kAddressA + ":0");
    auto refused = Listener::open(io, options, [](Connection) {});
    options.insecure = true;
    auto insecure = Listener::open(io, options, [](Connection) {});
    ASSERT_TRUE(hosts_.leave());
    ASSERT_FALSE(refused);
    EXPECT_EQ(refused.error().code, Errc::PermissionDenied);
    EXPECT_TRUE(insecure) << insecure.error().detail;
}

}  // namespace
}  // namespace uffdm::transport
