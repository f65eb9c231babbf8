// The gateway and its cloud: tetherd uploading to tests/fakecloud over real HTTP.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <thread>

#include "tests/integration/cloud_fixture.h"

namespace tether::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

class CloudLink : public CloudFixture {};

// 100 devices write to two routes in rounds spread over the whole outage (seconds here, 60 s
// under TETHER_SOAK=1), against a cloud whose clock is 2.5 s ahead of the gateway's. After
// recovery: every acknowledged write is in the cloud exactly once, each route's writes were
// uploaded in the order they were acknowledged (a round never overtakes an earlier one), and each
// server timestamp lies within 50 ms of the moment the device wrote, in cloud time.
TEST_F(CloudLink, WanOutageEveryAcknowledgedWriteArrivesOnceInOrderWithEventTime) {
  const bool soak = std::getenv("TETHER_SOAK") != nullptr;
  const int outage_ms = soak ? 60'000 : 5'000;
  const int rounds = soak ? 60 : 6;
  const int kDevices = 100;
  const int64_t skew = 2'500;
  cloud_.Control({{"op", "skew"}, {"ms", skew}});
  StartGateway(
      "  - { name: devs, match: \"devices/{device}/**\", cloud: \"fleet/{device}/**\" }\n"
      "  - { name: events, match: \"events/**\" }\n");
  std::vector<std::unique_ptr<SdkClient>> devs;
  for (int d = 0; d < kDevices; ++d) {
    devs.push_back(std::make_unique<SdkClient>(port_));
    ASSERT_TRUE(devs.back()->Open("dev" + std::to_string(d)));
  }
  ASSERT_TRUE(WaitConnected(*devs[0], true));
  struct Write {
    std::string route, device;
    int round;
    int64_t sent_ms, acked_ms;
  };
  std::map<std::string, Write> writes;  // push key -> the write
  cloud_.Control({{"op", "down"}, {"ms", outage_ms}});
  auto t0 = std::chrono::steady_clock::now();
  for (int k = 0; k < rounds; ++k) {
    // Spread: round k starts at k/rounds of the outage (the last one well before it ends).
    std::this_thread::sleep_until(t0 + std::chrono::milliseconds(k * (outage_ms - 1500) / rounds));
    // Each device has one request in flight at a time: its own route first, then (half of the
    // devices) the shared one.
    for (const char* route : {"devs", "events"}) {
      std::vector<std::pair<int, std::string>> toks;  // device, token
      std::vector<int64_t> sent;
      for (int d = 0; d < kDevices; ++d) {
        if (route == std::string("events") && d % 2) continue;
        auto ts = CborMap({{"k", CborUint(k)}, {"at", CborMap({{".sv", CborText("timestamp")}})}});
        std::string path = route == std::string("devs") ? "devices/dev" + std::to_string(d) + "/log" : "events/log";
        sent.push_back(WallMs());
        toks.push_back({d, devs[d]->Send(kPost, path, ts)});
      }
      for (size_t i = 0; i < toks.size(); ++i) {
        CoapReply r = devs[toks[i].first]->Await(toks[i].second);
        ASSERT_EQ(r.CodeString(), "2.05") << "writes are acknowledged while the cloud is down";
        writes[r.payload] = {route, "dev" + std::to_string(toks[i].first), k, sent[i], WallMs()};
      }
    }
  }
  ASSERT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(outage_ms)) << "writes were not offline";
  EXPECT_EQ(devs[0]->Request(kGet, ".info/connected", "", {}, {}, {}, 50u).payload, "false");

  // After the outage everything arrives (bounded wait).
  const size_t total = writes.size();
  auto count = [](const json& fleet, const json& events) {
    size_t n = events.is_object() && events.contains("log") ? events["log"].size() : 0;
    if (fleet.is_object()) {
      for (auto& [dev, v] : fleet.items()) n += v.contains("log") ? v["log"].size() : 0;
    }
    return n;
  };
  json fleet, events;
  Eventually(
      [&] {
        try {
          json all = cloud_.Control({{"op", "dump"}});
          fleet = all.value("fleet", json());
          events = all.value("events", json());
          return count(fleet, events) == total;
        } catch (const std::exception&) {  // the cloud is still down
          return false;
        }
      },
      120s, 200ms);
  ASSERT_EQ(count(fleet, events), total) << "writes missing after the outage";
  size_t off = 0;
  for (const auto& [key, w] : writes) {
    const json& v = w.route == "devs" ? fleet[w.device]["log"][key] : events["log"][key];
    ASSERT_TRUE(v.is_object()) << w.route << " write " << key << " missing in the cloud";
    EXPECT_EQ(v["k"], w.round);
    int64_t at = v["at"].get<int64_t>() - skew;  // back to gateway wall time
    off += at < w.sent_ms - 50 || at > w.acked_ms + 50;
  }
  EXPECT_EQ(off, 0u) << "server timestamps are the event time in cloud time, not the upload time";

  // Exactly once, and in order per route: each key is in one upload, and no write of a later
  // round was uploaded before a write of an earlier round of the same route.
  json log = cloud_.Control({{"op", "log"}});
  std::map<std::string, std::vector<size_t>> seen;  // key -> indexes of requests carrying it
  for (size_t i = 0; i < log.size(); ++i) {
    if (log[i]["method"] != "PATCH") continue;
    for (auto& [path, v] : log[i]["body"].items()) {
      std::string key = path.substr(path.rfind('/') + 1);
      if (writes.count(key)) seen[key].push_back(i);
    }
  }
  std::map<std::string, std::map<int, std::pair<size_t, size_t>>> span;  // route -> round -> [first, last] request
  for (const auto& [key, w] : writes) {
    ASSERT_EQ(seen[key].size(), 1u) << key << " uploaded " << seen[key].size() << " times";
    auto [it, fresh] = span[w.route].try_emplace(w.round, seen[key][0], seen[key][0]);
    it->second.first = std::min(it->second.first, seen[key][0]);
    it->second.second = std::max(it->second.second, seen[key][0]);
  }
  for (const auto& [route, by_round] : span) {
    for (auto it = by_round.begin(); std::next(it) != by_round.end(); ++it) {
      EXPECT_LE(it->second.second, std::next(it)->second.first)
          << route << ": a write of round " << std::next(it)->first << " was uploaded before one of round " << it->first;
    }
  }
  EXPECT_TRUE(WaitConnected(*devs[0], true)) << "the link is reported up again";
  std::printf("wan outage: %d ms down, %zu writes from %d devices on 2 routes acknowledged offline over %d rounds, "
              "all uploaded once, in order per route, timestamps within 50 ms of the event\n",
              outage_ms, total, kDevices, rounds);
}

TEST_F(CloudLink, SyncRootIsServedOfflineAndFollowsCloudChanges) {
  StartGateway();
  SdkClient dev(port_);
  ASSERT_TRUE(dev.Open("d1"));
  // The cloud writes config; the gateway's stream brings it into the local copy and notifies.
  ASSERT_EQ(dev.Observe("config").CodeString(), "2.05");
  CloudPut("config", R"({"rate":5})");
  auto n = dev.WaitNotification(5s);
  ASSERT_TRUE(n) << gw_.Log();
  EXPECT_EQ(n->payload, "\xa1" + CborText("rate") + CborUint(5));
  // Cloud down: the device still reads the synced value.
  cloud_.Control({{"op", "down"}, {"ms", 3000}});
  EXPECT_EQ(dev.Get("config/rate").payload, CborUint(5));
  EXPECT_EQ(dev.Put("config/rate", CborUint(9)).CodeString(), "4.03") << "route write: none";
}

TEST_F(CloudLink, ReadOutsideSyncRootsAsksTheCloudThenFallsBackToTheLocalCopy) {
  StartGateway();
  SdkClient dev(port_);
  ASSERT_TRUE(dev.Open("dev1"));
  CloudPut("fleet/dev1/info", "\"from-cloud\"");
  ASSERT_TRUE(WaitConnected(dev, true));
  EXPECT_EQ(dev.Request(kGet, "devices/dev1/info", "", {}, {}, {}, 50u).payload, "\"from-cloud\"");
  // The answer is stored in the local copy by a store batch committed just after the reply.
  std::this_thread::sleep_for(300ms);
  cloud_.Control({{"op", "down"}, {"ms", 4000}});
  // The cloud is gone: the copy remembered from the last read answers.
  EXPECT_EQ(dev.Request(kGet, "devices/dev1/info", "", {}, {}, {}, 50u).payload, "\"from-cloud\"");
}

// An expired access token: uploads pause (nothing dropped, nothing dead-lettered) until the agent
// that keeps the token file rotates it, then the drain resumes by itself.
TEST_F(CloudLink, UnauthorizedPausesTheDrainUntilTheTokenFileIsRotated) {
  cloud_.Control({{"op", "tokens"}, {"values", {"fresh-token"}}});
  std::string token_file = gw_.dir() + "/token";
  std::ofstream(token_file) << "expired-token\n";
  StartGateway(kDefaultRoutes, "  access_token_file: " + token_file + "\n");
  SdkClient dev(port_);
  ASSERT_TRUE(dev.Open("dev1"));
  for (int i = 0; i < 5; ++i) {
    ASSERT_EQ(dev.Put("devices/dev1/n" + std::to_string(i), CborUint(i)).CodeString(), "2.05");
  }
  // The cloud answers 401 to every upload; they stay queued.
  auto attempts_401 = [&] {
    size_t n = 0;
    for (auto& a : cloud_.Control({{"op", "attempts"}})) n += a["method"] == "PATCH" && a["status"] == 401;
    return n;
  };
  Eventually([&] { return attempts_401() >= 2; }, 5s, 50ms);
  ASSERT_GE(attempts_401(), 2u) << "uploads were tried and refused";
  EXPECT_TRUE(CloudAt("fleet").is_null()) << "nothing reached the cloud";
  usleep(20000);  // a distinct mtime
  std::ofstream(token_file) << "fresh-token\n";
  ASSERT_TRUE(WaitCloud("fleet/dev1", [](const json& v) { return v.is_object() && v.size() == 5; }, 15s))
      << CloudAt("").dump();
  for (int i = 0; i < 5; ++i) EXPECT_EQ(CloudAt("fleet/dev1/n" + std::to_string(i)), i);
  for (auto& e : cloud_.Control({{"op", "log"}})) {
    EXPECT_NE(e["query"].get<std::string>().find("access_token=fresh-token"), std::string::npos);
  }
}

// upstream.auth_variable_override: every upload is evaluated by the cloud's rules as the device
// that made it, so a batch never carries two devices' writes.
TEST_F(CloudLink, UploadsCarryTheWritingDevicesIdentity) {
  cloud_.Control({{"op", "secret"}, {"value", "db-secret"}});
  std::string secret_file = gw_.dir() + "/secret";
  std::ofstream(secret_file) << "db-secret\n";
  StartGateway("  - { name: shared, match: \"**\" }\n",
               "  secret_file: " + secret_file + "\n  auth_variable_override: '{\"uid\":\"{device}\",\"via\":\"{gateway}\"}'\n");
  SdkClient a(port_), b(port_);
  ASSERT_TRUE(a.Open("alice"));
  ASSERT_TRUE(b.Open("bob"));
  ASSERT_TRUE(WaitConnected(a, true));
  cloud_.Control({{"op", "down"}, {"ms", 1500}});  // queue interleaved writes, then upload together
  ASSERT_EQ(a.Put("room/a1", CborUint(1)).CodeString(), "2.05");
  ASSERT_EQ(a.Put("room/a2", CborUint(2)).CodeString(), "2.05");
  ASSERT_EQ(b.Put("room/b1", CborUint(3)).CodeString(), "2.05");
  ASSERT_EQ(a.Put("room/a3", CborUint(4)).CodeString(), "2.05");
  ASSERT_TRUE(WaitCloud("room", [](const json& v) { return v.is_object() && v.size() == 4; }, 15s));
  std::vector<std::string> uploads;  // "keys as uid"
  for (auto& e : cloud_.Control({{"op", "log"}})) {
    if (e["path"] != "/room" && e["path"] != "/") continue;
    std::string q = e["query"];
    std::string keys;
    for (auto& [k, v] : e["body"].items()) keys += k + " ";
    size_t at = q.find("auth_variable_override=");
    ASSERT_NE(at, std::string::npos) << q;
    uploads.push_back(keys + q.substr(at + 23, q.find('&', at) - at - 23));
  }
  const std::string alice = "%7B%22uid%22%3A%22alice%22%2C%22via%22%3A%22gw-test%22%7D";
  const std::string bob = "%7B%22uid%22%3A%22bob%22%2C%22via%22%3A%22gw-test%22%7D";
  EXPECT_EQ(uploads, (std::vector<std::string>{"room/a1 room/a2 " + alice, "room/b1 " + bob, "room/a3 " + alice}));
}

}  // namespace
}  // namespace tether::testing
