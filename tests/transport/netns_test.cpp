// netns_test.cpp — The handshake between two "hosts": network namespaces joined by veth.
#include <gtest/gtest.h>

#include <future>

#include "tests/support/netns.hpp"
#include "tests/support/transport_support.hpp"
#include "transport/listener.hpp"

namespace uffdm::transport {
namespace {

using test::join;
using test::secret_of;

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
