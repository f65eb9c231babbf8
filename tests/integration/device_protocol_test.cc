// The device protocol (docs/device-protocol.md) against a running tetherd over real UDP, spoken
// the way the Wilddog SDK speaks it (see shared/protocol/traces).
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <functional>
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
    admin_port_ = static_cast<uint16_t>(FreePort(false));
    {
      std::FILE* f = std::fopen((gw_.dir() + "/hmac.secret").c_str(), "w");
      std::fputs(kHmacSecret, f);
      std::fclose(f);
    }
    config_ = "device:\n  listen: \"127.0.0.1:" + std::to_string(port_) + "\"\n" +
              "  heartbeat_target: 1s\n  session_timeout: 2s\n  max_payload: 2KiB\n"
              "admin:\n  listen: \"127.0.0.1:" + std::to_string(admin_port_) + "\"\n" +
              "store:\n  path: ${STORE}\nlog:\n  level: debug\n"
              "apps:\n  - id: myapp\n    default: true\n  - id: app2\n  - id: app3\n  - id: app4\n"
              "  - id: locked\n    auth: { mode: tokens, tokens: [ { device: dev1, token: SECRETTOKEN } ] }\n"
              "  - id: hm\n    auth: { mode: hmac, secret_file: \"" + gw_.dir() + "/hmac.secret\" }\n"
              "routes:\n"
              "  - { name: myapp, app: myapp, match: \"**\" }\n"
              "  - { name: app2, app: app2, match: \"**\", cloud: \"a2/**\" }\n"
              "  - { name: app3, app: app3, match: \"**\", cloud: \"a3/**\" }\n"
              "  - { name: app4, app: app4, match: \"**\", cloud: \"a4/**\" }\n"
              "  - { name: own, app: locked, match: \"devices/{device}/**\", read: own, write: own }\n"
              "  - { name: ro, app: locked, match: \"config/**\", write: none }\n"
              "  - { name: hmown, app: hm, match: \"devices/{device}/**\", cloud: \"hm/{device}/**\", read: own, write: own }\n" +
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

  // One series of /metrics, e.g. Metric("tether_device_events_total{event=\"too_large\"}"); -1 if absent.
  double Metric(const std::string& series) {
    ShellResult m = Shell("curl -sf http://127.0.0.1:" + std::to_string(admin_port_) + "/metrics");
    size_t at = 0;
    while ((at = m.out.find(series + " ", at)) != std::string::npos) {
      if (at == 0 || m.out[at - 1] == '\n') return std::stod(m.out.substr(at + series.size() + 1));
      at += series.size();
    }
    return -1;
  }
  // Applies a config edit by SIGHUP and waits until `probe` says the new routes are in force.
  void Reload(const std::string& from, const std::string& to, const std::function<bool()>& probe) {
    std::string next = config_;
    next.replace(next.find(from), from.size(), to);
    gw_.WriteConfig(next);
    gw_.Signal(SIGHUP);
    bool applied = false;
    for (int i = 0; i < 60 && !(applied = probe()); ++i) std::this_thread::sleep_for(50ms);
    ASSERT_TRUE(applied) << "reload not applied";
  }

  static constexpr const char* kHmacSecret = "0123456789abcdef0123\n";
  TetherdProcess gw_;
  uint16_t port_ = 0, admin_port_ = 0;
  std::string config_;
};

int64_t WallMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

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

TEST_F(DeviceProtocol, BadInputGetsPrecise4xxAndTheSessionStaysUsable) {
  StartGateway();
  SdkClient dev(port_), bystander(port_), writer(port_);
  ASSERT_TRUE(dev.Open());
  // Another device with data and an observation: nothing below may disturb it.
  ASSERT_TRUE(bystander.Open());
  ASSERT_TRUE(writer.Open());
  ASSERT_EQ(bystander.Put("calm/v", CborUint(1)).CodeString(), "2.05");
  CoapReply watch = bystander.Observe("calm");
  ASSERT_EQ(watch.CodeString(), "2.05");
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
  // RFC 7959 §2.9.3: a 4.13 says how much is accepted.
  EXPECT_EQ(cases[4].reply.size1, 2048u);
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
  // Over 512 bytes is a bad token (4.01: re-authenticate), not an unknown app (4.00: the SDK stops).
  CoapReply too_long = locked.OpenRaw(std::string(600, 't'));
  EXPECT_EQ(too_long.CodeString(), "4.01");
  EXPECT_EQ(too_long.payload, "auth token longer than 512 bytes");
  // Garbage datagrams: a CON with a bad option gets RST or 4.xx, never a crash.
  dev.SendRaw(Unhex("44010999aabbccdd"
                    "ff"), 300ms);
  dev.SendRaw("\x40", 300ms);
  // Undecodable datagrams, a repeated critical option, a reused MID with a new token.
  dev.SendRaw(Unhex("4401"), 300ms);
  std::optional<CoapReply> repeated =
      dev.SendRaw(Unhex("440107770a0b0c0d") + "\x33" + "a.b" + "\x03" + "c.d", 1000ms);  // Uri-Host twice
  ASSERT_TRUE(repeated);
  EXPECT_EQ(repeated->CodeString(), "4.02");
  // After all that the session works ...
  EXPECT_EQ(dev.Put("x", CborUint(7)).CodeString(), "2.05");
  EXPECT_EQ(dev.Get("x").payload, CborUint(7));
  // ... and the other device's data, session and observation are untouched.
  EXPECT_EQ(bystander.Get("calm/v").payload, CborUint(1));
  EXPECT_EQ(bystander.Ping().CodeString(), "2.05");
  ASSERT_EQ(writer.Put("calm/v", CborUint(2)).CodeString(), "2.05");
  auto n = bystander.WaitFreshNotification(watch.token, 3s);
  ASSERT_TRUE(n) << "the bystander's observation survived";
  EXPECT_EQ(n->payload, "\xa1" + CborText("v") + CborUint(2));
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

// The SDK has no Block-wise: a snapshot over one datagram (1280 bytes) would arrive truncated if
// the gateway started Block2 for it. It gets 4.13 with a diagnostic instead; native clients
// (Content-Format/Accept) get Block2 as before.
TEST_F(DeviceProtocol, SnapshotsOverOneDatagram) {
  StartGateway();
  SdkClient sdk(port_), native(port_), writer(port_);
  for (SdkClient* c : {&sdk, &native, &writer}) ASSERT_TRUE(c->Open());
  const std::string a(1000, 'a'), b(1000, 'b');
  ASSERT_EQ(writer.Request(kPut, "big/a", "\"" + a + "\"", {}, {}, 50u).CodeString(), "2.05");
  ASSERT_EQ(writer.Request(kPut, "big/b", "\"" + b + "\"", {}, {}, 50u).CodeString(), "2.05");
  CoapReply get = sdk.Get("big");
  EXPECT_EQ(get.CodeString(), "4.13");
  EXPECT_FALSE(get.block2) << "never a truncated block 0";
  EXPECT_NE(get.payload.find("exceeds the 1280-byte datagram"), std::string::npos) << get.payload;
  CoapReply obs = sdk.Observe("big");
  EXPECT_EQ(obs.CodeString(), "4.13");
  EXPECT_FALSE(obs.observe) << "nothing registered";
  // A native client reads it whole via Block2 and observes it (block 0 in every notification).
  CoapReply whole = native.GetWhole("big");
  ASSERT_EQ(whole.CodeString(), "2.05");
  EXPECT_EQ(whole.payload, "{\"a\":\"" + a + "\",\"b\":\"" + b + "\"}");
  CoapReply nobs = native.Request(kGet, "big", "", {}, 0u, {}, 50u);
  ASSERT_EQ(nobs.CodeString(), "2.05");
  ASSERT_TRUE(nobs.observe);
  ASSERT_TRUE(nobs.block2);
  EXPECT_TRUE(*nobs.block2 & 8) << "more blocks";
  // An SDK observation that outgrows a datagram ends with a 4.13 notification.
  CoapReply small = sdk.Observe("big/a");
  ASSERT_EQ(small.CodeString(), "2.05");
  ASSERT_EQ(writer.Request(kPut, "big/a", "\"" + std::string(1500, 'A') + "\"", {}, {}, 50u).CodeString(), "2.05");
  auto end = sdk.WaitFreshNotification(small.token, 3s);
  ASSERT_TRUE(end);
  EXPECT_EQ(end->CodeString(), "4.13");
  EXPECT_FALSE(end->observe);
  auto nn = native.WaitFreshNotification(nobs.token, 3s);
  ASSERT_TRUE(nn) << "the native observer still hears changes";
  EXPECT_TRUE(nn->block2);
  ASSERT_EQ(writer.Request(kPut, "big/a", "\"short\"", {}, {}, 50u).CodeString(), "2.05");
  EXPECT_FALSE(sdk.WaitFreshNotification(small.token, 500ms)) << "that observation is over";
  EXPECT_EQ(Metric("tether_device_events_total{event=\"too_large\"}"), 3);
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

// hmac apps: the token is "<device>:" + hex HMAC-SHA256(secret, device) (computed here by openssl).
TEST_F(DeviceProtocol, HmacTokensOverUdp) {
  StartGateway();
  ShellResult mac = Shell("printf dev7 | openssl dgst -sha256 -hmac 0123456789abcdef0123 | sed 's/.*= //'");
  ASSERT_EQ(mac.status, 0);
  std::string hex = mac.out.substr(0, 64);
  SdkClient dev(port_, "hm"), impostor(port_, "hm");
  ASSERT_TRUE(dev.Open("dev7:" + hex));
  EXPECT_EQ(dev.Put("devices/dev7/temp", CborUint(21)).CodeString(), "2.05");
  EXPECT_EQ(dev.Get("devices/dev7/temp").payload, CborUint(21));
  EXPECT_EQ(dev.Put("devices/dev8/temp", CborUint(21)).CodeString(), "4.03") << "the id comes from the token";
  std::string wrong = hex;
  wrong[10] = wrong[10] == '0' ? '1' : '0';
  EXPECT_EQ(impostor.OpenRaw("dev7:" + wrong).CodeString(), "4.01");
  EXPECT_EQ(impostor.OpenRaw("dev8:" + hex).CodeString(), "4.01") << "another device's MAC";
  EXPECT_EQ(impostor.OpenRaw("").CodeString(), "4.01");
  EXPECT_EQ(dev.Ping().CodeString(), "2.05");
}

// Native use with libcoap's coap-client-notls against tetherd: open a session, PUT, GET, observe
// (-s) while another device writes, and a Block2 read of a large snapshot. Every run binds the same
// local port (-p): a session serves only the address it was opened from.
TEST_F(DeviceProtocol, LibcoapClientAgainstTetherd) {
  StartGateway();
  const std::string base = "coap://127.0.0.1:" + std::to_string(port_);
  const std::string local = std::to_string(FreePort());
  auto client = [&](const std::string& args) {
    return Shell("timeout 20 coap-client-notls -B 5 -p " + local + " " + args).out;
  };
  auto open_session = [&] {
    std::string open = client("-m post -A 50 '" + base + "/.cs?v=2'");
    size_t s = open.find("\"s\":\"");
    return s == std::string::npos ? open : open.substr(s + 5, 8);
  };
  std::string cs = open_session();
  ASSERT_EQ(cs.size(), 8u) << cs;
  EXPECT_EQ(client("-m put -t 50 -A 50 -e '{\"t\":21}' '" + base + "/room?.cs=" + cs + "'").find("4."), std::string::npos);
  EXPECT_NE(client("-A 50 '" + base + "/room?.cs=" + cs + "'").find("{\"t\":21}"), std::string::npos);
  EXPECT_NE(client("-A 50 '" + base + "/room?.cs=NOSUCHCS'").find("unknown session"), std::string::npos);
  // Observe for 3 s; meanwhile an SDK device changes the value twice.
  std::string observed;
  std::thread watch([&] { observed = client("-s 3 -A 50 '" + base + "/room?.cs=" + cs + "'"); });
  SdkClient writer(port_);
  ASSERT_TRUE(writer.Open());
  std::this_thread::sleep_for(800ms);
  ASSERT_EQ(writer.Put("room/t", CborUint(22)).CodeString(), "2.05");
  std::this_thread::sleep_for(300ms);
  ASSERT_EQ(writer.Put("room/t", CborUint(23)).CodeString(), "2.05");
  watch.join();
  EXPECT_NE(observed.find("{\"t\":21}"), std::string::npos) << observed;
  EXPECT_NE(observed.find("{\"t\":22}"), std::string::npos) << observed;
  EXPECT_NE(observed.find("{\"t\":23}"), std::string::npos) << observed;
  // Larger than one datagram: libcoap follows the server's Block2. (The 3 s observe outlived the
  // 2 s session timeout: a new session.)
  cs = open_session();
  const std::string big(1500, 'x');
  ASSERT_EQ(writer.Request(kPut, "big", "\"" + big + "\"", {}, {}, 50u).CodeString(), "2.05");
  std::string whole = client("-A 50 '" + base + "/big?.cs=" + cs + "' 2>/dev/null");
  EXPECT_NE(whole.find("\"" + big + "\""), std::string::npos) << whole;
}

}  // namespace
}  // namespace tether::testing
