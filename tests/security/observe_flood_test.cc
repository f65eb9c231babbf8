// Notification floods against the real tetherd: a dead observer of a busy path (issue 15.5) and
// observations registered from a spoofed victim's address (the engine side of issue 16.2). Each
// counts what reaches the silent address: a flood at the path's update rate fails.
#include <gtest/gtest.h>

#include <cstdio>
#include <thread>

#include "tests/integration/sdk_client.h"
#include "tests/integration/spoofed_udp.h"
#include "tests/security/attack_gateway.h"
#include "tests/support/eventually.h"

namespace tether::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// The value of a CBOR unsigned integer below 2^16 (what the writer puts), or -1.
int64_t CborSmallUint(const std::string& b) {
  if (b.size() == 1 && static_cast<uint8_t>(b[0]) < 24) return static_cast<uint8_t>(b[0]);
  if (b.size() == 2 && static_cast<uint8_t>(b[0]) == 0x18) return static_cast<uint8_t>(b[1]);
  if (b.size() == 3 && static_cast<uint8_t>(b[0]) == 0x19) return static_cast<uint8_t>(b[1]) << 8 | static_cast<uint8_t>(b[2]);
  return -1;
}

// An SDK device observing "/busy" dies (its socket goes away without a word) while another device
// changes "/busy" 100 times a second. Issue 15.5 saw 32,169 CON notifications in ~20 s. Required:
// at most 100 datagrams reach the dead address before its observation or session ends; a live
// observer of the same path keeps getting the states as they happen.
TEST(ObserveFlood, DeadObserverOfABusyPathGetsAtMostAHundredDatagrams) {
  AttackGateway gw;
  gw.Start("  heartbeat_target: 3s\n  session_timeout: 5s\n");  // the dead session ends 5 s after its last datagram
  SdkClient dead(gw.port()), live(gw.port()), writer(gw.port());
  ASSERT_TRUE(dead.Open());
  ASSERT_TRUE(live.Open());
  ASSERT_TRUE(writer.Open());
  ASSERT_EQ(writer.Put("busy", CborUint(0)).CodeString(), "2.05");
  ASSERT_EQ(dead.Observe("busy").CodeString(), "2.05");
  const CoapReply reg = live.Observe("busy");
  ASSERT_EQ(reg.CodeString(), "2.05");
  // The dead device's socket closes; a sink at its address sees what the gateway keeps sending.
  const uint16_t dead_port = dead.local_port();
  dead.NewSourcePort();
  Sink grave("127.0.0.1", dead_port);

  const auto start = Clock::now();
  int writes = 0, live_seen = 0;
  int64_t live_last = -1;
  // What has reached the live device, read at once (its CONs acknowledged at once, as the SDK does).
  auto read_live = [&] {
    while (auto n = live.WaitNotification(0ms)) {
      if (n->token != reg.token || !n->observe) continue;
      const int64_t v = CborSmallUint(n->payload);
      if (v > live_last) {
        ++live_seen;
        live_last = v;
      }
    }
  };
  while (Clock::now() - start < 7s) {  // past the dead session's end
    ++writes;
    ASSERT_EQ(writer.Put("busy", CborUint(static_cast<uint64_t>(writes))).CodeString(), "2.05") << writes;
    read_live();
    std::this_thread::sleep_until(start + writes * 10ms);
    if (writes % 100 == 0) {
      EXPECT_EQ(live.Ping().CodeString(), "2.05");  // the live device keeps its session
    }
  }
  ASSERT_TRUE(Eventually([&] {
    read_live();
    return live_last == writes;
  }, 2s)) << "the live observer got the last state: " << live_last << " of " << writes << ", seen " << live_seen << ", stale " << live.stale_notifications();
  const std::vector<std::string> got = grave.Drain(1s);
  std::printf("dead observer: %zu datagrams while the path changed %d times; the live one saw %d states\n",
              got.size(), writes, live_seen);
  EXPECT_GE(writes, 400) << "the path changed about 100 times a second";
  EXPECT_LE(got.size(), 100u) << "datagrams to the dead observer while the path changed " << writes << " times";
  EXPECT_GT(got.size(), 0u) << "it was notified until it stopped answering";
  EXPECT_GE(live_seen, writes * 9 / 10) << "the live observer is not paced";
  EXPECT_GT(gw.Metric("tether_notifications_total{outcome=\"superseded\"}"), 0);
}

// Issue 16.2, engine side: 10 observations registered from a spoofed victim address (with the
// attacker's own session token) while the attacker changes the path 20 times a second. The victim
// acknowledges nothing; each new state must not push the confirmable notification's give-up time
// forward. Required: the victim gets a bounded number of datagrams, and once a CON to it is
// outstanding nothing new is sent to it but that CON's retransmissions.
TEST(ObserveFlood, SpoofedObserversOfAVictimAreNotAnAmplifier) {
  AttackGateway gw;
  gw.Start();
  SpoofedUdp spoof;
  const std::string victim_ip = SpoofedUdp::LoopbackSource(4242);
  Sink victim(victim_ip);
  SdkClient attacker(gw.port());
  ASSERT_TRUE(attacker.Open());
  constexpr int kObservers = 10;  // one per child of /feed: a session observes each path once
  auto feed = [&](uint64_t n) {
    std::vector<std::pair<std::string, std::string>> children;
    for (int i = 0; i < kObservers; ++i) children.emplace_back("k" + std::to_string(i), CborUint(n));
    return CborMap(children);
  };
  ASSERT_EQ(attacker.Put("feed", feed(0)).CodeString(), "2.05");
  for (int i = 0; i < kObservers; ++i) {
    const std::string pkt =
        attacker.Build(1, {"feed", "k" + std::to_string(i)}, {".cs=" + attacker.short_token()}, "", 0u, {}, {});
    ASSERT_TRUE(spoof.Send(victim_ip, victim.port(), "127.0.0.1", gw.port(), pkt));
  }
  std::this_thread::sleep_for(200ms);
  victim.Drain();  // the registration answers (or refusals)

  const auto start = Clock::now();
  size_t first_half = 0, second_half = 0;
  for (int writes = 1; Clock::now() - start < 12s; ++writes) {
    ASSERT_EQ(attacker.Put("feed", feed(static_cast<uint64_t>(writes))).CodeString(), "2.05");
    std::this_thread::sleep_until(start + writes * 50ms);
    (Clock::now() - start < 6s ? first_half : second_half) += victim.Drain().size();
  }
  std::printf("victim: %zu datagrams in the first 6 s, %zu in the last 6 s\n", first_half, second_half);
  // At most con_notify_every - 1 = 19 NONs per observation, then one CON and its retransmissions
  // (at ~2-3 s, ~6-9 s, ~14-21 s): ~200 in all instead of ~2,400 at the update rate.
  EXPECT_LE(first_half + second_half, static_cast<size_t>(kObservers * 24))
      << "first 6 s: " << first_half << ", last 6 s: " << second_half;
  EXPECT_LE(second_half, 3u) << "after the CON: only its retransmissions";
}

}  // namespace
}  // namespace tether::testing
