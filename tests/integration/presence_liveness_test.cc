// Presence over real sockets against the real daemon: no live device declared gone when it
// re-opens its session mid-interval or the gateway restarts (issue 15.1), when the gateway's loop
// is stopped for longer than the session timeout (15.2), and a device that died before a restart
// detected within its timeout plus the documented grace (15.7).
//
// The SDK suites use SdkDevice, the SDK's real timers (19 s first interval, 8 s steps), so they
// take about a minute each and carry the "slow" label.
#include <gtest/gtest.h>
#include <signal.h>

#include <memory>
#include <thread>

#include "tests/integration/presence_device.h"
#include "tests/integration/presence_watch.h"
#include "tests/integration/sdk_client.h"
#include "tests/integration/sdk_device.h"
#include "tests/integration/tetherd_process.h"
#include "tests/support/eventually.h"

namespace tether::testing {
namespace {

using namespace std::chrono_literals;

class PresenceLiveness : public ::testing::Test {
 protected:
  // apps: "tok" (devices with tokens: stable ids) and "anon" (open, no token: no stable id).
  void StartGateway(const std::string& device_section) {
    port_ = static_cast<uint16_t>(FreePort());
    admin_port_ = static_cast<uint16_t>(FreePort(false));
    gw_.WriteConfig("device:\n  listen: \"127.0.0.1:" + std::to_string(port_) + "\"\n" + device_section +
                    "admin:\n  listen: \"127.0.0.1:" + std::to_string(admin_port_) + "\"\n"
                    "store:\n  path: ${STORE}\nlog:\n  level: info\n"
                    "apps:\n  - id: tok\n    default: true\n    auth:\n      mode: tokens\n      tokens:\n"
                    "        - { device: a1, token: token-a1 }\n        - { device: a2, token: token-a2 }\n"
                    "        - { device: watcher, token: token-watcher }\n"
                    "  - id: anon\n"
                    "routes:\n  - { name: tok, app: tok, match: \"**\" }\n  - { name: anon, app: anon, match: \"**\" }\n");
    gw_.Start();
    ASSERT_TRUE(gw_.WaitForLog("listening for CoAP", 10s)) << gw_.Log();
  }
  void Restart() {
    gw_.Start();
    ASSERT_TRUE(gw_.WaitForLog("listening for CoAP", 10s)) << gw_.Log();
  }
  // An SDK device of app "tok" (token) or "anon" (none), each on its own loopback address.
  std::unique_ptr<PresenceDevice> Device(const std::string& name, bool with_token, int n) {
    SdkDevice::Options o;
    o.app = with_token ? "tok" : "anon";
    o.auth_token = with_token ? "token-" + name : "";
    o.seed = static_cast<uint64_t>(n);
    o.source_ip = "127.0.1." + std::to_string(n);
    return std::make_unique<PresenceDevice>(port_, name, o);
  }

  // A ping answered as the SDK answers it: a steering 4.01 (later than the target after the last
  // ping the gateway judged: the first pings after a stall or an outage) is followed by /.rst.
  // Returns what the session said: 2.05, or the code that means it is gone.
  static std::string PingLikeTheSdk(SdkClient& c) {
    CoapReply r = c.Ping();
    if (r.CodeString() == "4.01" && r.payload == "ping later than the heartbeat target") return c.Rebind().CodeString();
    return r.CodeString();
  }

  TetherdProcess gw_;
  uint16_t port_ = 0, admin_port_ = 0;
};

// The trace: login ping (interval grows to 27 s), goOffline 9 s later, goOnline 1 s after
// that; the SDK's timer sends the next ping 28 s after the previous one, in a session only 18 s
// old. Judged against the session's age it got 2.05, the SDK grew its interval to 35 s and the
// device was declared gone while running. Judged against the device's previous ping it is steered.
TEST_F(PresenceLiveness, SdkDeviceReopeningMidIntervalIsNeverDeclaredGone) {
  StartGateway("  heartbeat_target: 20s\n  session_timeout: 35s\n");
  PresenceWatcher watcher(port_, "tok", "token-watcher");
  auto a1 = Device("a1", true, 1), b1 = Device("b1", false, 2);
  SdkFleet fleet;
  fleet.Add(&a1->sdk());
  fleet.Add(&b1->sdk());
  const int64_t t0 = SteadyMs();
  a1->Boot(t0);
  b1->Boot(t0);
  bool offline = false, online = false;
  fleet.Run(t0 + 67'000, [&](int64_t now) {
    if (!offline && now >= t0 + 9'000) {
      a1->GoOffline(now), b1->GoOffline(now), offline = true;
    }
    if (!online && now >= t0 + 10'000) a1->GoOnline(now), b1->GoOnline(now), online = true;
    return true;
  });
  for (PresenceDevice* d : {a1.get(), b1.get()}) {
    EXPECT_EQ(d->onlines(), 2) << d->name() << ": boot and goOnline";
    EXPECT_EQ(d->registrations(), 2) << d->name();
    EXPECT_EQ(d->FalseOfflines(watcher), std::vector<int64_t>{}) << d->name() << " declared gone while running";
    EXPECT_EQ(watcher.Value(d->name()), "online") << d->name();
    EXPECT_GE(d->sdk().counters().steered, 1u) << d->name() << ": the late first ping of the new session is steered";
    EXPECT_LT(d->sdk().counters().max_ping_gap_ms, 35'000u) << d->name();
    EXPECT_EQ(d->sdk().counters().reauths, 0u) << d->name();
  }
  EXPECT_GT(watcher.reads(), 100u);
}

// A gateway restart in the middle of the SDK's 27 s interval: the restored sessions know the
// device's last ping, so the late ping after the restart is steered like any other.
TEST_F(PresenceLiveness, SdkDevicesOutliveAGatewayRestartMidInterval) {
  StartGateway("  heartbeat_target: 20s\n  session_timeout: 35s\n");
  auto a1 = Device("a1", true, 3), b1 = Device("b1", false, 4);
  SdkFleet fleet;
  fleet.Add(&a1->sdk());
  fleet.Add(&b1->sdk());
  const int64_t t0 = SteadyMs();
  a1->Boot(t0);
  b1->Boot(t0);
  fleet.Run(t0 + 9'000);
  gw_.Kill9();
  Restart();
  PresenceWatcher watcher(port_, "tok", "token-watcher");
  fleet.Run(t0 + 67'000);
  for (PresenceDevice* d : {a1.get(), b1.get()}) {
    EXPECT_EQ(d->FalseOfflines(watcher), std::vector<int64_t>{}) << d->name() << " declared gone while running";
    EXPECT_EQ(watcher.Value(d->name()), "online") << d->name();
    EXPECT_GE(d->sdk().counters().steered, 1u) << d->name();
    EXPECT_LT(d->sdk().counters().max_ping_gap_ms, 35'000u) << d->name();
    EXPECT_EQ(d->sdk().counters().reauths, 0u) << d->name() << ": the restored session answered";
  }
}

// The daemon is stopped (SIGSTOP, as a VM pause or CPU starvation would) for longer than the
// session timeout. A device whose pings queued in the socket meanwhile, and one that said nothing
// during the stall but speaks right after it, both stay; a device that died before the stall is
// still declared gone (later by the stall's length: the stall counts as nobody's silence).
TEST_F(PresenceLiveness, StoppedGatewayDeclaresNobodyGoneForTheStall) {
  StartGateway("  heartbeat_target: 2s\n  session_timeout: 3s\n");
  PresenceWatcher watcher(port_, "tok", "token-watcher");
  SdkClient pinger(port_, "tok"), quiet(port_, "tok"), dead(port_, "anon");
  ASSERT_TRUE(pinger.Open("token-a1"));
  ASSERT_TRUE(quiet.Open("token-a2"));
  ASSERT_TRUE(dead.Open());
  for (auto [c, name] : {std::pair{&pinger, "pinger"}, {&quiet, "quiet"}, {&dead, "dead"}}) {
    ASSERT_EQ(c->Request(3, "pres/" + std::string(name), CborText("gone"), {".dis=add"}).CodeString(), "2.05");
    ASSERT_EQ(c->Put("pres/" + std::string(name), CborText("online")).CodeString(), "2.05");
  }
  ASSERT_TRUE(Eventually([&] { return watcher.Value("dead") == "online"; }, 5s));
  const int64_t dead_last = SteadyMs();
  for (int i = 0; i < 3; ++i) {
    std::this_thread::sleep_for(400ms);
    EXPECT_EQ(pinger.Ping().CodeString(), "2.05");
    EXPECT_EQ(quiet.Ping().CodeString(), "2.05");
  }
  gw_.Signal(SIGSTOP);
  const int64_t stopped = SteadyMs();
  for (int i = 0; i < 10; ++i) {  // 5 s: the pings wait in the socket
    std::this_thread::sleep_for(500ms);
    pinger.Send(1, ".ping");
  }
  gw_.Signal(SIGCONT);
  const int64_t resumed = SteadyMs();
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(PingLikeTheSdk(quiet), "2.05") << "still its session after the stall";
  for (int i = 0; i < 12; ++i) {
    std::this_thread::sleep_for(500ms);
    EXPECT_EQ(PingLikeTheSdk(pinger), "2.05");
    EXPECT_EQ(PingLikeTheSdk(quiet), "2.05");
  }
  for (const char* name : {"pinger", "quiet"}) {
    EXPECT_EQ(watcher.FirstSeen(name, "gone", 0), -1) << name << " declared gone although it kept its timeout";
    EXPECT_EQ(watcher.Value(name), "online") << name;
  }
  const int64_t gone = watcher.FirstSeen("dead", "gone", 0);
  ASSERT_GT(gone, 0) << "a device that died before the stall is still detected";
  EXPECT_LE(gone - dead_last, 3'000 + (resumed - stopped) + 1'000) << "timeout + the stall + 1 s";
  EXPECT_NE(gw_.Log().find("the event loop did not run for"), std::string::npos);
  ShellResult metrics = Shell("curl -sf http://127.0.0.1:" + std::to_string(admin_port_) + "/metrics");
  EXPECT_NE(metrics.out.find("tether_device_events_total{event=\"loop_stall\"} 1"), std::string::npos) << metrics.out;
  const size_t at = metrics.out.find("\ntether_loop_stalled_seconds_total ");
  ASSERT_NE(at, std::string::npos) << metrics.out;
  const double stalled = std::stod(metrics.out.substr(at + 35));
  EXPECT_GT(stalled, 4.0);
  EXPECT_LT(stalled, 6.0) << "the 5 s stop, less one 250 ms tick";
}

// A device dies; 8 s later the gateway is killed (-9) and stays down 10 s. Restored, its session is
// declared gone at max(last datagram + timeout, restart) + the 5 s grace, not a whole timeout after
// the restart; a device that kept pinging through the outage stays.
TEST_F(PresenceLiveness, DeviceDeadBeforeARestartIsDetectedWithinItsTimeoutPlusTheGrace) {
  StartGateway("  heartbeat_target: 10s\n  session_timeout: 20s\n");
  SdkClient live(port_, "tok"), dead(port_, "tok");
  live.set_timeout(300ms);
  ASSERT_TRUE(live.Open("token-a1"));
  ASSERT_TRUE(dead.Open("token-a2"));
  for (auto [c, name] : {std::pair{&live, "live"}, {&dead, "dead"}}) {
    ASSERT_EQ(c->Request(3, "pres/" + std::string(name), CborText("gone"), {".dis=add"}).CodeString(), "2.05");
    ASSERT_EQ(c->Put("pres/" + std::string(name), CborText("online")).CodeString(), "2.05");
  }
  const int64_t dead_last = SteadyMs();
  auto ping_for = [&](std::chrono::milliseconds d) {
    for (auto end = std::chrono::steady_clock::now() + d; std::chrono::steady_clock::now() < end;) {
      live.Ping();
      std::this_thread::sleep_for(1s);
    }
  };
  ping_for(8s);
  gw_.Kill9();
  ping_for(10s);  // unanswered: the gateway is down
  Restart();
  const int64_t restarted = SteadyMs();
  PresenceWatcher watcher(port_, "tok", "token-watcher");
  for (auto end = std::chrono::steady_clock::now() + 14s; std::chrono::steady_clock::now() < end;) {
    // The first ping after the outage is 18 s after the last one the gateway heard: steered.
    EXPECT_EQ(PingLikeTheSdk(live), "2.05") << "steered perhaps, not forgotten";
    std::this_thread::sleep_for(1s);
  }
  const int64_t gone = watcher.FirstSeen("dead", "gone", 0);
  ASSERT_GT(gone, 0) << "the dead device is declared gone";
  // max(L + 20 s, R) + 5 s, +1 s for the tick and the watcher (main: R + 20 s, L + 39 s here).
  EXPECT_LE(gone, std::max(dead_last + 20'000, restarted) + 5'000 + 1'000)
      << "declared gone " << gone - dead_last << " ms after its last datagram, " << gone - restarted
      << " ms after the restart";
  EXPECT_EQ(watcher.FirstSeen("live", "gone", 0), -1) << "the live device outlived the outage";
}

}  // namespace
}  // namespace tether::testing
