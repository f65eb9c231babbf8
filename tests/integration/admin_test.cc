// tetherctl and the admin endpoint against a running tetherd.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>


#include "tests/integration/sdk_client.h"
#include "tests/integration/tetherd_process.h"

namespace tether::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

class Admin : public ::testing::Test {
 protected:
  void SetUp() override {
    coap_port_ = static_cast<uint16_t>(FreePort());
    admin_port_ = FreePort(false);
    config_ = "device:\n  listen: \"127.0.0.1:" + std::to_string(coap_port_) + "\"\n" +
              "admin:\n  listen: \"127.0.0.1:" + std::to_string(admin_port_) + "\"\n" +
              "store:\n  path: ${STORE}\napps:\n  - id: myapp\n";
    gw_.WriteConfig(config_);
    gw_.Start();
    ASSERT_TRUE(gw_.WaitForLog("admin endpoint on", 10s)) << gw_.Log();
  }
  ShellResult Ctl(const std::string& args) {
    return Shell(TetherdProcess::BinaryPath("tetherctl") + " --admin 127.0.0.1:" + std::to_string(admin_port_) + " " + args);
  }
  json CtlJson(const std::string& args) {
    ShellResult o = Ctl("--json " + args);
    EXPECT_EQ(o.status, 0) << o.out;
    return json::parse(o.out, nullptr, false);
  }

  TetherdProcess gw_;
  uint16_t coap_port_ = 0;
  int admin_port_ = 0;
  std::string config_;
};

// Parses Prometheus text exposition into "name{labels}" -> value.
std::map<std::string, double> ParseMetrics(const std::string& text) {
  std::map<std::string, double> out;
  size_t i = 0;
  while (i < text.size()) {
    size_t eol = text.find('\n', i);
    if (eol == std::string::npos) eol = text.size();
    std::string line = text.substr(i, eol - i);
    i = eol + 1;
    if (line.empty() || line[0] == '#') continue;
    size_t sp = line.rfind(' ');
    EXPECT_NE(sp, std::string::npos) << line;
    out[line.substr(0, sp)] = std::stod(line.substr(sp + 1));
  }
  return out;
}

TEST_F(Admin, StatusSessionsQueueMetricsKickAndStoreCheck) {
  SdkClient dev(coap_port_);
  ASSERT_TRUE(dev.Open("sensor-9"));
  ASSERT_EQ(dev.Request(3, "presence/sensor-9", CborText("offline"), {".dis=add"}).CodeString(), "2.05");
  ASSERT_EQ(dev.Put("presence/sensor-9", CborText("online")).CodeString(), "2.05");
  ASSERT_EQ(dev.Ping().CodeString(), "2.05");

  json status = CtlJson("status");
  EXPECT_EQ(status["mode"], "local-only");
  EXPECT_EQ(status["sessions"], 1);
  EXPECT_EQ(status["queue"]["entries"], 1) << status.dump();

  json sessions = CtlJson("sessions --app myapp");
  ASSERT_EQ(sessions["sessions"].size(), 1u);
  EXPECT_EQ(sessions["sessions"][0]["device"], "sensor-9");
  EXPECT_EQ(CtlJson("sessions --app other")["sessions"].size(), 0u);

  json queue = CtlJson("queue");
  ASSERT_EQ(queue["routes"].size(), 1u);
  EXPECT_EQ(queue["routes"][0]["route"], "myapp");
  EXPECT_EQ(queue["routes"][0]["entries"], 1);

  ShellResult human = Ctl("status");
  EXPECT_EQ(human.status, 0);
  EXPECT_NE(human.out.find("local-only"), std::string::npos) << human.out;

  // Metrics scraped and parsed while the daemon runs.
  ShellResult metrics = Shell("curl -sf http://127.0.0.1:" + std::to_string(admin_port_) + "/metrics");
  ASSERT_EQ(metrics.status, 0);
  auto m = ParseMetrics(metrics.out);
  EXPECT_EQ(m["tether_sessions{app=\"myapp\",state=\"active\"}"], 1);
  EXPECT_EQ(m["tether_queue_depth{route=\"myapp\"}"], 1);
  EXPECT_EQ(m["tether_requests_total{method=\"PUT\",code=\"2.05\"}"], 2);
  EXPECT_EQ(m["tether_heartbeats_total"], 1);
  EXPECT_EQ(m["tether_upstream_up"], 0);
  EXPECT_EQ(Shell("curl -sf http://127.0.0.1:" + std::to_string(admin_port_) + "/healthz").status, 0);
  EXPECT_EQ(Shell("curl -sf http://127.0.0.1:" + std::to_string(admin_port_) + "/readyz").status, 0);

  // kick ends the session and runs its onDisconnect operations.
  ShellResult kick = Ctl("kick sensor-9");
  EXPECT_EQ(kick.status, 0) << kick.out;
  SdkClient other(coap_port_);
  ASSERT_TRUE(other.Open());
  EXPECT_EQ(other.Get("presence/sensor-9").payload, CborText("offline"));
  EXPECT_EQ(dev.Ping().CodeString(), "4.01");
  ShellResult missing = Ctl("kick sensor-9");
  EXPECT_NE(missing.status, 0);
  EXPECT_NE(missing.out.find("no session for device 'sensor-9'"), std::string::npos) << missing.out;
  auto after = ParseMetrics(Shell("curl -sf http://127.0.0.1:" + std::to_string(admin_port_) + "/metrics").out);
  EXPECT_EQ(after["tether_ondisconnect_fired_total"], 1);

  json check = CtlJson("store check");
  EXPECT_EQ(check["ok"], true) << check.dump();
}

TEST_F(Admin, ReloadReportsABrokenFileAndKeepsRunning) {
  gw_.WriteConfig(config_ + "bogus: 1\n");
  ShellResult bad = Ctl("reload");
  EXPECT_NE(bad.status, 0);
  EXPECT_NE(bad.out.find("bogus: unknown key"), std::string::npos) << bad.out;
  gw_.WriteConfig(config_);
  ShellResult good = Ctl("reload");
  EXPECT_EQ(good.status, 0) << good.out;
  SdkClient dev(coap_port_);
  EXPECT_TRUE(dev.Open());
}

TEST_F(Admin, ClearErrorWhenTheDaemonIsNotRunning) {
  gw_.Signal(SIGTERM);
  ASSERT_EQ(gw_.WaitExit(10s), 0);
  // Hold a bound, non-listening port so no other test's daemon can answer on it meanwhile.
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ShellResult o = Shell(TetherdProcess::BinaryPath("tetherctl") + " --admin 127.0.0.1:" + std::to_string(ntohs(a.sin_port)) + " status");
  close(fd);
  EXPECT_EQ(o.status, 3);
  EXPECT_NE(o.out.find("cannot reach tetherd"), std::string::npos) << o.out;
}

}  // namespace
}  // namespace tether::testing
