// The peer table under a flood of new source addresses: unverified peers are evicted for new
// ones, verified peers and peers with something pending never are, and what is refused is counted.
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#include <gtest/gtest.h>

#include "tests/device_proto/fake_wire.h"

using namespace tether::coap;
using namespace tether::coap::test;

namespace {

const Bytes kPing = {0x40, 0x00, 0x12, 0x34};  // empty CON: answered with RST

TEST(PeerTable, FloodOfNewSourcesNeverPushesOutAVerifiedPeer) {
  EndpointOptions o;
  o.max_peers = 8;
  FakeWire w(o);
  const Address device = PeerAddress(1);
  w.Receive(device, Build{.mid = 1}.Path("a").done());
  ASSERT_EQ(w.requests.size(), 1u);
  EXPECT_FALSE(w.verified_requests[0]) << "one datagram proves nothing";
  w.ep->VerifyPeer(device);
  ASSERT_TRUE(w.ep->Respond(w.requests[0], Response{}));
  EXPECT_EQ(w.ep->counters().peers_verified, 1u);

  for (uint32_t i = 0; i < 1000; ++i) w.Receive(PeerAddress(100 + i), kPing);
  for (uint32_t i = 0; i < 1000; i += 111) EXPECT_EQ(w.To(PeerAddress(100 + i)).size(), 1u) << "every source answered";
  Counters c = w.ep->counters();
  EXPECT_LE(c.peers, o.max_peers);
  EXPECT_EQ(c.peers_verified, 1u);
  EXPECT_EQ(c.peers_rejected, 0u);
  EXPECT_EQ(c.peers_evicted, 1000u - (o.max_peers - 1));

  // The verified device is still known (its binding, its place), and a newcomer gets in too.
  w.Receive(device, Build{.mid = 2}.Path("b").done());
  ASSERT_EQ(w.requests.size(), 2u);
  EXPECT_TRUE(w.verified_requests[1]);
  w.Receive(PeerAddress(5000), Build{.mid = 3}.Path("c").done());
  ASSERT_EQ(w.requests.size(), 3u);
  EXPECT_FALSE(w.verified_requests[2]);
}

TEST(PeerTable, PeersWithSomethingPendingStayAndAFullTableRefusesNewcomers) {
  EndpointOptions o;
  o.max_peers = 2;
  FakeWire w(o);
  const Address device = PeerAddress(1), busy = PeerAddress(2), newcomer = PeerAddress(3);
  w.Receive(device, kPing);
  w.ep->VerifyPeer(device);
  w.Receive(busy, Build{.mid = 9}.Path("slow").done());  // its answer is pending
  ASSERT_EQ(w.requests.size(), 1u);
  w.sent.clear();
  w.Receive(newcomer, kPing);
  EXPECT_TRUE(w.To(newcomer).empty()) << "nobody can make room";
  EXPECT_EQ(w.ep->counters().peers_rejected, 1u);
  ASSERT_TRUE(w.ep->Respond(w.requests[0], Response{}));
  ASSERT_EQ(w.To(busy).size(), 1u) << "its answer still reached it";
  w.Receive(newcomer, kPing);
  EXPECT_EQ(w.To(newcomer).size(), 1u) << "answered: the idle unverified peer made room";
  const Counters c = w.ep->counters();
  EXPECT_EQ(c.peers_evicted, 1u);
  EXPECT_EQ(c.peers, 2u);
  EXPECT_EQ(c.peers_verified, 1u);
}

TEST(PeerTable, ObserversKeepTheirUnverifiedPeer) {
  EndpointOptions o;
  o.max_peers = 2;
  FakeWire w(o);
  const Address watcher = PeerAddress(1);
  const ObserverId id = w.Observe(watcher, 5);
  ASSERT_NE(id, 0u);
  for (uint32_t i = 0; i < 100; ++i) w.Receive(PeerAddress(10 + i), kPing);
  w.sent.clear();
  ASSERT_TRUE(w.Notify(id, "still here"));
  ASSERT_EQ(w.To(watcher).size(), 1u);
  EXPECT_EQ(w.ep->counters().peers_evicted, 99u);
  EXPECT_EQ(w.ep->counters().observers, 1u);
}

TEST(PeerTable, IdleVerifiedPeersStillAgeOut) {
  EndpointOptions o;
  o.exchange_lifetime_ms = 5000;
  FakeWire w(o);
  w.Receive(PeerAddress(1), kPing);
  w.ep->VerifyPeer(PeerAddress(1));
  w.Receive(PeerAddress(2), kPing);
  EXPECT_EQ(w.ep->counters().peers, 2u);
  for (int i = 0; i < 8; ++i) w.Advance(1000);
  EXPECT_EQ(w.ep->counters().peers, 0u);
  EXPECT_EQ(w.ep->counters().peers_verified, 0u);
}

}  // namespace
