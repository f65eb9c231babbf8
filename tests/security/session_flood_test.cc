// Issue 16, item 3: a flood of forged POST /.cs against the real tetherd while a legitimate
// device pings. ~24,000 spoofed datagrams in 4 s: the sanitizer build's daemon cannot take them in
// (it answered 8 pings with p99 657 ms), so this runs in the plain pass only (label "slow"), like
// peer_flood_test.cc. Today's main fails every assertion marked "main:".
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <thread>

#include "tests/integration/sdk_client.h"
#include "tests/integration/spoofed_udp.h"
#include "tests/security/attack_gateway.h"

namespace tether::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// Item 3: a flood of forged POST /.cs from many sources against the open default app (the issue:
// 6,000/s created ~1,230 sessions/s and a device got 12 pings through in 34 s). Required: a
// legitimate device keeps p99 ping latency under 50 ms during the flood, sessions never used by
// their device stay bounded (device.max_unconfirmed_sessions) and cost no store commit.
TEST(SessionGuard, ForgedOpenFloodLeavesALegitimateDeviceFast) {
  AttackGateway gw;
  gw.Start();
  SdkClient device(gw.port());
  ASSERT_TRUE(device.Open());
  device.set_timeout(1s);
  ASSERT_EQ(device.Ping().CodeString(), "2.05");

  Background attack;
  std::atomic<uint64_t> flooded{0};
  attack.Run([&] {
    SpoofedUdp spoof;
    const auto start = Clock::now();
    for (uint32_t n = 0; !attack.stop && n < 40'000; ++n) {  // 6,000/s for at most ~6.7 s
      const std::string pkt = CoapRequest(2, static_cast<uint16_t>(n), "fl" + std::to_string(n % 1000), {".cs"}, {"v=2"});
      spoof.Send(SpoofedUdp::LoopbackSource(100'000 + n), static_cast<uint16_t>(1024 + n % 60000), "127.0.0.1",
                 gw.port(), pkt);
      flooded = n + 1;
      std::this_thread::sleep_until(start + (n + 1) * std::chrono::microseconds(166));
    }
  });
  std::vector<double> ms;
  int lost = 0;
  const auto start = Clock::now();
  while (Clock::now() - start < 4s) {
    const auto t0 = Clock::now();
    const CoapReply r = device.Ping();
    const double took = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    if (r.CodeString() == "2.05") ms.push_back(took);
    else ++lost;
    std::this_thread::sleep_for(20ms);
  }
  const double unconfirmed = gw.Metric("tether_sessions_unconfirmed");
  const double sessions = gw.Metric("tether_sessions{app=\"myapp\",state=\"active\"}");
  attack.stop = true;
  ASSERT_FALSE(ms.empty()) << "no ping answered during the flood";
  std::sort(ms.begin(), ms.end());
  const double p50 = ms[ms.size() / 2], p99 = ms[std::min(ms.size() - 1, ms.size() * 99 / 100)];
  std::printf("flood of %llu forged opens: %zu pings answered (%d not), p50 %.2f ms, p99 %.2f ms, max %.2f ms; "
              "%.0f sessions active, %.0f unconfirmed\n",
              static_cast<unsigned long long>(flooded.load()), ms.size(), lost, p50, p99, ms.back(), sessions,
              unconfirmed);
  EXPECT_EQ(lost, 0) << "main: pings time out";
  EXPECT_LT(p99, 50.0) << "main: seconds";
  EXPECT_LE(unconfirmed, 4096) << "device.max_unconfirmed_sessions";
  EXPECT_LE(sessions, 4096 + 1) << "main: every forged open is a session";
  // The device's session survived and still works.
  EXPECT_EQ(device.Put("still", CborUint(1)).CodeString(), "2.05");
}

}  // namespace
}  // namespace tether::testing
