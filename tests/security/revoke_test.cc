// Revocation by reload (issue 16.4) against the real tetherd: a SIGHUP that takes read access away
// ends the observations it no longer allows with a final 4.03, and one that takes a device's
// credential away (token removed, HMAC secret changed, app removed, DTLS identity removed) ends its
// session: its next request gets 4.01, it cannot open a new one, and its onDisconnect operations
// are discarded, not run. Each fails on a gateway whose reload only applies to new requests.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <signal.h>
#include <sys/stat.h>

#include <fstream>
#include <optional>
#include <string>

#include "device_proto/message.h"
#include "gateway/config/device_auth.h"
#include "tests/integration/sdk_client.h"
#include "tests/security/attack_gateway.h"
#include "tests/support/eventually.h"

namespace tether::testing {
namespace {

using namespace std::chrono_literals;

class Revoke : public ::testing::Test {
 protected:
  void SetUp() override {
    port_ = static_cast<uint16_t>(FreePort());
    admin_port_ = FreePort(false);
  }
  // The configuration: device and admin on loopback, a store, then `rest` (apps, routes, dtls).
  void Write(const std::string& rest) {
    gw_.WriteConfig("device:\n  listen: \"127.0.0.1:" + std::to_string(port_) + "\"\nadmin:\n  listen: \"127.0.0.1:" +
                    std::to_string(admin_port_) + "\"\nstore:\n  path: ${STORE}\nlog:\n  level: info\n" + rest);
    chmod(gw_.config_path().c_str(), 0640);  // it lists device tokens
  }
  void Start() {
    gw_.Start();
    ASSERT_TRUE(gw_.WaitForLog("listening for CoAP", 10s)) << gw_.Log();
  }
  // Rewrites the configuration and reloads it with SIGHUP; waits until it is applied.
  void Reload(const std::string& rest) {
    const size_t before = Count("reload: configuration");
    Write(rest);
    gw_.Signal(SIGHUP);
    ASSERT_TRUE(Eventually([&] { return Count("reload: configuration") > before; }, 10s)) << gw_.Log();
  }
  size_t Count(const std::string& text) const {
    const std::string log = gw_.Log();
    size_t n = 0;
    for (size_t at = 0; (at = log.find(text, at)) != std::string::npos; at += text.size()) ++n;
    return n;
  }
  double Metric(const std::string& series) const {
    ShellResult m = Shell("curl -sf --max-time 5 http://127.0.0.1:" + std::to_string(admin_port_) + "/metrics");
    for (size_t at = 0; (at = m.out.find(series + " ", at)) != std::string::npos; at += series.size()) {
      if (at == 0 || m.out[at - 1] == '\n') return std::stod(m.out.substr(at + series.size() + 1));
    }
    return -1;
  }

  TetherdProcess gw_;
  uint16_t port_ = 0;
  int admin_port_ = 0;
  std::string last_payload_;  // of the latest DTLS answer
};

std::string CborText(const std::string& s) {  // short text strings only
  return std::string(1, static_cast<char>(0x60 + s.size())) + s;
}

const char kTwoRoutes[] =
    "apps:\n  - id: myapp\n    default: true\n"
    "routes:\n"
    "  - { name: pub, match: \"public/**\" }\n"
    "  - { name: sec, match: \"secret/**\"%s }\n";

std::string TwoRoutes(const std::string& sec_extra) {
  char buf[512];
  std::snprintf(buf, sizeof buf, kTwoRoutes, sec_extra.c_str());
  return buf;
}

// An observer of /secret/x keeps getting its changes after a reload took read access away (issue
// 16.4 saw the new data reach it while a fresh GET got 4.03). Required: a final 4.03 without
// Observe ends it, no later state reaches it; an observation the routes still allow goes on.
TEST_F(Revoke, ReloadEndsObservationsTheRoutesNoLongerAllow) {
  Write(TwoRoutes(""));
  Start();
  SdkClient observer(port_), writer(port_);
  ASSERT_TRUE(observer.Open("watcher"));
  ASSERT_TRUE(writer.Open("writer"));
  ASSERT_EQ(writer.Put("secret/x", CborUint(1)).CodeString(), "2.05");
  ASSERT_EQ(writer.Put("public/y", CborUint(1)).CodeString(), "2.05");
  const CoapReply sec = observer.Observe("secret/x");
  ASSERT_EQ(sec.CodeString(), "2.05");
  const CoapReply pub = observer.Observe("public/y");
  ASSERT_EQ(pub.CodeString(), "2.05");

  Reload(TwoRoutes(", read: none"));
  ASSERT_EQ(writer.Put("secret/x", CborUint(2)).CodeString(), "2.05") << "writing is still allowed";
  ASSERT_EQ(writer.Put("public/y", CborUint(2)).CodeString(), "2.05");

  bool ended = false, leaked = false, public_seen = false;
  ASSERT_TRUE(Eventually([&] {
    while (auto n = observer.WaitNotification(0ms)) {
      if (n->token == sec.token && n->CodeString() == "4.03" && !n->observe) ended = true;
      if (n->token == sec.token && n->CodeString() == "2.05" && n->payload == CborUint(2)) leaked = true;
      if (n->token == pub.token && n->payload == CborUint(2)) public_seen = true;
    }
    return ended && public_seen;
  }, 5s)) << "final 4.03: " << ended << ", public observation notified: " << public_seen;
  // Later states do not reach it either.
  ASSERT_EQ(writer.Put("secret/x", CborUint(3)).CodeString(), "2.05");
  while (auto n = observer.WaitNotification(500ms)) {
    if (n->token == sec.token && n->CodeString() == "2.05") leaked = true;
  }
  EXPECT_FALSE(leaked) << "the observer got data the routes no longer let it read";
  EXPECT_EQ(observer.Get("secret/x").CodeString(), "4.03");
  EXPECT_EQ(observer.Ping().CodeString(), "2.05") << "the session itself stays";
  EXPECT_EQ(Metric("tether_revocations_total{what=\"observation\"}"), 1);
  EXPECT_EQ(Count("ended 1 observation(s) the routes no longer allow"), 1u) << "one line per reload";
}

const char kTokens[] =
    "apps:\n  - id: myapp\n    default: true\n    auth:\n      mode: tokens\n      tokens:\n"
    "%s"
    "        - { device: d2, token: token-two-secret }\n"
    "routes:\n  - { name: all, match: \"**\" }\n";

std::string Tokens(bool with_d1) {
  char buf[512];
  std::snprintf(buf, sizeof buf, kTokens, with_d1 ? "        - { device: d1, token: token-one-secret }\n" : "");
  return buf;
}

// A session whose token was removed kept reading and writing (issue 16.4). Required: its next
// request gets 4.01, the token opens nothing, its onDisconnect operation is discarded (not run),
// another device's session is untouched; counted and logged once.
TEST_F(Revoke, ReloadEndsSessionsWhoseTokenWasRemoved) {
  Write(Tokens(true));
  Start();
  SdkClient d1(port_), d2(port_);
  ASSERT_TRUE(d1.Open("token-one-secret"));
  ASSERT_TRUE(d2.Open("token-two-secret"));
  ASSERT_EQ(d1.Put("status/d1", CborText("on")).CodeString(), "2.05");
  ASSERT_EQ(d1.Request(3, "status/d1", CborText("off"), {".dis=add"}).CodeString(), "2.05");
  ASSERT_EQ(d1.Observe("status/d2").CodeString(), "2.05");

  Reload(Tokens(false));
  EXPECT_EQ(d1.Put("status/d1", CborText("stolen")).CodeString(), "4.01");
  EXPECT_EQ(d1.Get("status/d2").CodeString(), "4.01");
  EXPECT_EQ(d1.Ping().CodeString(), "4.01");
  EXPECT_EQ(d1.OpenRaw("token-one-secret").CodeString(), "4.01") << "the removed token opens nothing";
  EXPECT_EQ(d2.Put("status/d2", CborText("on")).CodeString(), "2.05") << "d2's token is still listed";
  // Nothing reaches the revoked observer; its onDisconnect operation did not run.
  while (auto n = d1.WaitNotification(300ms)) ADD_FAILURE() << "notification to the revoked session " << n->CodeString();
  const CoapReply status = d2.Get("status/d1");
  EXPECT_EQ(status.CodeString(), "2.05");
  EXPECT_EQ(status.payload, CborText("on")) << "the onDisconnect operation of a revoked session is discarded";
  EXPECT_EQ(Metric("tether_revocations_total{what=\"session\"}"), 1);
  EXPECT_EQ(Metric("tether_device_events_total{event=\"ondisconnect_discarded\"}"), 1);
  EXPECT_EQ(Count("revoked 1 device session(s)"), 1u) << "one line per reload";
  EXPECT_EQ(Metric("tether_ondisconnect_fired_total"), 0);
}

// The HMAC secret changed: tokens derived from the old one are revoked, as is a session in an app
// the reload removed (its requests get 4.00 unknown app, as any request to an unknown app; the
// count shows its session ended too). A session of an unchanged app stays; new tokens open.
TEST_F(Revoke, ReloadEndsSessionsOfAChangedSecretAndOfARemovedApp) {
  const std::string secret = gw_.dir() + "/app.secret";
  std::ofstream(secret) << "first-secret-0123456789\n";
  chmod(secret.c_str(), 0640);
  auto config = [&](bool with_other) {
    return "apps:\n  - id: myapp\n    default: true\n    auth:\n      mode: hmac\n      secret_file: " + secret +
           "\n  - id: keep\n" + (with_other ? "  - id: other\n" : "") +
           "routes:\n  - { name: all, app: myapp, match: \"**\" }\n"
           "  - { name: keep, app: keep, match: \"**\", cloud: \"keep/**\" }\n" +
           (with_other ? "  - { name: other, app: other, match: \"**\", cloud: \"other/**\" }\n" : "");
  };
  Write(config(true));
  Start();
  SdkClient signed_dev(port_), other_dev(port_, "other"), kept(port_, "keep"), fresh(port_);
  ASSERT_TRUE(signed_dev.Open(DeviceAuthenticator::HmacToken("first-secret-0123456789", "s1")));
  ASSERT_TRUE(other_dev.Open("o1"));
  ASSERT_TRUE(kept.Open("k1"));
  ASSERT_EQ(other_dev.Put("x", CborUint(1)).CodeString(), "2.05");

  std::ofstream(secret) << "second-secret-0123456789\n";
  Reload(config(false));
  EXPECT_EQ(signed_dev.Put("x", CborUint(2)).CodeString(), "4.01") << "signed with the old secret";
  const CoapReply gone = other_dev.Put("x", CborUint(2));  // the app is checked before the session
  EXPECT_EQ(gone.CodeString() + " " + gone.payload, "4.00 unknown app") << "its app is gone";
  EXPECT_EQ(kept.Put("x", CborUint(3)).CodeString(), "2.05") << "its app did not change";
  EXPECT_TRUE(fresh.Open(DeviceAuthenticator::HmacToken("second-secret-0123456789", "s1")));
  EXPECT_EQ(fresh.Put("x", CborUint(4)).CodeString(), "2.05");
  EXPECT_EQ(Metric("tether_revocations_total{what=\"session\"}"), 2);
}

// A DTLS device whose identity the reload removed: its session ends and, although its DTLS
// connection is still up, POST /.cs over it opens nothing.
TEST_F(Revoke, ReloadEndsSessionsOfARemovedDtlsIdentity) {
  const uint16_t dtls_port = static_cast<uint16_t>(FreePort());
  const std::string keys = gw_.dir() + "/keys.yaml";
  auto config = [&](bool with_sensor) {
    std::ofstream(keys) << (with_sensor ? "sensor-1: key-one-secret\n" : "") << "sensor-2: key-two-secret\n";
    chmod(keys.c_str(), 0640);
    return "apps:\n  - id: myapp\n    default: true\nroutes:\n  - { name: all, match: \"**\" }\n"
           "dtls:\n  listen: \"127.0.0.1:" + std::to_string(dtls_port) + "\"\n  keys_file: " + keys + "\n";
  };
  Write(config(true));
  gw_.Start();
  ASSERT_TRUE(gw_.WaitForLog("listening for CoAP over DTLS", 10s)) << gw_.Log();
  UdpDtlsClient d("127.0.0.1", dtls_port, "sensor-1", "key-one-secret", 1000ms);
  ASSERT_TRUE(d.Handshake());
  auto request = [&](uint8_t method, uint16_t mid, const std::vector<std::string>& path,
                     const std::vector<std::string>& queries, const std::string& payload = "") -> std::string {
    if (!d.Write(CoapRequest(method, mid, "t" + std::to_string(mid), path, queries, payload))) return "no write";
    std::optional<std::string> r = d.Read();
    if (!r) return "no answer";
    coap::Message m;
    if (!coap::Parse({reinterpret_cast<const uint8_t*>(r->data()), r->size()}, m).ok()) return "unparsable";
    last_payload_ = std::string(m.payload.begin(), m.payload.end());
    return std::to_string(m.code >> 5) + "." + (m.code % 32 < 10 ? "0" : "") + std::to_string(m.code % 32);
  };
  ASSERT_EQ(request(2, 0x0100, {".cs"}, {"v=2"}), "2.05");
  const nlohmann::json tokens = nlohmann::json::from_cbor(last_payload_, true, false);
  ASSERT_TRUE(tokens.is_object() && tokens.contains("s"));
  const std::string cs = ".cs=" + tokens["s"].get<std::string>();
  ASSERT_EQ(request(3, 0x0200, {"v"}, {cs}, CborUint(1)), "2.05");

  Reload(config(false));
  EXPECT_EQ(request(3, 0x0300, {"v"}, {cs}, CborUint(2)), "4.01") << "its session ended";
  EXPECT_EQ(request(2, 0x0400, {".cs"}, {"v=2"}), "4.01") << "its connection opens no new session";
  EXPECT_EQ(Metric("tether_revocations_total{what=\"session\"}"), 1);
}

}  // namespace
}  // namespace tether::testing
