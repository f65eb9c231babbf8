// Fault suite: the gateway's wall clock jumps by +1 h or -1 h while the cloud is unreachable.
// tetherd runs under libfaketime (LD_PRELOAD, offset read from a file on every call, so it can
// change at run time); CLOCK_MONOTONIC and CLOCK_BOOTTIME stay real (DONT_FAKE_MONOTONIC=1), as
// they do when NTP or an operator steps a real clock. The cloud's clock runs kSkewMs ahead of
// the test's. After the cloud is back, in the cloud: the server timestamps of writes made before
// and after the jump, and of onDisconnect operations fired after it (goOffline and silence), are
// the true event time in cloud time within kToleranceMs; push ids encode that time too.
#include <gtest/gtest.h>

#include <unistd.h>

#include <ctime>
#include <fstream>
#include <random>
#include <thread>

#include "tests/integration/fault_harness.h"
#include "tests/integration/tetherd_process.h"

namespace tether::testing {
namespace {

using namespace std::chrono_literals;
constexpr int64_t kSkewMs = 5000;
constexpr int64_t kToleranceMs = 100;
constexpr int kDevices = 8;
const char* kFaketime = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

// Wall time (ms) of the last tetherd log line containing text ("%Y-%m-%dT%H:%M:%S.%e", local).
int64_t LogLineMs(const std::string& log, const std::string& text) {
  size_t at = log.rfind(text);
  if (at == std::string::npos) return -1;
  size_t line = log.rfind('\n', at);
  line = line == std::string::npos ? 0 : line + 1;
  std::tm tm{};
  const char* rest = strptime(log.c_str() + line, "%Y-%m-%dT%H:%M:%S", &tm);
  if (!rest || *rest != '.') return -1;
  tm.tm_isdst = -1;
  return static_cast<int64_t>(std::mktime(&tm)) * 1000 + std::atoi(rest + 1);
}

class FaultClockJump : public ::testing::TestWithParam<int> {};

TEST_P(FaultClockJump, ServerTimestampsStayTrueAcrossAWallClockJumpWhileOffline) {
  const int jump_s = GetParam();
  ASSERT_EQ(access(kFaketime, R_OK), 0) << kFaketime << " missing: install libfaketime (scripts/install-deps.sh)";
  upstream::testing::FakeCloud cloud;
  cloud.Control({{"op", "skew"}, {"ms", kSkewMs}});
  TetherdProcess gw;
  const std::string offset_file = gw.dir() + "/faketime";
  auto set_offset = [&](int seconds) {
    std::ofstream(offset_file) << (seconds >= 0 ? "+" : "") << seconds << "s\n";
  };
  set_offset(0);
  gw.SetEnv("LD_PRELOAD", kFaketime);
  gw.SetEnv("FAKETIME_TIMESTAMP_FILE", offset_file);
  gw.SetEnv("FAKETIME_NO_CACHE", "1");
  gw.SetEnv("DONT_FAKE_MONOTONIC", "1");
  const char* asan = std::getenv("ASAN_OPTIONS");  // libasan must otherwise come first in the link order
  gw.SetEnv("ASAN_OPTIONS", std::string(asan ? asan : "") + (asan ? ":" : "") + "verify_asan_link_order=0");
  GatewayOptions go;
  go.cloud_url = cloud.url();
  gw.WriteConfig(FaultGatewayYaml(&go));
  gw.Start();
  ASSERT_TRUE(gw.WaitForLog("listening for CoAP", 10s)) << gw.Log();

  Fleet fleet(kDevices, go.port, 2000ms, 4000);
  for (auto& d : fleet.devices()) ASSERT_TRUE(d->EnsureSession());
  SdkClient probe(go.port);
  ASSERT_TRUE(probe.Open("probe"));
  ASSERT_TRUE(WaitForCloudOffset(probe, kSkewMs, 50)) << "the gateway never estimated the cloud clock";

  LoadOptions load;
  load.depth = 2;
  load.think = 20ms;
  load.mix_push = 0.7;
  auto round = [&](int steps) {
    load.max_steps = steps;
    ++load.seed;
    fleet.Start(load);
    fleet.Join();
  };
  // Devices with a session say something every 500 ms while the test waits, so they stay.
  auto keep_alive = [&](std::chrono::milliseconds how_long) {
    for (auto end = std::chrono::steady_clock::now() + how_long; std::chrono::steady_clock::now() < end;) {
      for (auto& d : fleet.devices()) {
        if (d->has_session()) d->client().Request(1, ".info/connected");
      }
      std::this_thread::sleep_for(500ms);
    }
  };
  round(2);  // online, before anything happens
  const size_t online_before = fleet.Count(Outcome::kAcked);

  const int kDownMs = 12000;
  cloud.Control({{"op", "down"}, {"ms", kDownMs}});
  auto down_at = std::chrono::steady_clock::now();
  round(3);  // offline, true clock
  const size_t offline_before_jump = fleet.Count(Outcome::kAcked) - online_before;
  set_offset(jump_s);
  std::this_thread::sleep_for(200ms);
  round(3);  // offline, clock jumped
  const size_t offline_after_jump = fleet.Count(Outcome::kAcked) - online_before - offline_before_jump;
  // onDisconnect after the jump: half the devices go offline, one falls silent (fires on detection).
  for (int i = 0; i < kDevices / 2; ++i) fleet.devices()[i]->EndSession(true);
  fleet.devices()[kDevices / 2]->EndSession(false);
  keep_alive(5500ms);  // the silent one is detected (timeout 4 s + <= 1 s)
  ASSERT_LT(std::chrono::steady_clock::now() - down_at, std::chrono::milliseconds(kDownMs - 500))
      << "everything above must happen while the cloud is unreachable";
  // The daemon's wall clock really jumped: it logged the goOffline with the jumped time.
  int64_t logged = LogLineMs(gw.Log(), "went offline: running its onDisconnect operations");
  int64_t fired = fleet.devices()[0]->sessions().back().fire_from_ms;
  EXPECT_NEAR(static_cast<double>(logged - fired), jump_s * 1000.0, 2000.0) << "libfaketime did not move tetherd's clock";

  // The cloud comes back; the clock stays jumped. More writes online, then every session ends.
  keep_alive(std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::milliseconds(kDownMs) + 500ms -
                                                                    (std::chrono::steady_clock::now() - down_at)));
  round(2);
  fleet.EndAll();

  AuditOptions ao;
  ao.cloud_skew_ms = kSkewMs;
  ao.timestamp_tolerance_ms = kToleranceMs;
  ao.check_fire_time = true;
  ao.check_push_id_time = true;
  CloudAudit audit(cloud, ao);
  Tally tally(std::string("clock jump ") + (jump_s > 0 ? "+" : "") + std::to_string(jump_s / 3600) + " h");
  bool delivered = audit.WaitDelivered(fleet, 30s);
  tally.Check(delivered, "delivery stalled for 30 s: " + audit.Missing());
  audit.Verify(fleet, tally);
  tally.Check(offline_before_jump >= kDevices * 2 * 3 * 9 / 10 && offline_after_jump >= kDevices * 2 * 3 * 9 / 10,
              "the offline writes ran: " + fleet.CodeHistogram());
  std::printf("clock jump %+d s while offline: %zu writes acknowledged (%zu offline before the jump, %zu after it), "
              "%d sessions ended after the jump (goOffline and silence), replies: %s\n",
              jump_s, fleet.Count(Outcome::kAcked), offline_before_jump, offline_after_jump, kDevices / 2 + 1,
              fleet.CodeHistogram().c_str());
}

INSTANTIATE_TEST_SUITE_P(PlusMinusOneHour, FaultClockJump, ::testing::Values(3600, -3600),
                         [](const ::testing::TestParamInfo<int>& p) { return p.param > 0 ? "Forward" : "Backward"; });

}  // namespace
}  // namespace tether::testing
