// CoAP over DTLS 1.2 PSK against a running tetherd: libcoap's coap-client-openssl and
// coap-client-gnutls, npm node-coap-client, and mbedTLS clients over real UDP for the abuse cases.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <signal.h>

#include <fstream>
#include <memory>
#include <regex>
#include <thread>

#include "tests/integration/sdk_client.h"
#include "tests/integration/tetherd_process.h"
#include "tests/integration/udp_dtls_client.h"

namespace tether::testing {
namespace {

using namespace std::chrono_literals;

const std::string kMaster = "master-key-of-the-fleet-0123456789";

// A DTLS client on a real UDP socket for handshakes the test controls: 1.5 s reads, mbedTLS's own
// flight timers.
std::unique_ptr<UdpDtlsClient> Dtls(uint16_t port) {
  return std::make_unique<UdpDtlsClient>("127.0.0.1", port, "sensor-1", "key-one-secret", 1500ms, kDefaultDtlsFlights);
}

class DtlsGateway : public ::testing::Test {
 protected:
  void SetUp() override {
    plain_ = static_cast<uint16_t>(FreePort());
    dtls_ = static_cast<uint16_t>(FreePort());
    admin_ = static_cast<uint16_t>(FreePort(false));
    std::ofstream(gw_.dir() + "/keys.yaml") << "sensor-1: key-one-secret\n"
                                               "sensor-2: \"0x6b65792d74776f2d736563726574\"  # key-two-secret\n";
    std::ofstream(gw_.dir() + "/master.key") << kMaster << "\n";
    gw_.WriteConfig("device:\n  listen: \"127.0.0.1:" + std::to_string(plain_) + "\"\n" +
                    "dtls:\n  listen: \"127.0.0.1:" + std::to_string(dtls_) + "\"\n" +
                    "  keys_file: " + gw_.dir() + "/keys.yaml\n  master_key_file: " + gw_.dir() + "/master.key\n" +
                    "  sleep_after: 1s\n  max_handshakes: 4\n  handshake_timeout: 2s\n"
                    "admin:\n  listen: \"127.0.0.1:" + std::to_string(admin_) + "\"\n" +
                    "store:\n  path: ${STORE}\nlog:\n  level: debug\n"
                    "apps:\n  - id: myapp\n    default: true\n"
                    "routes:\n"
                    "  - { name: devices, match: \"devices/{device}/**\", read: own, write: own }\n"
                    "  - { name: shared, match: \"shared/**\" }\n");
    gw_.Start();
    ASSERT_TRUE(gw_.WaitForLog("listening for CoAP over DTLS", 10s)) << gw_.Log();
  }
  std::string Url(const std::string& path) const { return "coaps://127.0.0.1:" + std::to_string(dtls_) + "/" + path; }
  ShellResult Client(const std::string& tool, const std::string& identity, const std::string& key,
                     const std::string& args) {
    return Shell("timeout 20 coap-client-" + tool + " -B 4 -u '" + identity + "' -k '" + key + "' " + args + " 2>&1");
  }
  // Opens a session over DTLS; returns its short token ("" on failure).
  std::string Open(const std::string& tool, const std::string& identity, const std::string& key) {
    ShellResult r = Client(tool, identity, key, "-m post -A 50 '" + Url(".cs?v=2") + "'");
    std::smatch m;
    return std::regex_search(r.out, m, std::regex("\"s\":\"([^\"]+)\"")) ? m[1].str() : "";
  }
  double Metric(const std::string& series) {
    ShellResult r = Shell("curl -s http://127.0.0.1:" + std::to_string(admin_) + "/metrics");
    for (size_t at = 0; (at = r.out.find(series + " ", at)) != std::string::npos; ++at) {
      if (at == 0 || r.out[at - 1] == '\n') return std::stod(r.out.substr(at + series.size() + 1));
    }
    return -1;
  }
  nlohmann::json Sessions() {
    ShellResult r = Shell(TetherdProcess::BinaryPath("tetherctl") + " --admin 127.0.0.1:" + std::to_string(admin_) +
                          " --json sessions");
    nlohmann::json j = nlohmann::json::parse(r.out, nullptr, false);
    return j.is_object() && j["sessions"].is_array() ? j["sessions"] : nlohmann::json::array();
  }
  static std::string DerivedKey(const std::string& identity) {  // computed independently of tetherd
    ShellResult r = Shell("printf '%s' '" + identity + "' | openssl dgst -sha256 -hmac '" + kMaster +
                          "' | sed 's/.*= //' | cut -c1-32");
    return r.out.substr(0, 32);
  }

  TetherdProcess gw_;
  uint16_t plain_ = 0, dtls_ = 0, admin_ = 0;
};

class DtlsLibcoap : public DtlsGateway, public ::testing::WithParamInterface<std::string> {};

TEST_P(DtlsLibcoap, ClientOpensWritesReadsAndIsConfinedToItsIdentity) {
  const std::string tool = GetParam();
  const std::string s = Open(tool, "sensor-1", "key-one-secret");
  ASSERT_FALSE(s.empty());
  ShellResult put = Client(tool, "sensor-1", "key-one-secret",
                           "-m put -t 50 -e '{\"t\":21}' '" + Url("devices/sensor-1/temp?.cs=" + s) + "'");
  EXPECT_EQ(put.out.find("4."), std::string::npos) << put.out;
  ShellResult get = Client(tool, "sensor-1", "key-one-secret", "-m get -A 50 '" + Url("devices/sensor-1?.cs=" + s) + "'");
  EXPECT_NE(get.out.find("{\"temp\":{\"t\":21}}"), std::string::npos) << get.out;
  // The PSK identity is the device id: the route's `own` rule confines it.
  ShellResult other = Client(tool, "sensor-1", "key-one-secret",
                             "-m put -t 50 -e '1' '" + Url("devices/sensor-2/temp?.cs=" + s) + "'");
  EXPECT_NE(other.out.find("4.03"), std::string::npos) << other.out;
  // A hex key from the keys file, by the other TLS stack.
  const std::string s2 = Open(tool == "openssl" ? "gnutls" : "openssl", "sensor-2", "key-two-secret");
  EXPECT_FALSE(s2.empty());
  // A DTLS session is not usable over plaintext, nor by another identity over DTLS.
  ShellResult plain = Shell("timeout 10 coap-client-notls -B 3 -m get -A 50 'coap://127.0.0.1:" +
                            std::to_string(plain_) + "/devices/sensor-1?.cs=" + s + "' 2>&1");
  EXPECT_NE(plain.out.find("4.01"), std::string::npos) << plain.out;
  ShellResult stolen = Client(tool, "sensor-2", "key-two-secret", "-m get -A 50 '" + Url("shared?.cs=" + s) + "'");
  EXPECT_NE(stolen.out.find("4.01"), std::string::npos) << stolen.out;
  bool listed = false;
  for (const auto& session : Sessions()) {
    listed |= session.value("device", "") == "sensor-1" && session.value("address", "").rfind("dtls:127.0.0.1:", 0) == 0;
  }
  EXPECT_TRUE(listed) << Sessions().dump();
  EXPECT_GE(Metric("tether_dtls_handshakes_total{result=\"ok\"}"), 6);
}

INSTANTIATE_TEST_SUITE_P(Tls, DtlsLibcoap, ::testing::Values("openssl", "gnutls"));

TEST_F(DtlsGateway, DerivedKeysWorkAndWrongKeysAreRefused) {
  EXPECT_FALSE(Open("openssl", "sensor-9", DerivedKey("sensor-9")).empty()) << "a key derived from the master key";
  EXPECT_TRUE(Open("openssl", "sensor-1", "not-the-key").empty());
  EXPECT_TRUE(Open("gnutls", "sensor-9", DerivedKey("sensor-8")).empty());
  EXPECT_TRUE(Open("openssl", "bad/identity", DerivedKey("bad/identity")).empty()) << "not a valid device id";
  EXPECT_GE(Metric("tether_dtls_handshakes_total{result=\"failed\"}"), 3);
  for (const auto& session : Sessions()) EXPECT_NE(session.value("device", ""), "sensor-1") << Sessions().dump();
}

TEST_F(DtlsGateway, ReloadRotatesKeysForNewHandshakes) {
  ASSERT_FALSE(Open("openssl", "sensor-1", "key-one-secret").empty());
  std::ofstream(gw_.dir() + "/keys.yaml") << "sensor-1: rotated-key-one\n";
  gw_.Signal(SIGHUP);
  ASSERT_TRUE(gw_.WaitForLog("reload: configuration", 5s)) << gw_.Log();
  EXPECT_TRUE(Open("openssl", "sensor-1", "key-one-secret").empty()) << "the old key no longer works";
  EXPECT_FALSE(Open("openssl", "sensor-1", "rotated-key-one").empty());
  std::ofstream(gw_.dir() + "/keys.yaml") << "sensor-1: \"0xnothex\"\n";
  gw_.Signal(SIGHUP);
  ASSERT_TRUE(gw_.WaitForLog("reload rejected", 5s)) << gw_.Log();
  EXPECT_NE(gw_.Log().find("keys.yaml:1:11: sensor-1: a 0x key must be hexadecimal digits"), std::string::npos);
  EXPECT_FALSE(Open("openssl", "sensor-1", "rotated-key-one").empty()) << "a broken file keeps the running keys";
}

TEST_F(DtlsGateway, ObserverOnASleepingSessionIsWokenToBeNotified) {
  const std::string s = Open("openssl", "sensor-1", "key-one-secret");
  ASSERT_FALSE(s.empty());
  const std::string out_file = gw_.dir() + "/observe.out";
  std::thread watcher([&] {
    Client("openssl", "sensor-1", "key-one-secret",
           "-s 6 -B 8 -A 50 '" + Url("shared/x?.cs=" + s) + "' > " + out_file);
  });
  std::this_thread::sleep_for(3s);  // sleep_after is 1 s: the observer's session is serialized
  EXPECT_GE(Metric("tether_dtls_sessions{state=\"sleeping\"}"), 1);
  SdkClient writer(plain_);
  ASSERT_TRUE(writer.Open());
  EXPECT_EQ(writer.Request(3, "shared/x", "42", {}, {}, 50u).CodeString(), "2.05");
  watcher.join();
  std::ifstream in(out_file);
  const std::string seen((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(seen.find("null"), std::string::npos) << seen;
  EXPECT_NE(seen.find("42"), std::string::npos) << "the notification reached the woken session: " << seen;
}

TEST_F(DtlsGateway, NodeCoapClientKeepsOneSessionAcrossSleep) {
  const std::string src = TETHER_SOURCE_DIR_FALLBACK;
  ShellResult r = Shell("NODE_PATH=" + src + "/tests/peers/node_modules timeout 30 node " + src +
                        "/tests/integration/dtls_node_client.js 127.0.0.1 " + std::to_string(dtls_) +
                        " sensor-1 key-one-secret 2>&1");
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("OK get after sleep"), std::string::npos) << r.out;
  EXPECT_EQ(Metric("tether_dtls_handshakes_total{result=\"ok\"}"), 1) << "the second request resumed, no new handshake";
  EXPECT_GE(Metric("tether_dtls_wakes_total"), 1) << "it was asleep between the requests";
}

TEST_F(DtlsGateway, HelloFloodAndStalledHandshakesAreBounded) {
  // 200 ClientHellos from one host: answered statelessly, and only up to its rate.
  for (int i = 0; i < 200; ++i) Dtls(dtls_)->SendHelloOnly();
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(Metric("tether_dtls_sessions{state=\"handshaking\"}"), 0) << "no state before the cookie";
  EXPECT_GE(Metric("tether_dtls_handshakes_total{result=\"rate_limited\"}"), 100);
  std::this_thread::sleep_for(2200ms);  // the host's hello budget refills

  // Handshakes that never finish hold at most max_handshakes (4) contexts, then time out.
  std::vector<std::unique_ptr<UdpDtlsClient>> stalled;
  for (int i = 0; i < 4; ++i) {
    stalled.push_back(Dtls(dtls_));
    ASSERT_TRUE(stalled.back()->HalfOpen()) << i;
  }
  EXPECT_EQ(Metric("tether_dtls_sessions{state=\"handshaking\"}"), 4);
  EXPECT_FALSE(Dtls(dtls_)->HandshakeOnce()) << "over the cap";
  EXPECT_GE(Metric("tether_dtls_handshakes_total{result=\"over_cap\"}"), 1);
  std::this_thread::sleep_for(3500ms);  // handshake_timeout 2 s + housekeeping
  EXPECT_EQ(Metric("tether_dtls_sessions{state=\"handshaking\"}"), 0);
  EXPECT_TRUE(Dtls(dtls_)->HandshakeOnce());
  EXPECT_FALSE(Open("openssl", "sensor-1", "key-one-secret").empty()) << "the gateway still serves";
}

}  // namespace
}  // namespace tether::testing
