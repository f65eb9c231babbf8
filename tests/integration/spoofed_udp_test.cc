// The forged-source sender the attack suites rely on: a datagram sent "from" another loopback
// address arrives with that source, and an answer sent back reaches a socket bound there.
#include "tests/integration/spoofed_udp.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <set>
#include <string>

namespace tether::testing {
namespace {

int BoundUdp(const std::string& ip, uint16_t* port) {
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(*port);
  inet_pton(AF_INET, ip.c_str(), &a.sin_addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return -1;
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  *port = ntohs(a.sin_port);
  return fd;
}

TEST(SpoofedUdp, DatagramArrivesWithTheForgedSourceAndAnswersReachIt) {
  uint16_t server_port = 0, victim_port = 0;
  int server = BoundUdp("127.0.0.1", &server_port);
  const std::string victim_ip = SpoofedUdp::LoopbackSource(7);
  int victim = BoundUdp(victim_ip, &victim_port);
  ASSERT_GE(server, 0);
  ASSERT_GE(victim, 0);

  SpoofedUdp spoof;
  ASSERT_TRUE(spoof.Send(victim_ip, victim_port, "127.0.0.1", server_port, "hello"));

  pollfd p{server, POLLIN, 0};
  ASSERT_EQ(poll(&p, 1, 2000), 1);
  char buf[64];
  sockaddr_in from{};
  socklen_t len = sizeof from;
  ssize_t n = recvfrom(server, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &len);
  ASSERT_EQ(std::string(buf, n), "hello");
  char ip[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &from.sin_addr, ip, sizeof ip);
  EXPECT_EQ(std::string(ip), victim_ip);
  EXPECT_EQ(ntohs(from.sin_port), victim_port);

  // The server's answer goes to the forged source: the victim's socket sees it.
  ASSERT_EQ(sendto(server, "back", 4, 0, reinterpret_cast<sockaddr*>(&from), len), 4);
  pollfd v{victim, POLLIN, 0};
  ASSERT_EQ(poll(&v, 1, 2000), 1);
  n = recv(victim, buf, sizeof buf, 0);
  EXPECT_EQ(std::string(buf, n), "back");
  close(server);
  close(victim);
}

TEST(SpoofedUdp, RefusesAddressesOutsideLoopback) {
  SpoofedUdp spoof;
  EXPECT_FALSE(spoof.Send("10.0.0.1", 1000, "127.0.0.1", 5683, "x"));
  EXPECT_FALSE(spoof.Send("127.0.0.2", 1000, "192.168.1.1", 5683, "x"));
}

TEST(SpoofedUdp, LoopbackSourcesAreDistinctAndAvoidTheDaemonsAddress) {
  std::set<std::string> seen;
  for (uint32_t n = 0; n < 5000; ++n) {
    std::string s = SpoofedUdp::LoopbackSource(n);
    EXPECT_NE(s, "127.0.0.1");
    EXPECT_NE(s.substr(s.rfind('.')), ".0");
    EXPECT_NE(s.substr(s.rfind('.')), ".255");
    seen.insert(s);
  }
  EXPECT_EQ(seen.size(), 5000u);
}

}  // namespace
}  // namespace tether::testing
