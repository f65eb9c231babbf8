// Fault suite: a lossy LAN between the devices and tetherd. Every datagram, both ways, goes
// through LossyUdpProxy (10 % lost, 10 % duplicated, 10 % reordered, 0-20 ms delay, seeded);
// devices retransmit as CoAP does (same message ID and token). netem would need the sch_netem
// kernel module, which this machine's kernel lacks, so the proxy stands in for it. After the run,
// in the cloud: every acknowledged write exactly once (a duplicated or retransmitted request must
// not apply twice: the increments count each write once), in order per device and route, and
// onDisconnect exactly once per session even though goOffline itself may be retransmitted.
// 40 writes per device by default, 400 with TETHER_SOAK=1.
#include <gtest/gtest.h>

#include <thread>

#include "tests/integration/fault_harness.h"
#include "tests/integration/lossy_udp_proxy.h"
#include "tests/integration/tetherd_process.h"

namespace tether::testing {
namespace {

using namespace std::chrono_literals;

TEST(FaultLossyLan, EveryAcknowledgedWriteDeliveredOnceInOrder) {
  const int devices = 16;
  const int steps = SoakMode() ? 400 : 40;
  upstream::testing::FakeCloud cloud;
  TetherdProcess gw;
  GatewayOptions go;
  go.cloud_url = cloud.url();
  go.heartbeat = "5s";
  go.session_timeout = "10s";  // a device retransmitting for a while is not declared gone
  gw.WriteConfig(FaultGatewayYaml(&go));
  gw.Start();
  ASSERT_TRUE(gw.WaitForLog("listening for CoAP", 10s)) << gw.Log();
  LossProfile lossy;
  LossyUdpProxy proxy(go.port, lossy, 1234);

  Fleet fleet(devices, proxy.port(), 1000ms, 10000);
  for (auto& d : fleet.devices()) d->SetRetransmit(150ms, 5);  // 150 ms, doubling: ~9.5 s in all
  LoadOptions load;
  load.depth = 1;  // as the SDK: one request at a time per device
  load.think = 5ms;
  load.max_steps = steps;
  load.end_session_chance = 0.02;
  load.seed = 5;
  auto t0 = std::chrono::steady_clock::now();
  fleet.Start(load);
  fleet.Join();
  fleet.EndAll();
  auto load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  CloudAudit audit(cloud, AuditOptions{});
  Tally tally("lossy LAN");
  bool delivered = audit.WaitDelivered(fleet, 30s);
  tally.Check(delivered, "delivery stalled for 30 s: " + audit.Missing());
  audit.Verify(fleet, tally);
  const size_t acked = fleet.Count(Outcome::kAcked);
  tally.Check(acked >= static_cast<size_t>(devices * steps) * 9 / 10, "most writes got through the lossy link");
  LossyUdpProxy::Stats st = proxy.stats();
  tally.Check(st.dropped > 0 && st.duplicated > 0 && st.reordered > 0, "the link really lost, duplicated, reordered");
  std::printf("lossy LAN: %d devices x %d writes over %.1f s, %zu acknowledged, %zu unanswered (%s; replies %s); "
              "proxy: %llu datagrams, %llu dropped, %llu duplicated, %llu reordered\n",
              devices, steps, load_s, acked, fleet.Count(Outcome::kUnknown), fleet.LatencySummary().c_str(),
              fleet.CodeHistogram().c_str(), static_cast<unsigned long long>(st.in),
              static_cast<unsigned long long>(st.dropped), static_cast<unsigned long long>(st.duplicated),
              static_cast<unsigned long long>(st.reordered));
}

}  // namespace
}  // namespace tether::testing
