// Operating tetherd with a cloud: dead letters through tetherctl, the metrics catalog after real
// traffic, and secrets kept out of the log at debug level.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <signal.h>

#include <fstream>
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <random>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "gateway/config/device_auth.h"
#include "tests/integration/sdk_client.h"
#include "tests/integration/tetherd_process.h"
#include "tests/support/eventually.h"
#include "tests/upstream/fakecloud_process.h"

namespace tether::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

std::string RandomText(size_t n) {
  static const char* kChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  std::mt19937_64 rng{std::random_device{}()};
  std::string s;
  for (size_t i = 0; i < n; ++i) s += kChars[rng() % 62];
  return s;
}

// Prometheus text: "name{labels}" -> value, and the families that declared a TYPE.
struct Scrape {
  std::map<std::string, double> samples;
  std::set<std::string> families;
};
Scrape ParseMetrics(const std::string& text) {
  Scrape s;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("# TYPE ", 0) == 0) s.families.insert(line.substr(7, line.find(' ', 7) - 7));
    if (line.empty() || line[0] == '#') continue;
    size_t sp = line.rfind(' ');
    s.samples[line.substr(0, sp)] = std::stod(line.substr(sp + 1));
  }
  return s;
}

// The metric families docs/operations.md promises (its catalog table).
std::vector<std::string> DocumentedFamilies() {
  std::ifstream in(upstream::testing::SourceDir() + "/docs/operations.md");
  std::vector<std::string> out;
  std::string line;
  std::regex row(R"(^\| `(tether_[a-z_]+)` \|)");
  while (std::getline(in, line)) {
    std::smatch m;
    if (std::regex_search(line, m, row)) out.push_back(m[1]);
  }
  return out;
}

class OpsCloud : public ::testing::Test {
 protected:
  void Start(const std::string& rest, const std::string& upstream_extra = "", const std::string& level = "info") {
    coap_port_ = static_cast<uint16_t>(FreePort());
    admin_port_ = FreePort(false);
    gw_.WriteConfig("gateway:\n  id: gw-ops\ndevice:\n  listen: \"127.0.0.1:" + std::to_string(coap_port_) +
                    "\"\nadmin:\n  listen: \"127.0.0.1:" + std::to_string(admin_port_) +
                    "\"\nstore:\n  path: ${STORE}\nlog:\n  level: " + level + "\nupstream:\n  url: " + cloud_->url() +
                    "\n" + upstream_extra + rest);
    gw_.Start();
    ASSERT_TRUE(gw_.WaitForLog("admin endpoint on", 10s)) << gw_.Log();
  }
  ShellResult Ctl(const std::string& args) {
    return Shell(TetherdProcess::BinaryPath("tetherctl") + " --admin 127.0.0.1:" + std::to_string(admin_port_) + " " +
                 args);
  }
  json CtlJson(const std::string& args) {
    ShellResult r = Ctl("--json " + args);
    EXPECT_EQ(r.status, 0) << args << ": " << r.out;
    return json::parse(r.out, nullptr, false);
  }
  Scrape Metrics() {
    ShellResult r = Shell("curl -sf http://127.0.0.1:" + std::to_string(admin_port_) + "/metrics");
    EXPECT_EQ(r.status, 0);
    return ParseMetrics(r.out);
  }
  json CloudAt(const std::string& path) {
    try {
      return cloud_->Get(path);
    } catch (const std::exception&) {
      return nullptr;
    }
  }

  std::unique_ptr<upstream::testing::FakeCloud> cloud_ = std::make_unique<upstream::testing::FakeCloud>();
  TetherdProcess gw_;
  uint16_t coap_port_ = 0;
  int admin_port_ = 0;
};

TEST_F(OpsCloud, DeadLettersListRetryAndDropThroughTetherctl) {
  cloud_->Control({{"op", "reject"}, {"status", 400}, {"contains", "poison"}});
  Start("apps:\n  - id: myapp\nroutes:\n  - { name: devs, match: \"devices/{device}/**\", cloud: \"fleet/{device}/**\" }\n");
  SdkClient dev(coap_port_);
  ASSERT_TRUE(dev.Open("d1"));
  ASSERT_EQ(dev.Put("devices/d1/p1", CborText("poison-1")).CodeString(), "2.05");
  ASSERT_EQ(dev.Put("devices/d1/p2", CborText("poison-2")).CodeString(), "2.05");
  ASSERT_EQ(dev.Put("devices/d1/ok", CborUint(1)).CodeString(), "2.05");
  json list;
  ASSERT_TRUE(Eventually([&] {
    list = CtlJson("deadletters list");
    return list["dead_letters"].size() == 2;
  }, 20s, 100ms)) << list.dump();
  EXPECT_TRUE(Eventually([&] { return CloudAt("/fleet/d1/ok") == 1; }, 20s, 100ms)) << "a refused write blocked the others";
  std::map<std::string, std::string> id_of;  // path -> id
  for (const auto& d : list["dead_letters"]) {
    EXPECT_NE(d["error"].get<std::string>().find("400"), std::string::npos) << d.dump();
    id_of[d["path"].get<std::string>()] = d["id"].get<std::string>();
  }
  ASSERT_EQ(id_of.count("/fleet/d1/p1"), 1u) << list.dump();
  ShellResult human = Ctl("deadletters list");
  EXPECT_EQ(human.status, 0);
  EXPECT_NE(human.out.find(id_of["/fleet/d1/p1"]), std::string::npos) << human.out;
  EXPECT_NE(human.out.find("ROUTE"), std::string::npos) << human.out;

  cloud_->Control({{"op", "reset"}});  // the cloud's rules were fixed
  ShellResult retry = Ctl("deadletters retry " + id_of["/fleet/d1/p1"]);
  EXPECT_EQ(retry.status, 0) << retry.out;
  EXPECT_NE(retry.out.find("1 dead letter(s) requeued"), std::string::npos) << retry.out;
  // The reply came after the commit: the list already reflects it.
  EXPECT_EQ(CtlJson("deadletters list")["dead_letters"].size(), 1u);
  EXPECT_TRUE(Eventually([&] { return CloudAt("/fleet/d1/p1") == "poison-1"; }, 20s, 100ms)) << "the retried write never arrived";

  ShellResult drop = Ctl("deadletters drop " + id_of["/fleet/d1/p2"]);
  EXPECT_EQ(drop.status, 0) << drop.out;
  EXPECT_EQ(CtlJson("deadletters list")["dead_letters"].size(), 0u);
  ShellResult missing = Ctl("deadletters drop 987654");
  EXPECT_EQ(missing.status, 1);
  EXPECT_NE(missing.out.find("no dead letter 987654"), std::string::npos) << missing.out;
  std::this_thread::sleep_for(1s);
  EXPECT_TRUE(CloudAt("/fleet/d1/p2").is_null()) << "a dropped dead letter was uploaded";

  Scrape m = Metrics();
  EXPECT_GE(m.samples["tether_upstream_errors_total{class=\"rejected\"}"], 1);
  EXPECT_EQ(m.samples["tether_dead_letters{route=\"devs\"}"], 0);
  EXPECT_GE(m.samples["tether_drained_ops_total{route=\"devs\"}"], 2);
}

// Every family of the documented catalog is exposed, with values that match the traffic.
TEST_F(OpsCloud, EveryDocumentedMetricFamilyWithPlausibleValues) {
  cloud_->Control({{"op", "slow"}, {"ms", 30}});  // a measurable round trip
  Start("apps:\n  - id: myapp\nroutes:\n"
        "  - { name: devs, match: \"devices/{device}/**\", cloud: \"fleet/{device}/**\" }\n"
        "  - { name: tele, match: \"tele/**\", queue: { max_entries: 2, on_full: drop-oldest } }\n"
        "  - { name: cmd, match: \"cmd/**\", queue: { max_entries: 1, on_full: reject } }\n");
  SdkClient dev(coap_port_);
  ASSERT_TRUE(dev.Open("d1"));
  ASSERT_EQ(dev.Ping().CodeString(), "2.05");
  ASSERT_EQ(dev.Put("devices/d1/a", CborUint(1)).CodeString(), "2.05");
  ASSERT_TRUE(Eventually([&] { return CloudAt("/fleet/d1/a") == 1; }, 20s, 100ms));
  cloud_->Control({{"op", "down"}, {"ms", 2500}});
  for (int i = 0; i < 4; ++i) ASSERT_EQ(dev.Put("tele/t" + std::to_string(i), CborUint(i)).CodeString(), "2.05");
  ASSERT_EQ(dev.Put("cmd/c0", CborUint(0)).CodeString(), "2.05");
  EXPECT_EQ(dev.Put("cmd/c1", CborUint(1)).CodeString(), "5.03");
  ASSERT_TRUE(Eventually([&] { return CloudAt("/tele") == json::parse(R"({"t2":2,"t3":3})") && CloudAt("/cmd/c0") == 0; }, 20s, 100ms))
      << CloudAt("/").dump();
  ASSERT_TRUE(Eventually([&] {  // the clock's estimate reaches the gateway once a second
    return Metrics().samples["tether_cloud_rtt_ms"] >= 30 && Metrics().samples["tether_upstream_up"] == 1;
  }, 10s, 100ms));

  Scrape m = Metrics();
  std::vector<std::string> documented = DocumentedFamilies();
  ASSERT_GE(documented.size(), 19u) << "the catalog table in docs/operations.md was not found";
  for (const auto& f : documented) EXPECT_EQ(m.families.count(f), 1u) << f << " is documented but not exposed";
  for (const auto& f : m.families) {
    EXPECT_NE(std::find(documented.begin(), documented.end(), f), documented.end()) << f << " is not documented";
  }
  auto at = [&](const std::string& series) {
    auto it = m.samples.find(series);
    EXPECT_NE(it, m.samples.end()) << series << " missing";
    return it == m.samples.end() ? -1 : it->second;
  };
  EXPECT_EQ(at("tether_sessions{app=\"myapp\",state=\"active\"}"), 1);
  EXPECT_EQ(at("tether_sessions{app=\"myapp\",state=\"silent\"}"), 0);
  EXPECT_EQ(at("tether_requests_total{method=\"PUT\",code=\"2.05\"}"), 6);
  EXPECT_EQ(at("tether_requests_total{method=\"PUT\",code=\"5.03\"}"), 1);
  EXPECT_GE(at("tether_heartbeats_total"), 1);
  EXPECT_EQ(at("tether_detections_total"), 0);
  EXPECT_EQ(at("tether_ondisconnect_fired_total"), 0);
  EXPECT_EQ(at("tether_transaction_conflicts_total{where=\"local\"}"), 0);
  for (const char* r : {"devs", "tele", "cmd"}) {
    std::string route = std::string("{route=\"") + r + "\"}";
    EXPECT_EQ(at("tether_queue_depth" + route), 0) << r;
    EXPECT_EQ(at("tether_queue_bytes" + route), 0) << r;
    EXPECT_EQ(at("tether_queue_oldest_age_seconds" + route), 0) << r;
    EXPECT_EQ(at("tether_dead_letters" + route), 0) << r;
  }
  EXPECT_EQ(at("tether_drained_ops_total{route=\"devs\"}"), 1);
  EXPECT_EQ(at("tether_drained_ops_total{route=\"tele\"}"), 2);
  EXPECT_EQ(at("tether_drained_ops_total{route=\"cmd\"}"), 1);
  EXPECT_EQ(at("tether_queue_dropped_total{route=\"tele\",reason=\"drop_oldest\"}"), 2);
  EXPECT_EQ(at("tether_queue_dropped_total{route=\"tele\",reason=\"expired\"}"), 0);
  EXPECT_EQ(at("tether_writes_refused_total{reason=\"queue_limit\"}"), 1);
  EXPECT_EQ(at("tether_writes_refused_total{reason=\"store_full\"}"), 0);
  EXPECT_EQ(at("tether_upstream_up"), 1);
  EXPECT_GE(at("tether_upstream_errors_total{class=\"network\"}"), 1) << "the outage was not counted";
  EXPECT_EQ(at("tether_upstream_errors_total{class=\"auth\"}"), 0);
  EXPECT_LT(std::abs(at("tether_cloud_clock_offset_ms")), 5000);
  EXPECT_GE(at("tether_cloud_rtt_ms"), 30);
  EXPECT_LT(at("tether_cloud_rtt_ms"), 5000);
  std::error_code ec;
  EXPECT_EQ(at("tether_store_bytes"), static_cast<double>(std::filesystem::file_size(gw_.store_path() + "/data.mdb", ec)));
  EXPECT_GT(at("tether_store_bytes"), 0);

  json status = CtlJson("status");
  EXPECT_GE(status["upstream"]["rtt_ms"].get<int>(), 30) << status.dump();
  json queue = CtlJson("queue");
  for (const auto& row : queue["routes"]) {
    if (row["route"] == "tele") {
      EXPECT_EQ(row["uploaded"], 2) << row.dump();
    }
  }
}

// At debug level, with a database secret, device tokens and an HMAC secret configured, none of
// them (nor the session tokens, nor a rejected token) reaches the log.
TEST_F(OpsCloud, SecretsNeverReachTheLog) {
  const std::string db_secret = RandomText(40), token = RandomText(24), wrong = RandomText(24);
  const std::string hmac_secret = RandomText(32), jwt_like = "eyJ" + RandomText(20) + "." + RandomText(30);
  cloud_ = std::make_unique<upstream::testing::FakeCloud>("--secret " + db_secret);
  std::ofstream(gw_.dir() + "/db.secret") << db_secret << "\n";
  std::ofstream(gw_.dir() + "/hmac.secret") << hmac_secret << "\n";
  Start("apps:\n"
        "  - id: tok\n    default: true\n    auth: { mode: tokens, tokens: [ { device: t1, token: \"" + token + "\" } ] }\n"
        "  - id: hm\n    auth: { mode: hmac, secret_file: " + gw_.dir() + "/hmac.secret }\n"
        "  - id: op\n"
        "routes:\n"
        "  - { name: tok, app: tok, match: \"**\", cloud: \"tok/**\" }\n"
        "  - { name: hm, app: hm, match: \"**\", cloud: \"hm/**\" }\n"
        "  - { name: op, app: op, match: \"**\", cloud: \"op/**\" }\n",
        "  secret_file: " + gw_.dir() + "/db.secret\n", "debug");
  const std::string hmac_token = DeviceAuthenticator::HmacToken(hmac_secret, "h1");
  SdkClient t1(coap_port_, "tok"), h1(coap_port_, "hm"), o1(coap_port_, "op"), intruder(coap_port_, "tok");
  ASSERT_TRUE(t1.Open(token));
  ASSERT_TRUE(h1.Open(hmac_token));
  ASSERT_TRUE(o1.Open(jwt_like));
  EXPECT_EQ(intruder.OpenRaw(wrong).CodeString(), "4.01");
  ASSERT_EQ(t1.Put("x", CborUint(1)).CodeString(), "2.05");
  ASSERT_EQ(h1.Put("y", CborUint(2)).CodeString(), "2.05");
  ASSERT_EQ(o1.Put("z", CborUint(3)).CodeString(), "2.05");
  EXPECT_EQ(t1.Get("nope/.deep").CodeString().substr(0, 2), "4.") << "an error reply logged at debug";
  ASSERT_TRUE(Eventually([&] {  // uploaded with auth=<secret> on every request
    json all = cloud_->Request("GET", "/.json?auth=" + db_secret, "");
    return all.is_object() && all.contains("tok") && all.contains("hm") && all.contains("op");
  }, 20s, 100ms));
  ASSERT_EQ(Ctl("kick t1").status, 0);
  gw_.Signal(SIGTERM);
  ASSERT_EQ(gw_.WaitExit(10s), 0);

  const std::string log = gw_.Log();
  ASSERT_NE(log.find("session opened: app 'tok' device 't1'"), std::string::npos) << "not at debug level?\n" << log;
  const std::vector<std::pair<std::string, std::string>> secrets = {
      {"database secret", db_secret},
      {"device token", token},
      {"rejected token", wrong},
      {"hmac secret", hmac_secret},
      {"hmac token", hmac_token.substr(hmac_token.find(':') + 1)},
      {"open-mode token", jwt_like},
      {"session long token", t1.long_token()},
      {"session long token", o1.long_token()},
      {"session short token", t1.short_token()},
      {"session short token", o1.short_token()},  // an anonymous id must not be made of it
  };
  for (const auto& [what, secret] : secrets) {
    ASSERT_FALSE(secret.empty()) << what;
    EXPECT_EQ(log.find(secret), std::string::npos) << what << " appears in the log";
  }
}

}  // namespace
}  // namespace tether::testing
