// tetherctl and the admin endpoint against a running tetherd.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <lmdb.h>

#include <filesystem>
#include <fstream>
#include <future>
#include <sstream>

#include "store/store_counters.h"
#include "tests/integration/sdk_client.h"
#include "tests/integration/tetherd_process.h"
#include "tests/store/store_fixture.h"
#include "tests/support/eventually.h"

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
  EXPECT_EQ(sessions["sessions"][0]["state"], "active");
  EXPECT_EQ(sessions["sessions"][0]["last_seen_s"], 0) << "the device just pinged";
  EXPECT_EQ(CtlJson("sessions --app other")["sessions"].size(), 0u);
  // The human table shows the columns the API returns (every cell filled).
  ShellResult table = Ctl("sessions");
  ASSERT_EQ(table.status, 0) << table.out;
  std::istringstream lines(table.out);
  std::string header, row;
  std::getline(lines, header);
  std::getline(lines, row);
  EXPECT_EQ(header.rfind("DEVICE", 0), 0u) << table.out;
  for (const char* col : {"STATE", "ADDRESS", "LAST_SEEN_S", "SINCE_S"}) {
    EXPECT_NE(header.find(col), std::string::npos) << col << " missing: " << table.out;
  }
  EXPECT_EQ(row.find(" - "), std::string::npos) << "an empty cell: " << table.out;
  EXPECT_NE(row.find("sensor-9"), std::string::npos);

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
  // kick answers once the session ended; its operations commit right after.
  EXPECT_TRUE(Eventually([&] { return other.Get("presence/sensor-9").payload == CborText("offline"); }, 5s));
  EXPECT_EQ(dev.Ping().CodeString(), "4.01");
  ShellResult missing = Ctl("kick sensor-9");
  EXPECT_NE(missing.status, 0);
  EXPECT_NE(missing.out.find("no session for device 'sensor-9'"), std::string::npos) << missing.out;
  EXPECT_TRUE(Eventually(
      [&] {
        auto after = ParseMetrics(Shell("curl -sf http://127.0.0.1:" + std::to_string(admin_port_) + "/metrics").out);
        return after["tether_ondisconnect_fired_total"] == 1;
      },
      5s));

  json check = CtlJson("store check");
  EXPECT_EQ(check["ok"], true) << check.dump();
}

// tetherctl --config FILE finds the daemon at the file's admin.listen.
TEST_F(Admin, AdminAddressComesFromTheConfigFile) {
  const std::string ctl = "env -u TETHER_ADMIN " + TetherdProcess::BinaryPath("tetherctl");
  ShellResult r = Shell(ctl + " --config " + gw_.config_path() + " --json status");
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_EQ(json::parse(r.out)["mode"], "local-only");
  // --admin still wins over the file.
  r = Shell(ctl + " --config " + gw_.config_path() + " --admin 127.0.0.1:1 status");
  EXPECT_EQ(r.status, 3) << r.out;
  EXPECT_NE(r.out.find("127.0.0.1:1"), std::string::npos) << r.out;
}

// Browser-originated requests cannot drive the admin API (CSRF).
TEST_F(Admin, PostsFromWebPagesAreRefused) {
  const std::string post = "curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:" + std::to_string(admin_port_);
  EXPECT_EQ(Shell(post + "/api/v1/reload -H 'Content-Type: text/plain' --data x").out, "415");
  EXPECT_EQ(Shell(post + "/api/v1/sessions/x/kick --data-urlencode a=b").out, "415") << "a form post";
  EXPECT_EQ(Shell(post + "/api/v1/reload -H 'Content-Type: application/json' -H 'Origin: http://evil.example' --data ''")
                .out,
            "403");
  EXPECT_EQ(Shell(post + "/api/v1/reload -H 'Content-Type: application/json' --data '' "
                         "-H \"Authorization: Bearer $(cat \"$TETHER_ADMIN_TOKEN_FILE\")\"").out,
            "200");
}

// Flips one persisted counter behind the store's back: the store no longer matches its counters.
void TamperQueueCounter(const std::string& dir) {
  store::testing::RawEdit(dir, [](MDB_txn* txn) {
    MDB_dbi meta;
    ASSERT_EQ(mdb_dbi_open(txn, "meta", 0, &meta), 0);
    MDB_val k{8, const_cast<char*>("counters")}, v;
    ASSERT_EQ(mdb_get(txn, meta, &k, &v), 0);
    store::StoreCounters c;
    ASSERT_TRUE(store::DecodeCounters(std::string_view(static_cast<char*>(v.mv_data), v.mv_size), &c));
    c.queue_entries += 5;
    std::string enc = store::EncodeCounters(c);
    MDB_val nv{enc.size(), enc.data()};
    ASSERT_EQ(mdb_put(txn, meta, &k, &nv, 0), 0);
  });
}

// `store check` opens a stopped daemon's store itself, and fails (exit 1) on a bad store.
TEST_F(Admin, StoreCheckOnAStoppedDaemonsStore) {
  SdkClient dev(coap_port_);
  ASSERT_TRUE(dev.Open("sensor-1"));
  ASSERT_EQ(dev.Put("presence/sensor-1", CborText("online")).CodeString(), "2.05");
  gw_.Signal(SIGTERM);
  ASSERT_EQ(gw_.WaitExit(10s), 0);

  const std::string ctl = TetherdProcess::BinaryPath("tetherctl");
  ShellResult r = Shell(ctl + " --json store check --store " + gw_.store_path());
  ASSERT_EQ(r.status, 0) << r.out;
  json j = json::parse(r.out);
  EXPECT_EQ(j["ok"], true);
  EXPECT_GT(j["file_bytes"].get<uint64_t>(), 0u);
  // Through --config: the daemon does not answer, so its store.path is checked directly.
  r = Shell("env -u TETHER_ADMIN " + ctl + " --config " + gw_.config_path() + " store check");
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("checking " + gw_.store_path() + " directly"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("ok:"), std::string::npos) << r.out;
  // Without either, tetherctl says how to check a stopped daemon's store.
  r = Shell(ctl + " --admin 127.0.0.1:" + std::to_string(admin_port_) + " store check");
  EXPECT_EQ(r.status, 3);
  EXPECT_NE(r.out.find("--store DIR"), std::string::npos) << r.out;

  TamperQueueCounter(gw_.store_path());
  r = Shell(ctl + " --json store check --store " + gw_.store_path());
  EXPECT_EQ(r.status, 1) << r.out;
  j = json::parse(r.out.substr(0, r.out.rfind('}') + 1));
  EXPECT_EQ(j["ok"], false);
  EXPECT_FALSE(j["problems"].empty()) << r.out;

  // A file that is not a tether store at all.
  std::filesystem::remove_all(gw_.store_path());
  std::filesystem::create_directories(gw_.store_path());
  std::ofstream(gw_.store_path() + "/data.mdb") << std::string(8192, 'x');
  r = Shell(ctl + " store check --store " + gw_.store_path());
  EXPECT_EQ(r.status, 1) << r.out;
  EXPECT_NE(r.out.find("problems"), std::string::npos) << r.out;
  r = Shell(ctl + " store check --store " + gw_.dir() + "/no-such-store");
  EXPECT_EQ(r.status, 1) << r.out;
}

// The backup procedure of docs/operations.md: a hot mdb_copy into a fresh directory, checked,
// then restored into a stopped gateway, which starts with the data.
TEST_F(Admin, BackupAndRestoreAsDocumented) {
  SdkClient dev(coap_port_);
  ASSERT_TRUE(dev.Open("sensor-2"));
  ASSERT_EQ(dev.Put("presence/sensor-2", CborText("backed-up")).CodeString(), "2.05");
  const std::string backup = gw_.dir() + "/backup";
  ASSERT_TRUE(std::filesystem::create_directory(backup));
  ShellResult r = Shell("mdb_copy -c " + gw_.store_path() + " " + backup);  // while tetherd runs
  ASSERT_EQ(r.status, 0) << r.out;
  r = Shell(TetherdProcess::BinaryPath("tetherctl") + " store check --store " + backup);
  ASSERT_EQ(r.status, 0) << r.out;
  ASSERT_EQ(dev.Put("presence/sensor-2", CborText("after-backup")).CodeString(), "2.05");
  gw_.Signal(SIGTERM);
  ASSERT_EQ(gw_.WaitExit(10s), 0);
  std::filesystem::remove(gw_.store_path() + "/data.mdb");
  std::filesystem::remove(gw_.store_path() + "/lock.mdb");
  std::filesystem::copy_file(backup + "/data.mdb", gw_.store_path() + "/data.mdb");
  gw_.Start();
  ASSERT_TRUE(gw_.WaitForLog("admin endpoint on", 10s)) << gw_.Log();
  SdkClient other(coap_port_);
  ASSERT_TRUE(other.Open());
  EXPECT_EQ(other.Get("presence/sensor-2").payload, CborText("backed-up"));
}

TEST_F(Admin, ReloadReportsABrokenFileAndKeepsRunning) {
  gw_.WriteConfig(config_ + "bogus: 1\n");
  ShellResult bad = Ctl("reload");
  EXPECT_NE(bad.status, 0);
  EXPECT_NE(bad.out.find("bogus: unknown key"), std::string::npos) << bad.out;
  gw_.WriteConfig(config_);
  ShellResult good = Ctl("reload");
  EXPECT_EQ(good.status, 0) << good.out;
  EXPECT_EQ(good.out.find("restart"), std::string::npos) << good.out;
  SdkClient dev(coap_port_);
  EXPECT_TRUE(dev.Open());
  // tetherctl check-config on the broken file: exit 2 and file:line:col.
  gw_.WriteConfig(config_ + "bogus: 1\n");
  ShellResult check = Shell(TetherdProcess::BinaryPath("tetherctl") + " check-config " + gw_.config_path());
  EXPECT_EQ(check.status, 2);
  EXPECT_EQ(check.out, gw_.config_path() + ":9:1: bogus: unknown key\n");
}

// Reloads asked for while one runs (tetherctl and SIGHUP together) all get an answer, and the
// daemon ends up with the file as it is now.
TEST_F(Admin, ReloadsAskedTogetherAreAllAnswered) {
  std::vector<std::future<ShellResult>> replies;
  for (int i = 0; i < 4; ++i) replies.push_back(std::async(std::launch::async, [this] { return Ctl("reload"); }));
  gw_.Signal(SIGHUP);
  for (auto& r : replies) {
    ShellResult out = r.get();
    EXPECT_EQ(out.status, 0) << out.out;
    EXPECT_NE(out.out.find("applied"), std::string::npos) << out.out;
  }
  gw_.WriteConfig(config_ + "bogus: 1\n");
  ShellResult bad = Ctl("reload");
  EXPECT_EQ(bad.status, 1) << bad.out;
  EXPECT_NE(bad.out.find("bogus: unknown key"), std::string::npos) << bad.out;
}

// A second tetherd that cannot take the admin port leaves the running one's token in place.
TEST_F(Admin, ASecondDaemonThatCannotListenLeavesTheTokenAlone) {
  const std::string before = Shell("cat " + gw_.admin_token_file()).out;
  TetherdProcess second;
  second.SetEnv("RUNTIME_DIRECTORY", gw_.dir());
  second.WriteConfig("device:\n  listen: \"127.0.0.1:" + std::to_string(FreePort()) + "\"\nadmin:\n  listen: \"127.0.0.1:" +
                     std::to_string(admin_port_) + "\"\nstore:\n  path: ${STORE}\n");
  second.Start();
  EXPECT_EQ(second.WaitExit(10s), 1) << second.Log();
  EXPECT_NE(second.Log().find("cannot listen on 127.0.0.1:" + std::to_string(admin_port_)), std::string::npos);
  EXPECT_EQ(Shell("cat " + gw_.admin_token_file()).out, before);
  EXPECT_EQ(Ctl("status").status, 0);
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
