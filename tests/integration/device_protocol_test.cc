// The device protocol (docs/device-protocol.md) against a running tetherd over real UDP, spoken
// the way the Wilddog SDK speaks it (see shared/protocol/traces).
#include <gtest/gtest.h>
#include <signal.h>

#include <memory>
#include <thread>

#include "tests/integration/sdk_client.h"
#include "tests/integration/tetherd_process.h"

namespace tether::testing {
namespace {

using namespace std::chrono_literals;

constexpr uint8_t kGet = 1, kPost = 2, kPut = 3, kDelete = 4, kPatch = 6;

class DeviceProtocol : public ::testing::Test {
 protected:
  void StartGateway(const std::string& extra = "") {
    port_ = static_cast<uint16_t>(FreePort());
    config_ = "device:\n  listen: \"127.0.0.1:" + std::to_string(port_) + "\"\n" +
              "  heartbeat_target: 1s\n  session_timeout: 2s\n  max_payload: 2KiB\n"
              "admin:\n  listen: \"127.0.0.1:" + std::to_string(FreePort(false)) + "\"\n" +
              "store:\n  path: ${STORE}\nlog:\n  level: debug\n"
              "apps:\n  - id: myapp\n    default: true\n  - id: app2\n  - id: app3\n  - id: app4\n"
              "  - id: locked\n    auth: { mode: tokens, tokens: [ { device: dev1, token: SECRETTOKEN } ] }\n"
              "routes:\n"
              "  - { name: myapp, app: myapp, match: \"**\" }\n"
              "  - { name: app2, app: app2, match: \"**\", cloud: \"a2/**\" }\n"
              "  - { name: app3, app: app3, match: \"**\", cloud: \"a3/**\" }\n"
              "  - { name: app4, app: app4, match: \"**\", cloud: \"a4/**\" }\n"
              "  - { name: own, app: locked, match: \"devices/{device}/**\", read: own, write: own }\n"
              "  - { name: ro, app: locked, match: \"config/**\", write: none }\n" +
              extra;
    gw_.WriteConfig(config_);
    gw_.Start();
    ASSERT_TRUE(gw_.WaitForLog("listening for CoAP", 10s)) << gw_.Log();
  }
  void Restart() {
    gw_.Start();
    ASSERT_TRUE(gw_.WaitForLog("listening for CoAP", 10s)) << gw_.Log();
  }

  void TearDown() override {
    if (HasFailure()) {
      std::string log = gw_.Log();
      std::fprintf(stderr, "---- tetherd log (tail) ----\n%s\n", log.substr(log.size() > 6000 ? log.size() - 6000 : 0).c_str());
    }
  }

  TetherdProcess gw_;
  uint16_t port_ = 0;
  std::string config_;
};

const std::string kNull = "\xf6";

TEST_F(DeviceProtocol, AuthGetSetPushRemoveAsInTraces) {
  StartGateway();
  SdkClient dev(port_);
  // auth.log: open without token, then with a raw token; both answer {"s","l"}.
  ASSERT_TRUE(dev.Open());
  std::string first = dev.short_token();
  ASSERT_TRUE(dev.Open("ECRETTOKEN"));
  EXPECT_NE(dev.short_token(), first);
  // get.log: an empty location reads as CBOR null.
  CoapReply r = dev.Get("a");
  EXPECT_EQ(r.CodeString(), "2.05");
  EXPECT_EQ(r.type, 2) << "piggybacked ACK";
  EXPECT_EQ(r.payload, kNull);
  EXPECT_EQ(dev.Ping().CodeString(), "2.05");
  // set.log: PUT /a {"b":"x"} as an indefinite map; GET answers a definite map.
  EXPECT_EQ(dev.Put("a", Unhex("bf61626178ff")).CodeString(), "2.05");
  EXPECT_EQ(Hex(dev.Get("a").payload), "a161626178");
  // push.log: POST answers the new key as raw bytes; it sorts after earlier keys.
  CoapReply p1 = dev.Post("a", Unhex("bf61636179ff"));
  CoapReply p2 = dev.Post("a", Unhex("bf61636179ff"));
  ASSERT_EQ(p1.CodeString(), "2.05");
  EXPECT_EQ(p1.payload.size(), 20u);
  EXPECT_LT(p1.payload, p2.payload);
  CoapReply all = dev.Request(kGet, "a", "", {}, {}, {}, 50u);
  EXPECT_EQ(all.payload, "{\"" + p1.payload + "\":{\"c\":\"y\"},\"" + p2.payload + "\":{\"c\":\"y\"},\"b\":\"x\"}");
  // rm.log: DELETE /a/b.
  EXPECT_EQ(dev.Delete("a/b").CodeString(), "2.05");
  EXPECT_EQ(dev.Request(kGet, "a/b", "", {}, {}, {}, 50u).payload, "null");
  // PATCH [ext]: multi-path update.
  EXPECT_EQ(dev.Request(kPatch, "u", "{\"x/y\":1,\"z\":2}", {}, {}, 50u).CodeString(), "2.05");
  EXPECT_EQ(dev.Request(kGet, "u", "", {}, {}, {}, 50u).payload, "{\"x\":{\"y\":1},\"z\":2}");
  // t_test_step.log: a byte-string value reads back as the same byte string.
  EXPECT_EQ(dev.Put("bytes", Unhex("bf644c33633145f60c000006ff")).CodeString(), "2.05");
  EXPECT_EQ(Hex(dev.Get("bytes").payload), "a1644c33633145f60c000006");
  // Root set and read (t_test_step.log).
  EXPECT_EQ(dev.Request(kPut, "", "{\"L1\":{\"L2\":true}}", {}, {}, 50u).CodeString(), "2.05");
  EXPECT_EQ(dev.Request(kGet, "", "", {}, {}, {}, 50u).payload, "{\"L1\":{\"L2\":true}}");
}

TEST_F(DeviceProtocol, ObserveNotifiesFullSnapshotWithIncreasingSequence) {
  StartGateway();
  SdkClient watcher(port_), writer(port_);
  ASSERT_TRUE(watcher.Open());
  ASSERT_TRUE(writer.Open());
  CoapReply reg = watcher.Observe("room");
  ASSERT_EQ(reg.CodeString(), "2.05");
  ASSERT_TRUE(reg.observe.has_value());
  EXPECT_EQ(reg.payload, kNull);
  std::string token = reg.token;
  uint32_t last_seq = *reg.observe;
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(writer.Put("room/light", CborUint(i + 1)).CodeString(), "2.05");
    auto n = watcher.WaitNotification(3s);
    ASSERT_TRUE(n) << "notification " << i;
    EXPECT_EQ(n->token, token);
    ASSERT_TRUE(n->observe);
    EXPECT_GT(*n->observe, last_seq);
    last_seq = *n->observe;
    EXPECT_EQ(n->payload, "\xa1" + CborText("light") + CborUint(i + 1)) << "full snapshot at the observed path";
  }
  // A write elsewhere, or one that changes nothing, sends nothing.
  ASSERT_EQ(writer.Put("elsewhere", CborUint(1)).CodeString(), "2.05");
  ASSERT_EQ(writer.Put("room/light", CborUint(3)).CodeString(), "2.05");
  EXPECT_FALSE(watcher.WaitNotification(500ms));
  // Unsubscribe with a new token (obs.log, t_test_step.log): no more notifications.
  EXPECT_EQ(watcher.Unobserve("room").CodeString(), "2.05");
  ASSERT_EQ(writer.Put("room/light", CborUint(9)).CodeString(), "2.05");
  EXPECT_FALSE(watcher.WaitNotification(500ms));
}

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
  EXPECT_EQ(dev.Get("k").CodeString(), "2.05") << "data requests are checked by .cs only";
  EXPECT_EQ(dev.Rebind().CodeString(), "2.05");
  EXPECT_EQ(dev.Ping().CodeString(), "2.05");
  SdkClient stranger(port_);
  stranger.set_short_token(dev.short_token());
  EXPECT_EQ(stranger.Rebind().CodeString(), "4.00") << "no long token, no rebinding";
}

TEST_F(DeviceProtocol, BadInputGetsPrecise4xxAndTheSessionStaysUsable) {
  StartGateway();
  SdkClient dev(port_);
  ASSERT_TRUE(dev.Open());
  struct Case {
    CoapReply reply;
    const char* code;
    const char* diagnostic;
  };
  std::vector<Case> cases = {
      {dev.Put("x", Unhex("bf6162")), "4.00", "malformed CBOR"},
      {dev.Put("x", Unhex("a1616101ff")), "4.00", "trailing bytes after the CBOR value"},
      {dev.Put("x", CborMap({{"a.b", CborUint(1)}})), "4.00", "key 'a.b' contains one of . $ # [ ] /"},
      {dev.Request(kPut, "x", "{\"a\":", {}, {}, 50u), "4.00", "malformed JSON"},
      {dev.Put("x", std::string(3000, 'a')), "4.13", "payload over 2048 bytes"},
      {dev.Request(kPut, "x", "1", {".dis=maybe"}, {}, 50u), "4.00", ".dis must be add or rm"},
      {dev.Request(kPatch, "x", "1", {}, {}, 50u), "4.00", "update needs a map of child paths to values"},
      {dev.Get("a/b$c"), "4.00", "key 'b$c' contains one of . $ # [ ] /"},
      {dev.Request(kGet, "x", "", {}, {}, {}, 41u), "4.06", "accept 60 (cbor) or 50 (json)"},
      {dev.Get(".info/nothing"), "4.04", "no such .info entry"},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(c.reply.CodeString(), c.code) << c.diagnostic;
    EXPECT_EQ(c.reply.payload, c.diagnostic);
  }
  SdkClient bad_session(port_);
  bad_session.set_short_token("NOPE1234");
  CoapReply r = bad_session.Get("x");
  EXPECT_EQ(r.CodeString(), "4.01");
  EXPECT_EQ(r.payload, "unknown session");
  SdkClient unknown_app(port_, "nosuchapp");
  r = unknown_app.OpenRaw("");
  EXPECT_EQ(r.CodeString(), "4.00");
  EXPECT_EQ(r.payload, "unknown app");
  SdkClient locked(port_, "locked");
  EXPECT_EQ(locked.OpenRaw("WRONG").CodeString(), "4.01");
  EXPECT_EQ(locked.OpenRaw(std::string(600, 't')).CodeString(), "4.00");
  // Garbage datagrams: a CON with a bad option gets RST or 4.xx, never a crash.
  dev.SendRaw(Unhex("44010999aabbccdd"
                    "ff"), 300ms);
  dev.SendRaw("\x40", 300ms);
  // After all that the session works.
  EXPECT_EQ(dev.Put("x", CborUint(7)).CodeString(), "2.05");
  EXPECT_EQ(dev.Get("x").payload, CborUint(7));
}

TEST_F(DeviceProtocol, RoutesConfineDevicesToTheirSubtree) {
  StartGateway();
  SdkClient d1(port_, "locked");
  ASSERT_TRUE(d1.Open("SECRETTOKEN"));
  EXPECT_EQ(d1.Put("devices/dev1/temp", CborUint(20)).CodeString(), "2.05");
  CoapReply r = d1.Put("devices/dev2/temp", CborUint(20));
  EXPECT_EQ(r.CodeString(), "4.03");
  EXPECT_EQ(r.payload, "write not allowed at /devices/dev2/temp");
  EXPECT_EQ(d1.Get("devices/dev2").CodeString(), "4.03");
  EXPECT_EQ(d1.Put("config/rate", CborUint(1)).CodeString(), "4.03");
  EXPECT_EQ(d1.Get("config/rate").CodeString(), "2.05");
  EXPECT_EQ(d1.Request(kPut, "devices/dev2/x", CborUint(1), {".dis=add"}).CodeString(), "4.03");
}

TEST_F(DeviceProtocol, ReloadUnderLoadKeepsSessionsAndAnswersEveryRequest) {
  StartGateway();
  std::vector<std::unique_ptr<SdkClient>> devs;
  for (int i = 0; i < 20; ++i) {
    devs.push_back(std::make_unique<SdkClient>(port_));
    ASSERT_TRUE(devs.back()->Open());
  }
  // Reload five times while every device keeps writing; a sixth reload tightens a route.
  int answered = 0;
  for (int round = 0; round < 30; ++round) {
    if (round % 5 == 2) gw_.Signal(SIGHUP);
    std::vector<std::string> toks;
    for (auto& d : devs) toks.push_back(d->Send(kPut, "load/" + d->short_token(), CborUint(round)));
    for (size_t i = 0; i < devs.size(); ++i) {
      CoapReply r = devs[i]->Await(toks[i]);
      EXPECT_EQ(r.CodeString(), "2.05") << "round " << round;
      answered += r.CodeString() == "2.05";
    }
  }
  EXPECT_EQ(answered, 30 * 20);
  for (auto& d : devs) EXPECT_EQ(d->Ping().CodeString(), "2.05") << "session kept across reloads";
  // New routes apply to new requests: make /load read-only for myapp.
  std::string tightened = config_;
  tightened.replace(tightened.find("  - { name: myapp, app: myapp, match: \"**\" }"),
                    std::string("  - { name: myapp, app: myapp, match: \"**\" }").size(),
                    "  - { name: myapp, app: myapp, match: \"**\", write: none }");
  gw_.WriteConfig(tightened);
  gw_.Signal(SIGHUP);
  std::string code;
  for (int i = 0; i < 50 && code != "4.03"; ++i) {  // the signal is handled asynchronously
    code = devs[0]->Put("load/x", CborUint(1)).CodeString();
    if (code != "4.03") std::this_thread::sleep_for(50ms);
  }
  EXPECT_EQ(code, "4.03");
  EXPECT_EQ(devs[0]->Get("load/" + devs[0]->short_token()).payload, CborUint(29)) << "data kept";
}

TEST_F(DeviceProtocol, InfoEntries) {
  StartGateway();
  SdkClient dev(port_);
  ASSERT_TRUE(dev.Open());
  EXPECT_EQ(dev.Request(kGet, ".info/connected", "", {}, {}, {}, 50u).payload, "false") << "local-only mode";
  EXPECT_EQ(dev.Request(kGet, ".info/serverTimeOffset", "", {}, {}, {}, 50u).payload, "0");
  int64_t t = std::stoll(dev.Request(kGet, ".info/serverTime", "", {}, {}, {}, 50u).payload);
  int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  EXPECT_NEAR(static_cast<double>(t), static_cast<double>(now), 2000);
  EXPECT_EQ(dev.Request(kPut, ".info/connected", "true", {}, {}, 50u).CodeString(), "4.05");
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

}  // namespace
}  // namespace tether::testing
