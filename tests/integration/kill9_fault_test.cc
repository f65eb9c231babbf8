// Fault suite: kill -9 of tetherd at random moments under device load.
// Invariants checked after every restart: every write acknowledged with 2.05 is present exactly
// once; one device's pushes keep their order; each session that was lost fires its onDisconnect
// exactly once. 10 cycles by default, 100 with TETHER_SOAK=1 (make soak).
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <random>
#include <set>
#include <thread>

#include "tests/integration/fault_harness.h"
#include "tests/integration/sdk_client.h"
#include "tests/integration/tetherd_process.h"

namespace tether::testing {
namespace {

using namespace std::chrono_literals;
constexpr uint8_t kGet = 1, kPost = 2, kPut = 3;

// Reads a CBOR map of text keys -> CBOR values as raw bytes per key (test-only, definite maps).
std::map<std::string, std::string> ChildKeys(const std::string& json) {
  std::map<std::string, std::string> out;
  // JSON reply: {"<key>":<value>,...}; keys are push ids (no quotes inside).
  size_t i = 0;
  while ((i = json.find('"', i)) != std::string::npos) {
    size_t j = json.find('"', i + 1);
    if (j == std::string::npos) break;
    std::string key = json.substr(i + 1, j - i - 1);
    size_t colon = j + 1;
    if (colon < json.size() && json[colon] == ':') {
      size_t end = json.find_first_of(",}", colon);
      out[key] = json.substr(colon + 1, end - colon - 1);
      i = end;
    } else {
      i = j + 1;
    }
  }
  return out;
}

TEST(FaultKill9, AcknowledgedWritesSurviveRandomKills) {
  const bool soak = SoakMode();
  const int cycles = soak ? 100 : 10;
  const int kDevices = 8;
  TetherdProcess gw;
  uint16_t port = static_cast<uint16_t>(FreePort());
  gw.WriteConfig("device:\n  listen: \"127.0.0.1:" + std::to_string(port) +
                 "\"\n  heartbeat_target: 2s\n  session_timeout: 4s\n"
                 "admin:\n  listen: \"127.0.0.1:" + std::to_string(FreePort(false)) +
                 "\"\nstore:\n  path: ${STORE}\nlog:\n  level: info\napps:\n  - id: myapp\n");
  gw.Start();
  ASSERT_TRUE(gw.WaitForLog("listening for CoAP", 10s)) << gw.Log();

  std::mt19937 rng(12345);
  std::map<std::string, std::vector<int>> acked;  // device -> acknowledged sequence numbers, in order
  std::set<std::string> sessions_opened;           // one onDisconnect push per opened session
  std::vector<std::unique_ptr<SdkClient>> devs;
  for (int d = 0; d < kDevices; ++d) {
    devs.push_back(std::make_unique<SdkClient>(port));
    devs.back()->set_timeout(1s);  // after a kill the outstanding replies never come
  }
  int next_value = 0;
  for (int cycle = 0; cycle < cycles; ++cycle) {
    // (Re)open sessions that the gateway no longer knows; each registers onDisconnect.
    for (int d = 0; d < kDevices; ++d) {
      SdkClient& c = *devs[d];
      if (!c.short_token().empty() && c.Ping().CodeString() == "2.05") continue;
      ASSERT_TRUE(c.Open()) << "cycle " << cycle << "\n" << gw.Log();
      sessions_opened.insert(c.short_token());
      ASSERT_EQ(c.Request(kPost, "fired/" + c.short_token(), CborText("gone"), {".dis=add"}).CodeString(), "2.05");
    }
    // Load: pipelined pushes from every device; the kill lands at a random moment among them.
    std::uniform_int_distribution<int> when(0, 60);
    int kill_after = when(rng);
    std::vector<std::string> tokens(kDevices);
    std::vector<int> values(kDevices);
    bool killed = false;
    for (int round = 0; round < 80 && !killed; ++round) {
      for (int d = 0; d < kDevices; ++d) {
        values[d] = ++next_value;
        tokens[d] = devs[d]->Send(kPost, "log/dev" + std::to_string(d), CborUint(values[d]));
      }
      if (round == kill_after) {
        gw.Kill9();
        killed = true;
        for (auto& c : devs) c->set_timeout(100ms);  // replies already sent are in the socket buffers
      }
      for (int d = 0; d < kDevices; ++d) {
        CoapReply r = devs[d]->Await(tokens[d]);
        if (r.CodeString() == "2.05") acked["dev" + std::to_string(d)].push_back(values[d]);
      }
    }
    if (!killed) gw.Kill9();
    for (auto& c : devs) c->set_timeout(1s);
    gw.Start();
    ASSERT_TRUE(gw.WaitForLog("listening for CoAP", 10s))
        << "cycle " << cycle << ": " << gw.Log().substr(gw.Log().size() > 3000 ? gw.Log().size() - 3000 : 0);
  }
  // Final check through a fresh device: every acked value present exactly once, in push order.
  SdkClient reader(port);
  ASSERT_TRUE(reader.Open());
  Tally tally("kill -9 local");
  size_t total = 0;
  for (int d = 0; d < kDevices; ++d) {
    std::string dev = "dev" + std::to_string(d);
    CoapReply r = reader.GetWhole("log/" + dev);
    ASSERT_EQ(r.CodeString(), "2.05");
    auto children = ChildKeys(r.payload);  // ordered by push id = chronological
    std::vector<int> stored;
    for (const auto& [key, value] : children) stored.push_back(std::stoi(value));
    // Every acknowledged value is there; values never acknowledged may be there too (written
    // but not yet answered when the kill hit), but nothing twice and order is preserved.
    std::multiset<int> seen(stored.begin(), stored.end());
    for (int v : acked[dev]) {
      tally.Check(seen.count(v) == 1, dev + " value " + std::to_string(v) + " stored " +
                                          std::to_string(seen.count(v)) + " times");
    }
    tally.Check(std::is_sorted(stored.begin(), stored.end()), dev + ": pushes out of order");
    total += acked[dev].size();
  }
  tally.Check(total > static_cast<size_t>(cycles), "the load actually ran");
  // Every session lost in a kill either resumed or fired exactly once; let all of them expire now.
  for (auto& d : devs) d.reset();
  bool done = false;
  for (int i = 0; i < 100 && !done; ++i) {
    std::this_thread::sleep_for(200ms);
    reader.Ping();
    done = true;
    for (const auto& s : sessions_opened) {
      if (reader.Request(kGet, "fired/" + s, "", {}, {}, {}, 50u).payload == "null") done = false;
    }
  }
  size_t fired_once = 0;
  for (const auto& s : sessions_opened) {
    auto children = ChildKeys(reader.Request(kGet, "fired/" + s, "", {}, {}, {}, 50u).payload);
    fired_once += tally.Check(children.size() == 1, "session " + s + " fired " + std::to_string(children.size()) + " times");
  }
  std::printf("kill -9 faults: %d cycles, %zu acknowledged writes all present once and in order, "
              "%zu/%zu lost sessions fired onDisconnect exactly once\n",
              cycles, total, fired_once, sessions_opened.size());
}

}  // namespace
}  // namespace tether::testing
