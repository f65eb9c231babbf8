// The device protocol's sessions against a running tetherd over real UDP, as the Wilddog SDK keeps
// them: onDisconnect, silence and liveness, source ports and rebinding, kill -9 and re-auth.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <memory>
#include <thread>

#include "tests/integration/device_protocol_fixture.h"

namespace tether::testing {
namespace {

TEST_F(DeviceProtocol, OnDisconnectOpsRunOnGoOfflineInOrder) {
  StartGateway();
  SdkClient dev(port_), other(port_);
  ASSERT_TRUE(dev.Open());
  ASSERT_TRUE(other.Open());
  ASSERT_EQ(dev.Put("status", CborMap({{"online", CborText("yes")}})).CodeString(), "2.05");
  // dset.log, dpush.log, drm.log, dcancel.log
  EXPECT_EQ(dev.Request(kPut, "status", CborMap({{"online", CborText("no")}}), {".dis=add"}).CodeString(), "2.05");
  EXPECT_EQ(dev.Request(kPost, "log", CborMap({{"k", CborText("v")}}), {".dis=add"}).CodeString(), "2.05");
  EXPECT_EQ(dev.Request(kPut, "gone", CborText("x"), {".dis=add"}).CodeString(), "2.05");
  EXPECT_EQ(dev.Request(kDelete, "gone", "", {".dis=add"}).CodeString(), "2.05") << "later op on the same path wins";
  EXPECT_EQ(dev.Request(kPut, "cancelled", CborText("x"), {".dis=add"}).CodeString(), "2.05");
  EXPECT_EQ(dev.Request(kDelete, "cancelled", "", {".dis=rm"}).CodeString(), "2.05");
  EXPECT_EQ(dev.Request(kPut, "seen", CborMap({{"at", CborMap({{".sv", CborText("timestamp")}})}}), {".dis=add"}).CodeString(), "2.05");
  // Nothing has run yet.
  EXPECT_EQ(Hex(other.Get("status").payload), Hex(CborMap({}).substr(0, 0) + "\xa1" + CborText("online") + CborText("yes")));
  int64_t before = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  // offon.log: goOffline answers 2.05 and the operations run at once.
  EXPECT_EQ(dev.GoOffline().CodeString(), "2.05");
  EXPECT_EQ(other.Request(kGet, "status", "", {}, {}, {}, 50u).payload, "{\"online\":\"no\"}");
  std::string log = other.Request(kGet, "log", "", {}, {}, {}, 50u).payload;
  EXPECT_NE(log.find("{\"k\":\"v\"}"), std::string::npos) << log;
  EXPECT_EQ(other.Request(kGet, "gone", "", {}, {}, {}, 50u).payload, "null");
  EXPECT_EQ(other.Request(kGet, "cancelled", "", {}, {}, {}, 50u).payload, "null");
  std::string seen = other.Request(kGet, "seen/at", "", {}, {}, {}, 50u).payload;
  int64_t at = std::stoll(seen);
  EXPECT_GE(at, before - 5);
  EXPECT_LE(at, before + 2000);
  // The session is over; goOnline is a fresh POST /.cs (offon.log).
  EXPECT_EQ(dev.Ping().CodeString(), "4.01");
  ASSERT_TRUE(dev.Open());
  EXPECT_EQ(dev.Ping().CodeString(), "2.05");
}

TEST_F(DeviceProtocol, OnDisconnectRegisteredJustBeforeGoOfflineStillRuns) {
  StartGateway();
  SdkClient dev(port_), other(port_);
  ASSERT_TRUE(dev.Open());
  ASSERT_TRUE(other.Open());
  for (int round = 0; round < 20; ++round) {
    // Pipelined: the registration may still be committing when goOffline reads the operations.
    std::string add = dev.Send(kPut, "race/r" + std::to_string(round), CborText("fired"), {".dis=add"});
    std::string off = dev.Send(kGet, ".off");
    EXPECT_EQ(dev.Await(add).CodeString(), "2.05");
    EXPECT_EQ(dev.Await(off).CodeString(), "2.05");
    EXPECT_EQ(other.Get("race/r" + std::to_string(round)).payload, CborText("fired")) << "round " << round;
    ASSERT_TRUE(dev.Open());
  }
}

TEST_F(DeviceProtocol, DisEventTraceAcrossFourApps) {
  StartGateway();
  // t_test_disEvent.log: four apps, each its own data, each a different onDisconnect op.
  SdkClient a1(port_, "myapp"), a2(port_, "app2"), a3(port_, "app3"), a4(port_, "app4");
  for (SdkClient* c : {&a1, &a2, &a3, &a4}) ASSERT_TRUE(c->Open());
  EXPECT_EQ(a1.Delete("dis").CodeString(), "2.05");
  EXPECT_EQ(a2.Delete("dis").CodeString(), "2.05");
  EXPECT_EQ(a3.Put("dis", Unhex("bf62726d65646973726dff")).CodeString(), "2.05");
  EXPECT_EQ(a4.Put("dis", Unhex("bf6663616e636c656964697363616e636c65ff")).CodeString(), "2.05");
  EXPECT_EQ(a1.Request(kPut, "dis", Unhex("bf6373657466646973736574ff"), {".dis=add"}).CodeString(), "2.05");
  EXPECT_EQ(a2.Request(kPost, "dis", Unhex("bf64707573686764697370757368ff"), {".dis=add"}).CodeString(), "2.05");
  EXPECT_EQ(a3.Request(kDelete, "dis", "", {".dis=add"}).CodeString(), "2.05");
  EXPECT_EQ(a4.Request(kDelete, "dis", "", {".dis=add"}).CodeString(), "2.05");
  EXPECT_EQ(a4.Request(kDelete, "dis", "", {".dis=rm"}).CodeString(), "2.05");
  for (SdkClient* c : {&a1, &a2, &a3, &a4}) EXPECT_EQ(c->GoOffline().CodeString(), "2.05");
  for (SdkClient* c : {&a1, &a2, &a3, &a4}) ASSERT_TRUE(c->Open());
  EXPECT_EQ(a1.Request(kGet, "dis", "", {}, {}, {}, 50u).payload, "{\"set\":\"disset\"}");
  std::string pushed = a2.Request(kGet, "dis", "", {}, {}, {}, 50u).payload;
  EXPECT_EQ(pushed.size(), std::string("{\"-xxxxxxxxxxxxxxxxxxx\":{\"push\":\"dispush\"}}").size()) << pushed;
  EXPECT_EQ(a3.Request(kGet, "dis", "", {}, {}, {}, 50u).payload, "null");
  EXPECT_EQ(a4.Request(kGet, "dis", "", {}, {}, {}, 50u).payload, "{\"cancle\":\"discancle\"}");
}

TEST_F(DeviceProtocol, SilentDeviceIsDeclaredGoneWithinTimeoutPlusOneSecond) {
  StartGateway();
  SdkClient dev(port_), other(port_);
  ASSERT_TRUE(dev.Open());
  ASSERT_TRUE(other.Open());
  ASSERT_EQ(dev.Request(kPut, "presence/dev", CborText("offline"), {".dis=add"}).CodeString(), "2.05");
  ASSERT_EQ(dev.Put("presence/dev", CborText("online")).CodeString(), "2.05");
  ASSERT_EQ(other.Observe("presence").CodeString(), "2.05");
  auto silent_since = std::chrono::steady_clock::now();
  // `other` keeps its session alive with pings; `dev` goes silent.
  std::optional<CoapReply> n;
  while (!n && std::chrono::steady_clock::now() - silent_since < 6s) {
    EXPECT_EQ(other.Ping().CodeString(), "2.05");
    n = other.WaitNotification(400ms);
  }
  ASSERT_TRUE(n) << gw_.Log();
  auto latency = std::chrono::steady_clock::now() - silent_since;
  EXPECT_EQ(n->payload, "\xa1" + CborText("dev") + CborText("offline"));
  EXPECT_GE(latency, 1900ms) << "not before the 2 s timeout";
  EXPECT_LE(latency, 3000ms) << "within timeout + 1 s";
  EXPECT_EQ(dev.Ping().CodeString(), "4.01") << "the session is gone";
}

TEST_F(DeviceProtocol, AnyDatagramCountsAsLifeAndLatePingsAreSteered) {
  StartGateway();
  SdkClient dev(port_);
  ASSERT_TRUE(dev.Open());
  EXPECT_EQ(dev.Ping().CodeString(), "2.05");
  // Reads every 600 ms keep the session alive past the 2 s timeout without any ping.
  for (int i = 0; i < 6; ++i) {
    std::this_thread::sleep_for(600ms);
    ASSERT_EQ(dev.Get("x").CodeString(), "2.05") << i;
  }
  // The next ping comes 3.6 s after the previous one, later than target (1 s) + 1 s: 4.01.
  EXPECT_EQ(dev.Ping().CodeString(), "4.01");
  // The SDK then re-binds with its long token, and its session goes on.
  EXPECT_EQ(dev.Rebind().CodeString(), "2.05");
  EXPECT_EQ(dev.Ping().CodeString(), "2.05");
}

TEST_F(DeviceProtocol, NewSourcePortNeedsRebind) {
  StartGateway();
  SdkClient dev(port_);
  ASSERT_TRUE(dev.Open());
  ASSERT_EQ(dev.Put("k", CborUint(1)).CodeString(), "2.05");
  dev.NewSourcePort();
  EXPECT_EQ(dev.Ping().CodeString(), "4.01") << "ping from another address than the session's";
  // Not only pings: nothing is served to an address the session is not bound to (it may be forged,
  // RFC 7252 §11.3); the answer is a short 4.01, never larger than the request.
  const CoapReply moved = dev.Get("k");
  EXPECT_EQ(moved.CodeString(), "4.01") << "a data request from another address than the session's";
  EXPECT_EQ(moved.payload, "use /.rst");
  EXPECT_EQ(dev.Rebind().CodeString(), "2.05");
  EXPECT_EQ(dev.Ping().CodeString(), "2.05");
  EXPECT_EQ(dev.Get("k").payload, CborUint(1)) << "the session and its data, at the new address";
  SdkClient stranger(port_);
  stranger.set_short_token(dev.short_token());
  EXPECT_EQ(stranger.Rebind().CodeString(), "4.00") << "no long token, no rebinding";
}

TEST_F(DeviceProtocol, SessionsAndOnDisconnectSurviveKill9) {
  StartGateway();
  SdkClient stays(port_), leaves(port_), watcher(port_);
  ASSERT_TRUE(stays.Open());
  ASSERT_TRUE(leaves.Open());
  ASSERT_EQ(stays.Request(kPut, "p/stays", CborText("off"), {".dis=add"}).CodeString(), "2.05");
  ASSERT_EQ(leaves.Request(kPut, "p/leaves", CborText("off"), {".dis=add"}).CodeString(), "2.05");
  ASSERT_EQ(stays.Put("p/stays", CborText("on")).CodeString(), "2.05");
  ASSERT_EQ(leaves.Put("p/leaves", CborText("on")).CodeString(), "2.05");
  gw_.Kill9();
  Restart();
  // The device that comes back within its timeout continues with the same session.
  ASSERT_TRUE(watcher.Open());
  EXPECT_EQ(stays.Ping().CodeString(), "2.05") << gw_.Log();
  EXPECT_EQ(stays.Request(kGet, "p", "", {}, {}, {}, 50u).payload, "{\"leaves\":\"on\",\"stays\":\"on\"}");
  // The one that does not is declared gone after its timeout, and its op runs exactly once.
  for (int i = 0; i < 8; ++i) {
    std::this_thread::sleep_for(400ms);
    stays.Ping();
    watcher.Ping();
  }
  EXPECT_EQ(watcher.Request(kGet, "p", "", {}, {}, {}, 50u).payload, "{\"leaves\":\"off\",\"stays\":\"on\"}");
  // Undo by hand; a second firing (e.g. after another restart) would set it back to "off".
  ASSERT_EQ(watcher.Put("p/leaves", CborText("manual")).CodeString(), "2.05");
  gw_.Kill9();
  Restart();
  ASSERT_TRUE(watcher.Open());
  for (int i = 0; i < 8; ++i) {
    std::this_thread::sleep_for(400ms);
    stays.Ping();
    watcher.Ping();
  }
  EXPECT_EQ(watcher.Request(kGet, "p/leaves", "", {}, {}, {}, 50u).payload, "\"manual\"") << "fired once, not twice";
  EXPECT_EQ(stays.Ping().CodeString(), "2.05");
}

// docs/device-protocol.md, /.rst: the SDK reopened its socket (new source port) and rebinds.
// Its observations must follow it; before the fix they kept going to the dead port until a CON
// timed out and the observer was dropped while the SDK kept waiting on its subscription.
TEST_F(DeviceProtocol, RebindMovesObservationsToTheNewPort) {
  StartGateway();
  SdkClient watcher(port_), writer(port_);
  ASSERT_TRUE(watcher.Open());
  ASSERT_TRUE(writer.Open());
  CoapReply reg = watcher.Observe("room");
  ASSERT_EQ(reg.CodeString(), "2.05");
  ASSERT_EQ(writer.Put("room/t", CborUint(1)).CodeString(), "2.05");
  ASSERT_TRUE(watcher.WaitFreshNotification(reg.token, 3s));
  const uint16_t old_port = watcher.local_port();
  watcher.NewSourcePort();
  ASSERT_NE(watcher.local_port(), old_port);
  EXPECT_EQ(watcher.Ping().CodeString(), "4.01") << "another address than the session's";
  ASSERT_EQ(watcher.Rebind().CodeString(), "2.05");
  for (int i = 2; i <= 25; ++i) {  // past the 20th notification, which is a CON
    ASSERT_EQ(writer.Put("room/t", CborUint(i)).CodeString(), "2.05");
    auto n = watcher.WaitFreshNotification(reg.token, 3s);
    ASSERT_TRUE(n) << "notification " << i << " did not reach the new port";
    EXPECT_EQ(n->payload, "\xa1" + CborText("t") + CborUint(i));
  }
  EXPECT_EQ(watcher.stale_notifications(), 0u);
  EXPECT_EQ(watcher.Ping().CodeString(), "2.05");
}

// A gateway restart (kill -9) must not silence observations: the device's session resumes and
// its pings get 2.05, so it never re-subscribes. Observations are persisted with the session and
// re-created on restart with Observe values the SDK accepts as newer (it compares as RFC 7641 §3.4:
// shared/protocol traces + wilddog-client-c _wilddog_coap_isObserveNew).
TEST_F(DeviceProtocol, ObservationsSurviveKill9WithIncreasingSequence) {
  StartGateway();
  SdkClient watcher(port_), writer(port_);
  ASSERT_TRUE(watcher.Open());
  ASSERT_TRUE(writer.Open());
  CoapReply reg = watcher.Observe("room");
  ASSERT_EQ(reg.CodeString(), "2.05");
  CoapReply info = watcher.Request(kGet, ".info/connected", "", {}, 0u);
  ASSERT_EQ(info.CodeString(), "2.05");
  EXPECT_EQ(info.payload, "\xf4") << "local-only: not connected";
  ASSERT_TRUE(info.observe);
  for (int i = 1; i <= 3; ++i) {
    ASSERT_EQ(writer.Put("room/t", CborUint(i)).CodeString(), "2.05");
    ASSERT_TRUE(watcher.WaitFreshNotification(reg.token, 3s)) << i;
  }
  for (int restart = 1; restart <= 2; ++restart) {
    gw_.Kill9();
    Restart();
    ASSERT_EQ(watcher.Ping().CodeString(), "2.05") << "session resumed (restart " << restart << ")";
    // Each restored observation first hears the current snapshot (changes may have been missed).
    auto now = watcher.WaitFreshNotification(reg.token, 3s);
    ASSERT_TRUE(now) << "restart " << restart << "\n" << gw_.Log();
    EXPECT_EQ(now->payload, "\xa1" + CborText("t") + CborUint(restart == 1 ? 3 : 10));
    auto connected = watcher.WaitFreshNotification(info.token, 3s);
    ASSERT_TRUE(connected) << ".info/connected observation restored";
    EXPECT_EQ(connected->payload, "\xf4");
    // ... then every change, as before the restart.
    for (int v = 0; v < 2; ++v) {
      const int value = restart == 1 ? 9 + v : 20 + v;
      ASSERT_EQ(writer.Put("room/t", CborUint(value)).CodeString(), "2.05");
      auto n = watcher.WaitFreshNotification(reg.token, 3s);
      ASSERT_TRUE(n) << "restart " << restart << " value " << value;
      EXPECT_EQ(n->payload, "\xa1" + CborText("t") + CborUint(value));
    }
    EXPECT_EQ(watcher.stale_notifications(), 0u) << "the SDK would have ignored some";
  }
  // A restored observation follows a rebinding too (the SDK reopens its socket when the gateway
  // was away for more than 10 s).
  watcher.NewSourcePort();
  ASSERT_EQ(watcher.Rebind().CodeString(), "2.05");
  ASSERT_EQ(writer.Put("room/t", CborUint(30)).CodeString(), "2.05");
  auto moved = watcher.WaitFreshNotification(reg.token, 3s);
  ASSERT_TRUE(moved);
  EXPECT_EQ(moved->payload, "\xa1" + CborText("t") + CborUint(30));
  // Unsubscribing a restored observation works as before.
  EXPECT_EQ(watcher.Unobserve("room").CodeString(), "2.05");
  ASSERT_EQ(writer.Put("room/t", CborUint(99)).CodeString(), "2.05");
  EXPECT_FALSE(watcher.WaitFreshNotification(reg.token, 500ms));
}

// After re-authenticating, the SDK resends its outstanding requests (its observe among them) with
// the same message ID and token and the new .cs: from the same port (duplicate detection must be
// scoped to the session binding, or it replays the old session's cached reply) or from a new one.
TEST_F(DeviceProtocol, ReusedMidAndTokenAfterReauthAreAnsweredAfresh) {
  StartGateway();
  SdkClient dev(port_), writer(port_);
  ASSERT_TRUE(dev.Open());
  ASSERT_TRUE(writer.Open());
  CoapReply reg = dev.Observe("a");
  ASSERT_EQ(reg.CodeString(), "2.05");
  EXPECT_EQ(reg.payload, kNull);
  const std::string observe_packet = dev.last_request();
  ASSERT_EQ(writer.Put("a", CborUint(5)).CodeString(), "2.05");
  ASSERT_TRUE(dev.WaitFreshNotification(reg.token, 3s));
  // Same port: a new session replaces the old one (and its observation).
  const std::string old_session = dev.short_token();
  ASSERT_TRUE(dev.Open());
  ASSERT_NE(dev.short_token(), old_session);
  CoapReply again = dev.Resend(observe_packet);
  ASSERT_EQ(again.CodeString(), "2.05");
  EXPECT_EQ(again.payload, CborUint(5)) << "a fresh answer, not the cached one (null)";
  ASSERT_TRUE(again.observe) << "registered in the new session";
  ASSERT_EQ(writer.Put("a", CborUint(6)).CodeString(), "2.05");
  auto n = dev.WaitFreshNotification(reg.token, 3s);
  ASSERT_TRUE(n) << "the new session's observation notifies";
  EXPECT_EQ(n->payload, CborUint(6));

  // New port (the SDK reopened its socket, then re-authenticated): same MID and token again.
  SdkClient moving(port_);
  ASSERT_TRUE(moving.Open());
  CoapReply reg2 = moving.Observe("b");
  ASSERT_EQ(reg2.CodeString(), "2.05");
  const std::string packet2 = moving.last_request();
  moving.NewSourcePort();
  ASSERT_TRUE(moving.Open());
  ASSERT_EQ(writer.Put("b", CborUint(1)).CodeString(), "2.05");
  CoapReply again2 = moving.Resend(packet2);
  ASSERT_EQ(again2.CodeString(), "2.05");
  EXPECT_EQ(again2.payload, CborUint(1));
  ASSERT_EQ(writer.Put("b", CborUint(2)).CodeString(), "2.05");
  auto n2 = moving.WaitFreshNotification(reg2.token, 3s);
  ASSERT_TRUE(n2) << "notified at the new port";
  EXPECT_EQ(n2->payload, CborUint(2));
  // A plain retransmission within the session is still a duplicate: no second write.
  const std::string put = moving.Send(kPost, "list", CborText("once"));
  ASSERT_EQ(moving.Await(put).CodeString(), "2.05");
  ASSERT_EQ(moving.Resend(moving.last_request()).CodeString(), "2.05");
  std::string list = writer.Request(kGet, "list", "", {}, {}, {}, 50u).payload;
  EXPECT_EQ(std::count(list.begin(), list.end(), ':'), 1) << "pushed once: " << list;
}

// A retransmitted POST /.cs gets the first answer (the same tokens, one session) until the device
// uses its session; the engine then lets the cached answer go, and a stale copy arriving later is
// a new open that replaces the session (docs/device-protocol.md, "Transport").
TEST_F(DeviceProtocol, OpenRetransmissionGetsTheFirstAnswerUntilTheSessionIsUsed) {
  StartGateway();
  SdkClient dev(port_);
  const std::string open = dev.PrepareOpen("");
  ASSERT_TRUE(dev.AcceptOpen(dev.Resend(open)));
  const std::string first = dev.short_token();
  ASSERT_TRUE(dev.AcceptOpen(dev.Resend(open)));  // the SDK's retransmission at +2 s
  EXPECT_EQ(dev.short_token(), first) << "the cached answer";
  EXPECT_EQ(Metric("tether_sessions_unconfirmed"), 1) << "one session";
  ASSERT_EQ(dev.Ping().CodeString(), "2.05");
  ASSERT_TRUE(dev.AcceptOpen(dev.Resend(open)));
  EXPECT_NE(dev.short_token(), first) << "opened anew";
  ASSERT_EQ(dev.Ping().CodeString(), "2.05") << "the new session serves";
}

// onDisconnect operations pass the access rules in force when they fire, not when registered.
TEST_F(DeviceProtocol, OnDisconnectIsCheckedAgainstTheRoutesWhenItFires) {
  StartGateway();
  SdkClient dev(port_), other(port_);
  ASSERT_TRUE(dev.Open());
  ASSERT_TRUE(other.Open());
  ASSERT_EQ(dev.Put("status/dev", CborText("on")).CodeString(), "2.05");
  ASSERT_EQ(dev.Request(kPut, "status/dev", CborText("off"), {".dis=add"}).CodeString(), "2.05");
  const std::string route = "  - { name: myapp, app: myapp, match: \"**\" }";
  Reload(route, "  - { name: myapp, app: myapp, match: \"**\", write: none }",
         [&] { return other.Put("status/probe", CborUint(1)).CodeString() == "4.03"; });
  EXPECT_EQ(dev.GoOffline().CodeString(), "2.05");
  EXPECT_EQ(other.Get("status/dev").payload, CborText("on")) << "the write is no longer allowed: denied";
  EXPECT_EQ(Metric("tether_device_events_total{event=\"ondisconnect_denied\"}"), 1);
  EXPECT_EQ(Metric("tether_ondisconnect_fired_total"), 0);
  EXPECT_TRUE(gw_.WaitForLog("denied by the current routes", 2s));
}

// {".sv":"timestamp"} in an onDisconnect op resolves to the moment the gateway declared the device
// gone: for a silent device, its last datagram + the session timeout (2 s), within one 250 ms tick.
TEST_F(DeviceProtocol, TimeoutResolvesServerTimestampToTheDetectionMoment) {
  StartGateway();
  SdkClient dev(port_), other(port_);
  ASSERT_TRUE(dev.Open());
  ASSERT_TRUE(other.Open());
  ASSERT_EQ(dev.Request(kPut, "seen/dev", CborMap({{".sv", CborText("timestamp")}}), {".dis=add"}).CodeString(),
            "2.05");
  CoapReply reg = other.Observe("seen");
  ASSERT_EQ(reg.CodeString(), "2.05");
  const int64_t last_sent = WallMs();
  ASSERT_EQ(dev.Ping().CodeString(), "2.05");  // its last datagram
  const int64_t last_answered = WallMs();
  std::optional<CoapReply> n;
  while (!n && WallMs() - last_sent < 6000) {
    EXPECT_EQ(other.Ping().CodeString(), "2.05");
    n = other.WaitFreshNotification(reg.token, 300ms);
  }
  const int64_t notified = WallMs();
  ASSERT_TRUE(n) << gw_.Log();
  std::string seen = other.Request(kGet, "seen/dev", "", {}, {}, {}, 50u).payload;
  const int64_t at = std::stoll(seen);
  EXPECT_GE(at, last_sent + 2000 - 20) << "not before the timeout";
  EXPECT_LE(at, last_answered + 2000 + 250 + 50) << "at the first liveness tick after it";
  EXPECT_LE(at, notified) << "resolved when declared gone, not later";
}

}  // namespace
}  // namespace tether::testing
