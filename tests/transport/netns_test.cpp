// netns_test.cpp — The handshake between two "hosts": network namespaces joined by veth.
#include <gtest/gtest.h>

#include <future>

#include "tests/support/data_path_support.hpp"
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

TEST_F(TwoHosts, DataPathCarriesFramesAcrossTheLinkOnBothBackends) {
    for (Backend backend : {Backend::IoUring, Backend::Asio}) {
        SCOPED_TRACE(std::string(to_string(backend)));
        Secret secret = secret_of("a-shared-secret-of-enough-length");
        asio::io_context io;
        ASSERT_TRUE(hosts_.enter(hosts_.a()));
        ListenerOptions options;
        options.endpoint = *parse_endpoint(std::string("tcp:") + test::NetnsPair::kAddressA + ":0");
        options.secret = &secret;
        std::optional<Connection> server_side;
        auto listener =
            Listener::open(io, options, [&](Connection c) { server_side.emplace(std::move(c)); });
        ASSERT_TRUE(hosts_.leave());
        ASSERT_TRUE(listener) << listener.error().detail;
        (*listener)->start();
        // The client's socket is made while this thread is in B.
        ASSERT_TRUE(hosts_.enter(hosts_.b()));
        std::optional<Connection> client_side;
        asio::co_spawn(
            io,
            [&]() -> asio::awaitable<void> {
                auto socket = co_await connect_to((*listener)->local_endpoint(), {});
                if (socket) {
                    auto c = co_await client_handshake(
                        std::move(*socket), {.secret = &secret, .role = Role::Urgent}, {});
                    if (c) {
                        client_side.emplace(std::move(*c));
                    }
                }
            },
            asio::detached);
        auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        while ((!client_side || !server_side) && std::chrono::steady_clock::now() < deadline) {
            io.run_one_for(std::chrono::milliseconds(50));
        }
        ASSERT_TRUE(hosts_.leave());
        ASSERT_TRUE(client_side && server_side);

        auto payload = test::pattern(300 << 10, 11);
        test::Recorder sender;
        test::Recorder receiver;
        DataPathOptions o;
        o.backend = backend;
        test::Running a(o);
        test::Running b(o);
        for (int i = 0; i < 64; ++i) {
            sender.queue(payload, static_cast<std::uint64_t>(i));
        }
        ChannelId out = a->add(std::move(*client_side), sender);
        b->add(std::move(*server_side), receiver);
        a->want_send(out);
        ASSERT_TRUE(receiver.wait([](test::Recorder& r) { return r.received_.size() == 64; }));
        std::lock_guard lock(receiver.mutex_);
        for (const auto& got : receiver.received_) {
            ASSERT_EQ(got.payload, payload);
        }
        (*listener)->stop();
    }
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
