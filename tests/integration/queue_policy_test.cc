// Per-route queue bounds seen from a device: `on_full: reject` answers writes beyond the bound
// with 5.03 + Max-Age and a diagnostic while reads go on being served; `drop-oldest` accepts them,
// drops (and counts) the oldest queued writes, and only the newest reach the cloud.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <signal.h>

#include <chrono>
#include <string>
#include <thread>

#include "tests/integration/sdk_client.h"
#include "tests/integration/tetherd_process.h"
#include "tests/support/eventually.h"
#include "tests/upstream/fakecloud_process.h"

namespace tether::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

constexpr const char* kRoutes =
    "routes:\n"
    "  - { name: cmd, match: \"cmd/**\", queue: { max_entries: 3, on_full: reject } }\n"
    "  - { name: tele, match: \"tele/**\", queue: { max_entries: 3, on_full: drop-oldest } }\n";

class QueuePolicy : public ::testing::Test {
 protected:
  // upstream: "" for local-only mode, else the cloud's URL.
  void Start(const std::string& upstream) {
    coap_port_ = static_cast<uint16_t>(FreePort());
    admin_port_ = FreePort(false);
    gw_.WriteConfig("gateway:\n  id: gw-queue\ndevice:\n  listen: \"127.0.0.1:" + std::to_string(coap_port_) +
                    "\"\nadmin:\n  listen: \"127.0.0.1:" + std::to_string(admin_port_) +
                    "\"\nstore:\n  path: ${STORE}\n" + (upstream.empty() ? "" : "upstream:\n  url: " + upstream + "\n") +
                    "apps:\n  - id: myapp\n" + kRoutes);
    gw_.Start();
    ASSERT_TRUE(gw_.WaitForLog("admin endpoint on", 10s)) << gw_.Log();
  }
  json Queue(const std::string& route) {
    ShellResult o = Shell(TetherdProcess::BinaryPath("tetherctl") + " --admin 127.0.0.1:" +
                          std::to_string(admin_port_) + " --json queue");
    EXPECT_EQ(o.status, 0) << o.out;
    json q = json::parse(o.out, nullptr, false);
    if (q.is_object() && q.contains("routes")) {
      for (const auto& row : q["routes"]) {
        if (row["route"] == route) return row;
      }
    }
    return json();
  }
  double Metric(const std::string& series) {
    ShellResult m = Shell("curl -sf http://127.0.0.1:" + std::to_string(admin_port_) + "/metrics");
    EXPECT_EQ(m.status, 0);
    for (size_t i = 0; i < m.out.size();) {
      size_t eol = m.out.find('\n', i);
      if (eol == std::string::npos) eol = m.out.size();
      std::string line = m.out.substr(i, eol - i);
      i = eol + 1;
      if (line.rfind(series + " ", 0) == 0) return std::stod(line.substr(series.size() + 1));
    }
    return -1;
  }
  TetherdProcess gw_;
  uint16_t coap_port_ = 0;
  int admin_port_ = 0;
};

// Local-only mode: nothing drains, so the bound is reached and stays reached, also across a restart.
TEST_F(QueuePolicy, RejectAnswers503WithMaxAgeAndADiagnosticWhileReadsAreServed) {
  Start("");
  SdkClient dev(coap_port_);
  ASSERT_TRUE(dev.Open("d1"));
  for (int i = 0; i < 3; ++i) ASSERT_EQ(dev.Put("cmd/c" + std::to_string(i), CborUint(i)).CodeString(), "2.05") << i;
  for (int attempt = 0; attempt < 2; ++attempt) {
    CoapReply full = dev.Put("cmd/c3", CborUint(3));
    EXPECT_EQ(full.CodeString(), "5.03");
    ASSERT_TRUE(full.max_age) << "the device is told when to retry";
    EXPECT_EQ(*full.max_age, 30u);
    EXPECT_EQ(full.payload, "queue full, retry later");
  }
  // Reads are served, from the local copy; the refused write is not in it.
  CoapReply one = dev.Get("cmd/c1");
  EXPECT_EQ(one.CodeString(), "2.05");
  EXPECT_EQ(one.payload, CborUint(1));
  SdkClient reader(coap_port_);
  ASSERT_TRUE(reader.Open("d2"));
  CoapReply all = reader.GetWhole("cmd", 50u);  // JSON, as a native client asks
  EXPECT_EQ(all.CodeString(), "2.05");
  EXPECT_EQ(json::parse(all.payload, nullptr, false), (json{{"c0", 0}, {"c1", 1}, {"c2", 2}})) << all.payload;
  EXPECT_EQ(dev.Ping().CodeString(), "2.05");
  // The other route has its own bound.
  EXPECT_EQ(dev.Put("tele/t0", CborUint(0)).CodeString(), "2.05");

  json cmd = Queue("cmd");
  EXPECT_EQ(cmd["entries"], 3) << cmd.dump();
  EXPECT_EQ(cmd["rejected"], 2) << cmd.dump();
  EXPECT_EQ(cmd["dropped_oldest"], 0) << cmd.dump();
  EXPECT_EQ(Metric("tether_requests_total{method=\"PUT\",code=\"5.03\"}"), 2);

  // The queue is durable: after a restart the bound is still reached.
  gw_.Signal(SIGTERM);
  ASSERT_EQ(gw_.WaitExit(10s), 0) << gw_.Log();
  gw_.Start();
  ASSERT_TRUE(gw_.WaitForLog("admin endpoint on", 10s)) << gw_.Log();
  EXPECT_EQ(dev.Put("cmd/c4", CborUint(4)).CodeString(), "5.03");
  EXPECT_EQ(dev.Get("cmd/c2").payload, CborUint(2));
}

// With a cloud: an outage fills both routes; drop-oldest keeps accepting and counts what it drops,
// reject refuses; when the cloud is back the newest writes arrive, the dropped ones never, and the
// rejecting route accepts writes again by itself.
TEST_F(QueuePolicy, DropOldestDropsAndCountsAndOnlyTheNewestReachTheCloud) {
  upstream::testing::FakeCloud cloud;
  Start(cloud.url());
  SdkClient dev(coap_port_);
  ASSERT_TRUE(dev.Open("d1"));
  ASSERT_EQ(dev.Put("tele/warmup", CborUint(1)).CodeString(), "2.05");
  auto cloud_at = [&](const std::string& key) {
    try {
      json v = cloud.Control({{"op", "dump"}});
      return v.is_object() && v.contains(key) ? v[key] : json();
    } catch (const std::exception&) {
      return json();  // down
    }
  };
  auto wait_cloud = [&](const std::string& key, const json& want, std::chrono::seconds limit) {
    return tether::testing::Eventually([&] { return cloud_at(key) == want; }, limit, 100ms);
  };
  ASSERT_TRUE(wait_cloud("tele", json{{"warmup", 1}}, 10s)) << "the link works before the outage";
  // The upload's confirmation is committed just after the cloud answered.
  ASSERT_TRUE(tether::testing::Eventually([&] { return Queue("tele")["entries"] == 0; }, 5s));

  cloud.Control({{"op", "down"}, {"ms", 4000}});
  const auto outage = std::chrono::steady_clock::now();
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(dev.Put("tele/t" + std::to_string(i), CborUint(i)).CodeString(), "2.05") << "drop-oldest never refuses";
  }
  for (int i = 0; i < 3; ++i) ASSERT_EQ(dev.Put("cmd/c" + std::to_string(i), CborUint(i)).CodeString(), "2.05");
  CoapReply full = dev.Put("cmd/c3", CborUint(3));
  EXPECT_EQ(full.CodeString(), "5.03");
  EXPECT_EQ(full.max_age.value_or(0), 30u);
  EXPECT_EQ(full.payload, "queue full, retry later");
  json tele = Queue("tele");
  ASSERT_LT(std::chrono::steady_clock::now() - outage, 3500ms) << "not measured during the outage";
  EXPECT_EQ(tele["entries"], 3) << tele.dump();
  EXPECT_EQ(tele["dropped_oldest"], 3) << tele.dump();
  EXPECT_EQ(tele["rejected"], 0) << tele.dump();
  EXPECT_EQ(Queue("cmd")["rejected"], 1);
  // The device still reads its own writes, dropped uploads included (they are local data).
  EXPECT_EQ(dev.Get("tele/t0").payload, CborUint(0));
  EXPECT_EQ(dev.Get("tele/t5").payload, CborUint(5));

  // Back up: the newest three telemetry writes and the three accepted commands arrive.
  ASSERT_TRUE(wait_cloud("tele", json{{"warmup", 1}, {"t3", 3}, {"t4", 4}, {"t5", 5}}, 30s)) << cloud_at("tele").dump();
  ASSERT_TRUE(wait_cloud("cmd", json{{"c0", 0}, {"c1", 1}, {"c2", 2}}, 30s)) << cloud_at("cmd").dump();
  tether::testing::Eventually([&] { return Queue("cmd")["entries"] == 0; }, 10s, 100ms);
  EXPECT_EQ(dev.Put("cmd/c3", CborUint(3)).CodeString(), "2.05") << "the drained queue accepts again";
  EXPECT_TRUE(wait_cloud("cmd", json{{"c0", 0}, {"c1", 1}, {"c2", 2}, {"c3", 3}}, 30s)) << cloud_at("cmd").dump();
  EXPECT_EQ(Queue("tele")["dropped_oldest"], 3) << "the count is kept";
}

}  // namespace
}  // namespace tether::testing
