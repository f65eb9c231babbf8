// The device protocol (docs/device-protocol.md) against a running tetherd over real UDP, spoken
// the way the Wilddog SDK speaks it (see shared/protocol/traces): reads, writes, observations,
// routes, bad input, reloads, tokens, and libcoap as a second client.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <memory>
#include <thread>

#include "tests/integration/device_protocol_fixture.h"

namespace tether::testing {
namespace {

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
  std::string code;  // the signal is handled asynchronously
  Eventually([&] { return (code = devs[0]->Put("load/x", CborUint(1)).CodeString()) == "4.03"; }, 2500ms, 50ms);
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
