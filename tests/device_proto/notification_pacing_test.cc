// Notification congestion control (RFC 7641 §4.5, RFC 7252 §4.7): one confirmable notification
// outstanding per peer, newer states replacing waiting ones and riding the retransmission timer,
// observations ending when a CON is never acknowledged, probes to silent peers. Fake clock.
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#include <gtest/gtest.h>

#include "tests/device_proto/fake_wire.h"

using namespace tether::coap;
using namespace tether::coap::test;

namespace {

EndpointOptions Deterministic() {
  EndpointOptions o;
  o.ack_random_factor = 1.0;  // retransmissions exactly at 2, 4, 8, 16 s
  return o;
}

uint32_t ObserveOf(const Packet& p) { return p.m.UintOption(opt::kObserve).value_or(0); }

// The figure: a dead observer of a path changing 100 times a second gets at most 100
// datagrams before its observation ends, and it ends when the first unacknowledged CON runs out
// of retransmissions: newer states do not push that moment back.
TEST(NotificationPacing, DeadObserverOfAFastPathGetsFewDatagramsAndTheObservationEnds) {
  const EndpointOptions o = Deterministic();
  FakeWire w(o);
  const Address dead = PeerAddress(1);
  const ObserverId id = w.Observe(dead, 7);
  ASSERT_NE(id, 0u);
  w.sent.clear();
  const uint64_t start = w.now_ms;
  int n = 0;
  while (w.dropped.empty() && w.now_ms - start < 120000) {
    ASSERT_TRUE(w.Notify(id, "v" + std::to_string(++n)));
    w.Advance(10);
  }
  const auto got = w.To(dead);
  EXPECT_LE(got.size(), 100u);
  // 19 NONs, the 20th as a CON, then its 4 retransmissions, each with the newest state.
  ASSERT_EQ(got.size(), o.con_notify_every - 1 + 1 + o.max_retransmit);
  for (size_t i = 0; i + 1 < o.con_notify_every; ++i) EXPECT_EQ(got[i]->packet()->m.type, Type::kNon) << i;
  uint32_t last_seq = 0;
  uint16_t last_mid = 0;
  for (size_t i = o.con_notify_every - 1; i < got.size(); ++i) {
    auto p = got[i]->packet();
    ASSERT_TRUE(p->ok);
    EXPECT_EQ(p->m.type, Type::kCon) << i;
    EXPECT_GT(ObserveOf(*p), last_seq) << "a newer state rode retransmission " << i;
    EXPECT_NE(p->m.mid, last_mid) << "a new state is a new message";
    last_seq = ObserveOf(*p);
    last_mid = p->m.mid;
  }
  ASSERT_EQ(w.dropped.size(), 1u);
  EXPECT_EQ(w.dropped[0], std::make_pair(id, DropReason::kTimeout));
  // The CON went out with notification 20 (t = 190 ms); it is given up 2 + 4 + 8 + 16 + 32 s later.
  EXPECT_LE(w.now_ms - start, 190u + 62000u + 10u);
  EXPECT_FALSE(w.Notify(id, "after")) << "the observation is gone";
  const Counters c = w.ep->counters();
  EXPECT_EQ(c.observers_timed_out, 1u);
  EXPECT_EQ(c.observers, 0u);
  EXPECT_GT(c.notifications_superseded, 5000u);
}

// A live observer that acknowledges its CONs sees every state at once, as before.
TEST(NotificationPacing, LiveObserverGetsEveryStateAtOnce) {
  const EndpointOptions o = Deterministic();
  FakeWire w(o);
  const Address live = PeerAddress(2);
  const ObserverId id = w.Observe(live, 8);
  w.sent.clear();
  size_t cons = 0;
  for (int i = 1; i <= 1000; ++i) {
    const size_t before = w.sent.size();
    ASSERT_TRUE(w.Notify(id, "v" + std::to_string(i)));
    ASSERT_EQ(w.sent.size(), before + 1) << "state " << i << " left at once";
    auto p = w.sent.back().packet();
    EXPECT_EQ(p->payload(), "v" + std::to_string(i));
    if (p->m.type == Type::kCon) {
      ++cons;
      w.Ack(live, p->m.mid);
    }
    w.Advance(10);
  }
  EXPECT_EQ(cons, 1000 / o.con_notify_every);
  EXPECT_EQ(w.ep->counters().notifications_superseded, 0u);
  EXPECT_EQ(w.ep->counters().retransmissions, 0u);
  EXPECT_TRUE(w.dropped.empty());
}

// RFC 7641 §4.5.2: while a CON is outstanding, newer states wait; the newest replaces it at the
// next retransmission (new message ID, same timer). The ACK of the replaced one proves the peer
// alive; the ACK of the current one lets the next state go at once.
TEST(NotificationPacing, NewerStateRidesTheRetransmissionTimer) {
  EndpointOptions o = Deterministic();
  o.con_notify_every = 1;
  FakeWire w(o);
  const Address p = PeerAddress(3);
  const ObserverId id = w.Observe(p, 9);
  w.sent.clear();
  ASSERT_TRUE(w.Notify(id, "a"));
  ASSERT_EQ(w.sent.size(), 1u);
  auto a = w.sent[0].packet();
  EXPECT_EQ(a->m.type, Type::kCon);
  ASSERT_TRUE(w.Notify(id, "b"));
  ASSERT_TRUE(w.Notify(id, "c"));
  EXPECT_EQ(w.sent.size(), 1u) << "nothing more while the CON is outstanding";
  EXPECT_EQ(w.ep->counters().notifications_superseded, 1u) << "b never left: c replaced it";
  w.Advance(o.ack_timeout_ms - 1);
  EXPECT_EQ(w.sent.size(), 1u);
  w.Advance(1);
  ASSERT_EQ(w.sent.size(), 2u) << "the retransmission time came";
  auto c = w.sent[1].packet();
  EXPECT_EQ(c->m.type, Type::kCon);
  EXPECT_EQ(c->payload(), "c");
  EXPECT_NE(c->m.mid, a->m.mid);
  EXPECT_GT(ObserveOf(*c), ObserveOf(*a));
  w.Ack(p, a->m.mid);  // late ACK of the replaced message: alive, c is still outstanding
  EXPECT_TRUE(w.dropped.empty());
  ASSERT_TRUE(w.Notify(id, "d"));
  EXPECT_EQ(w.sent.size(), 2u);
  w.Ack(p, c->m.mid);
  ASSERT_EQ(w.sent.size(), 3u) << "acknowledged: the waiting state leaves at once";
  EXPECT_EQ(w.sent[2].packet()->payload(), "d");
  EXPECT_TRUE(w.dropped.empty());
}

// NSTART = 1 across the observations of one peer; another peer is not held back.
TEST(NotificationPacing, OneConfirmableNotificationOutstandingPerPeer) {
  EndpointOptions o = Deterministic();
  o.con_notify_every = 1;
  FakeWire w(o);
  const Address p = PeerAddress(4), q = PeerAddress(5);
  const ObserverId a = w.Observe(p, 1, 1);
  const ObserverId b = w.Observe(p, 2, 2);
  const ObserverId other = w.Observe(q, 3, 3);
  w.sent.clear();
  ASSERT_TRUE(w.Notify(a, "a1"));
  ASSERT_TRUE(w.Notify(b, "b1"));
  ASSERT_TRUE(w.Notify(b, "b2"));
  ASSERT_TRUE(w.Notify(other, "q1"));
  ASSERT_EQ(w.To(p).size(), 1u) << "b waits for a's CON";
  ASSERT_EQ(w.To(q).size(), 1u) << "another peer is not held back";
  w.Ack(q, w.To(q)[0]->packet()->m.mid);
  w.Ack(p, w.To(p)[0]->packet()->m.mid);
  ASSERT_EQ(w.To(p).size(), 2u);
  auto b2 = w.To(p)[1]->packet();
  EXPECT_EQ(b2->payload(), "b2");
  EXPECT_EQ(b2->m.type, Type::kCon);
  ASSERT_TRUE(w.Notify(a, "a2"));
  EXPECT_EQ(w.To(p).size(), 2u) << "now a waits for b's CON";
  w.Advance(o.ack_timeout_ms);
  ASSERT_EQ(w.To(p).size(), 3u);
  auto again = w.To(p)[2]->packet();
  EXPECT_EQ(again->payload(), "b2") << "b has nothing newer: its CON is retransmitted as it was";
  EXPECT_EQ(again->m.mid, b2->m.mid);
  w.Ack(p, b2->m.mid);
  ASSERT_EQ(w.To(p).size(), 4u);
  EXPECT_EQ(w.To(p)[3]->packet()->payload(), "a2");
  EXPECT_TRUE(w.dropped.empty());
}

// When a CON to a peer is never acknowledged, the observations with a state waiting for that
// peer end with it; observations of other peers do not.
TEST(NotificationPacing, TimeoutEndsTheObservationsWaitingOnThatPeer) {
  EndpointOptions o = Deterministic();
  o.con_notify_every = 1;
  FakeWire w(o);
  const Address p = PeerAddress(6), q = PeerAddress(7);
  const ObserverId a = w.Observe(p, 1, 1);
  const ObserverId b = w.Observe(p, 2, 2);
  const ObserverId c = w.Observe(q, 3, 3);
  w.sent.clear();
  ASSERT_TRUE(w.Notify(a, "a1"));
  ASSERT_TRUE(w.Notify(b, "b1"));
  ASSERT_TRUE(w.Notify(c, "c1"));
  w.Ack(q, w.To(q)[0]->packet()->m.mid);
  for (int i = 0; i < 70 && w.dropped.size() < 2; ++i) w.Advance(1000);
  ASSERT_EQ(w.dropped.size(), 2u);
  EXPECT_EQ(w.dropped[0], std::make_pair(a, DropReason::kTimeout));
  EXPECT_EQ(w.dropped[1], std::make_pair(b, DropReason::kTimeout));
  EXPECT_EQ(w.To(p).size(), 1u + o.max_retransmit) << "b1 never went out";
  EXPECT_EQ(w.ep->counters().observers_timed_out, 2u);
  EXPECT_TRUE(w.Notify(c, "c2")) << "the other peer's observation lives";
}

// A peer silent for probe_after_ms gets its next notification as a CON; until it answers, the
// rest wait (one datagram per retransmission), so NONs do not flow to a peer that may be gone.
TEST(NotificationPacing, SilentPeerIsProbedBeforeMoreNotifications) {
  const EndpointOptions o = Deterministic();
  FakeWire w(o);
  const Address p = PeerAddress(8);
  const ObserverId id = w.Observe(p, 4);
  w.sent.clear();
  ASSERT_TRUE(w.Notify(id, "fresh"));
  EXPECT_EQ(w.sent.back().packet()->m.type, Type::kNon) << "heard from just now";
  w.Advance(o.probe_after_ms);
  ASSERT_TRUE(w.Notify(id, "probe"));
  ASSERT_EQ(w.sent.size(), 2u);
  auto probe = w.sent[1].packet();
  EXPECT_EQ(probe->m.type, Type::kCon);
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(w.Notify(id, "held" + std::to_string(i)));
  EXPECT_EQ(w.sent.size(), 2u);
  w.Ack(p, probe->m.mid);
  ASSERT_EQ(w.sent.size(), 3u);
  EXPECT_EQ(w.sent[2].packet()->payload(), "held49");
  EXPECT_EQ(w.sent[2].packet()->m.type, Type::kNon) << "it answered: NONs again";
}

// The device moved (its /.rst): a state waiting behind the CON in flight moves with the
// observation and replaces it at the next retransmission, at the new address.
TEST(NotificationPacing, WaitingStateMovesWithTheObservation) {
  EndpointOptions o = Deterministic();
  o.con_notify_every = 1;
  FakeWire w(o);
  const Address old_addr = PeerAddress(9, 1000), new_addr = PeerAddress(9, 2000);
  const ObserverId id = w.Observe(old_addr, 5);
  w.sent.clear();
  ASSERT_TRUE(w.Notify(id, "first"));
  ASSERT_TRUE(w.Notify(id, "newest"));
  w.Receive(new_addr, Build{.type = Type::kNon, .mid = 77, .token = {1}}.Path(".rst").done());
  ASSERT_TRUE(w.ep->MoveObserver(id, new_addr));
  w.Advance(o.ack_timeout_ms);
  ASSERT_EQ(w.To(new_addr).size(), 1u);
  auto p = w.To(new_addr)[0]->packet();
  EXPECT_EQ(p->payload(), "newest");
  w.Ack(new_addr, p->m.mid);
  ASSERT_TRUE(w.Notify(id, "after"));
  EXPECT_EQ(w.To(new_addr).size(), 2u);
  EXPECT_EQ(w.To(old_addr).size(), 1u) << "only the first CON went to the old address";
  EXPECT_TRUE(w.dropped.empty());
}

}  // namespace
