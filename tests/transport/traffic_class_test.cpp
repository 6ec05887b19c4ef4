// traffic_class_test.cpp — Marks on real connected sockets: DSCP, priority, unsent backlog.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "transport/traffic_class.hpp"

namespace uffdm::transport {
namespace {

// A connected TCP client socket on loopback (IPv4 or IPv6), with its listener and accepted end.
struct TcpPair {
    int listener = -1;
    int client = -1;
    int server = -1;
    explicit TcpPair(int family) {
        listener = ::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_storage addr{};
        socklen_t length = 0;
        if (family == AF_INET) {
            auto* a = reinterpret_cast<sockaddr_in*>(&addr);
            a->sin_family = AF_INET;
            a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            length = sizeof *a;
        } else {
            auto* a = reinterpret_cast<sockaddr_in6*>(&addr);
            a->sin6_family = AF_INET6;
            a->sin6_addr = in6addr_loopback;
            length = sizeof *a;
        }
        if (::bind(listener, reinterpret_cast<sockaddr*>(&addr), length) != 0 ||
            ::listen(listener, 1) != 0 ||
            ::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &length) != 0) {
            return;
        }
        client = ::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (::connect(client, reinterpret_cast<sockaddr*>(&addr), length) == 0) {
            server = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
        }
    }
    ~TcpPair() {
        for (int fd : {listener, client, server}) {
            if (fd >= 0) {
                ::close(fd);
            }
        }
    }
};

int option(int fd, int level, int name) {
    int value = -1;
    socklen_t length = sizeof value;
    EXPECT_EQ(::getsockopt(fd, level, name, &value, &length), 0) << name;
    return value;
}

class Marks : public ::testing::TestWithParam<int> {};

TEST_P(Marks, UrgentAndBulkConnectionsCarryTheirDscpPriorityAndBacklog) {
    const int family = GetParam();
    TcpPair urgent(family);
    TcpPair bulk(family);
    if (urgent.server < 0 || bulk.server < 0) {
        GTEST_SKIP() << "no loopback for this address family here";
    }
    TrafficMarking marking;
    ASSERT_TRUE(mark_connection(urgent.client, true, marking));
    ASSERT_TRUE(mark_connection(bulk.server, false, marking));
    const int level = family == AF_INET ? IPPROTO_IP : IPPROTO_IPV6;
    const int tos = family == AF_INET ? IP_TOS : IPV6_TCLASS;
    EXPECT_EQ(option(urgent.client, level, tos), 46 << 2);  // EF
    EXPECT_EQ(option(bulk.server, level, tos), 8 << 2);     // CS1
    EXPECT_EQ(option(urgent.client, SOL_SOCKET, SO_PRIORITY), 6);
    EXPECT_EQ(option(bulk.server, SOL_SOCKET, SO_PRIORITY), 2);
    EXPECT_EQ(option(bulk.server, IPPROTO_TCP, TCP_NOTSENT_LOWAT), 256 << 10);

    // Configured values, and marking off leaves a fresh socket as the system made it.
    marking.urgent_dscp = 34;  // AF41
    marking.bulk_unsent_bytes = 64 << 10;
    ASSERT_TRUE(mark_connection(urgent.server, true, marking));
    ASSERT_TRUE(mark_connection(bulk.client, false, marking));
    EXPECT_EQ(option(urgent.server, level, tos), 34 << 2);
    EXPECT_EQ(option(bulk.client, IPPROTO_TCP, TCP_NOTSENT_LOWAT), 64 << 10);
    TcpPair plain(family);
    int before = option(plain.client, level, tos);
    marking.enabled = false;
    ASSERT_TRUE(mark_connection(plain.client, true, marking));
    EXPECT_EQ(option(plain.client, level, tos), before);
}

INSTANTIATE_TEST_SUITE_P(Families, Marks, ::testing::Values(AF_INET, AF_INET6),
                         [](const auto& info) { return info.param == AF_INET ? "ipv4" : "ipv6"; });

TEST(Marks, AUnixSocketIsLeftAloneAndAClosedOneIsAnError) {
    int pair[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
    EXPECT_TRUE(mark_connection(pair[0], true, TrafficMarking{}));
    ::close(pair[0]);
    ::close(pair[1]);
    auto closed = mark_connection(pair[0], true, TrafficMarking{});
    ASSERT_FALSE(closed);
    EXPECT_EQ(closed.error().value(), EBADF);
}

}  // namespace
}  // namespace uffdm::transport
