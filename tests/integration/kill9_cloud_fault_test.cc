// Fault suite: kill -9 of tetherd at random moments while a fleet writes, with the test cloud
// configured. After the cycles, in the cloud: every acknowledged write exactly once (pushes under
// their keys, increments counted once), sets and all writes of the route in order, onDisconnect
// fired exactly once per ended session, server timestamps at the write. 12 cycles by default,
// 100 with TETHER_SOAK=1. The cloud's clock agrees with the gateway's here (an NTP-synced box):
// right after a restart, before its first clock estimate, the gateway names pushes by its own
// clock, so with a skewed clock they could sort before the ones made before the kill.
#include <gtest/gtest.h>

#include <cstdlib>
#include <random>
#include <thread>

#include "tests/integration/fault_harness.h"
#include "tests/integration/tetherd_process.h"

namespace tether::testing {
namespace {

using namespace std::chrono_literals;

TEST(FaultKill9Cloud, AcknowledgedWritesReachTheCloudOnceAndInOrderAcrossKills) {
  const int cycles = SoakMode() ? 100 : 12;
  const int devices = SoakMode() ? 32 : 24;
  upstream::testing::FakeCloud cloud;
  TetherdProcess gw;
  GatewayOptions go;
  go.cloud_url = cloud.url();
  gw.WriteConfig(FaultGatewayYaml(&go));
  gw.Start();
  ASSERT_TRUE(gw.WaitForLog("listening for CoAP", 10s)) << gw.Log();

  Fleet fleet(devices, go.port, 1000ms, 4000);
  LoadOptions load;
  load.depth = 3;  // three requests in flight per device
  load.think = SoakMode() ? 20ms : 5ms;
  load.end_session_chance = 0.01;
  load.seed = 8;
  auto t0 = std::chrono::steady_clock::now();
  fleet.Start(load);
  std::mt19937 rng(20261122);
  std::uniform_int_distribution<int> run_ms(150, 900), down_ms(0, 300);
  for (int cycle = 0; cycle < cycles; ++cycle) {
    std::this_thread::sleep_for(std::chrono::milliseconds(run_ms(rng)));
    gw.Kill9();
    std::this_thread::sleep_for(std::chrono::milliseconds(down_ms(rng)));
    gw.Start();
    ASSERT_TRUE(gw.WaitForLog("listening for CoAP", 10s)) << "cycle " << cycle << "\n" << gw.Log().substr(0, 4000);
  }
  std::this_thread::sleep_for(1s);  // load on the last incarnation too
  fleet.EndAll();
  auto load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  AuditOptions ao;
  ao.timestamp_tolerance_ms = 250;
  CloudAudit audit(cloud, ao);
  Tally tally("kill -9 with cloud");
  auto drain_t0 = std::chrono::steady_clock::now();
  bool delivered = audit.WaitDelivered(fleet, 30s);
  tally.Check(delivered, "delivery stalled for 30 s: " + audit.Missing());
  const double drain_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - drain_t0).count();
  audit.Verify(fleet, tally);
  tally.Check(fleet.Count(Outcome::kAcked) > static_cast<size_t>(cycles) * 50, "the load ran");
  std::printf("kill -9 with cloud: %d cycles over %.1f s, %d devices x 3 in flight, %zu writes acknowledged, %zu "
              "unanswered, replies: %s; all in the cloud %.1f s after the load stopped\n",
              cycles, load_s, devices, fleet.Count(Outcome::kAcked), fleet.Count(Outcome::kUnknown),
              fleet.CodeHistogram().c_str(), drain_s);
}

}  // namespace
}  // namespace tether::testing
