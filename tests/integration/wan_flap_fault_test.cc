// Fault suite: the WAN flaps while a fleet writes. The test cloud goes away and comes back at
// random: listener closed (connections refused, open ones reset), 5xx and 429 answers, writes
// applied but their replies lost, event streams cut mid-event. After it heals, in the cloud:
// every acknowledged write exactly once and in order, onDisconnect exactly once per ended
// session, server timestamps at the write, and the synced root equal to the cloud's value.
// 20 flaps by default, 1,000 with TETHER_SOAK=1.
#include <gtest/gtest.h>

#include <map>
#include <random>
#include <string>
#include <thread>

#include "tests/integration/fault_harness.h"
#include "tests/integration/tetherd_process.h"
#include "tests/support/eventually.h"

namespace tether::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
constexpr int64_t kSkewMs = 1500;  // the cloud's clock runs ahead of the gateway's

// The control API is down while the listener is closed: retry until it answers.
void Control(const upstream::testing::FakeCloud& cloud, const json& req) {
  const bool answered = Eventually(
      [&] {
        try {
          cloud.Control(req);
          return true;
        } catch (const std::exception&) {
          return false;
        }
      },
      5s, 50ms);
  if (!answered) FAIL() << "fake cloud control unreachable: " << req.dump();
}

TEST(FaultWanFlaps, EveryAcknowledgedWriteArrivesOnceInOrderThroughFlaps) {
  const int flaps = SoakMode() ? 1000 : 20;
  const int devices = 16;
  upstream::testing::FakeCloud cloud;
  cloud.Control({{"op", "skew"}, {"ms", kSkewMs}});
  ASSERT_EQ(Shell("curl -sf -X PUT -d 0 " + cloud.url() + "/config/rev.json").status, 0);
  TetherdProcess gw;
  GatewayOptions go;
  go.cloud_url = cloud.url();
  go.sync_config = true;
  gw.WriteConfig(FaultGatewayYaml(&go));
  gw.Start();
  ASSERT_TRUE(gw.WaitForLog("listening for CoAP", 10s)) << gw.Log();
  SdkClient probe(go.port);
  ASSERT_TRUE(probe.Open("probe"));
  ASSERT_TRUE(WaitForCloudOffset(probe, kSkewMs, 100)) << "the gateway never estimated the cloud clock";

  Fleet fleet(devices, go.port, 1000ms, 4000);
  LoadOptions load;
  load.depth = 2;
  load.think = SoakMode() ? 400ms : 100ms;  // long runs: fewer writes, the flaps are the point
  load.end_session_chance = 0.01;
  load.seed = 77;
  auto t0 = std::chrono::steady_clock::now();
  fleet.Start(load);
  std::mt19937 rng(4711);
  std::uniform_real_distribution<double> pick(0, 1);
  std::uniform_int_distribution<int> down_ms(100, 1500), up_ms(100, 800), few(1, 6);
  std::map<std::string, int> kinds;
  int rev = 0;
  for (int flap = 0; flap < flaps; ++flap) {
    // The cloud changes the synced root now and then (retried through faults still pending: a PUT
    // is idempotent); the gateway must end up with the last value.
    if (flap % 3 == 0) {
      ++rev;
      const bool put = Eventually(
          [&] { return Shell("curl -sf -X PUT -d " + std::to_string(rev) + " " + cloud.url() + "/config/rev.json").status == 0; },
          5s, 50ms);
      ASSERT_TRUE(put) << "the cloud never took config/rev";
    }
    double r = pick(rng);
    if (r < 0.4) {
      int ms = down_ms(rng);
      Control(cloud, {{"op", "down"}, {"ms", ms}});
      std::this_thread::sleep_for(std::chrono::milliseconds(ms));
      kinds["down"]++;
    } else if (r < 0.6) {
      static const int kStatus[] = {500, 502, 503, 504};
      Control(cloud, {{"op", "fail"}, {"status", kStatus[rng() % 4]}, {"count", few(rng)}});
      kinds["5xx"]++;
    } else if (r < 0.7) {
      Control(cloud, {{"op", "fail"}, {"status", 429}, {"count", few(rng)}});
      kinds["429"]++;
    } else if (r < 0.85) {
      Control(cloud, {{"op", "lose_replies"}, {"status", rng() % 2 ? 0 : 503}, {"count", few(rng)}});
      kinds["lost replies"]++;
    } else {
      Control(cloud, {{"op", "cut_streams"}});
      kinds["cut streams"]++;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(up_ms(rng)));
  }
  Control(cloud, {{"op", "heal"}});
  std::this_thread::sleep_for(1s);  // load on a healthy link too
  fleet.EndAll();
  auto load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  AuditOptions ao;
  ao.cloud_skew_ms = kSkewMs;
  ao.timestamp_tolerance_ms = 250;
  CloudAudit audit(cloud, ao);
  Tally tally("WAN flaps");
  auto drain_t0 = std::chrono::steady_clock::now();
  bool delivered = audit.WaitDelivered(fleet, 45s);
  tally.Check(delivered, "delivery stalled for 45 s: " + audit.Missing());
  const double drain_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - drain_t0).count();
  audit.Verify(fleet, tally);
  tally.Check(fleet.Count(Outcome::kAcked) > static_cast<size_t>(flaps) * 20, "the load ran");
  // The synced root converged on the cloud's last value through the cut and refused streams.
  SdkClient reader(go.port);  // the probe's session timed out long ago
  tally.Check(reader.Open("reader"), "a new device opens a session after the flaps");
  std::string want = CborUint(static_cast<uint64_t>(rev)), got;
  for (int i = 0; i < 100 && got != want; ++i) {
    got = reader.Get("config/rev").payload;
    if (got != want) std::this_thread::sleep_for(100ms);
  }
  tally.Check(got == want, "synced config/rev is " + Hex(got) + ", the cloud holds " + std::to_string(rev));
  tally.Check(reader.Request(1, ".info/connected", "", {}, {}, {}, 50u).payload == "true", "link reported up");
  std::string mix;
  for (const auto& [k, n] : kinds) mix += (mix.empty() ? "" : ", ") + k + " " + std::to_string(n);
  std::printf("WAN flaps: %d flaps (%s) over %.1f s, %d devices x 2 in flight, %zu writes acknowledged, "
              "%zu unanswered, replies: %s; all in the cloud %.1f s after the load stopped\n",
              flaps, mix.c_str(), load_s, devices, fleet.Count(Outcome::kAcked), fleet.Count(Outcome::kUnknown),
              fleet.CodeHistogram().c_str(), drain_s);
}

}  // namespace
}  // namespace tether::testing
