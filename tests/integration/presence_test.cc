// The Firebase presence recipe at fleet scale, against a running tetherd over real UDP:
// 1,000 devices register onDisconnect { remove their connection, set lastOnline = server time },
// then 100 go silent and 50 call goOffline. All 150 must be cleaned up (silent ones within the
// session timeout + 1 s), the other 850 untouched, no ghost connection left.
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <memory>
#include <thread>

#include "tests/integration/sdk_client.h"
#include "tests/integration/tetherd_process.h"

namespace tether::testing {
namespace {

using namespace std::chrono_literals;
constexpr uint8_t kGet = 1, kPut = 3, kDelete = 4;
constexpr size_t kDevices = 1000, kSilent = 100, kOffline = 50;

class Fleet {
 public:
  Fleet(uint16_t port, size_t n) {
    for (size_t i = 0; i < n; ++i) devices_.push_back(std::make_unique<SdkClient>(port));
  }
  SdkClient& operator[](size_t i) { return *devices_[i]; }
  // Sends one request per device in [from, to), then collects every reply.
  template <typename SendFn>
  std::vector<CoapReply> Round(size_t from, size_t to, SendFn send) {
    std::vector<std::string> tokens;
    for (size_t i = from; i < to; ++i) tokens.push_back(send(*devices_[i], i));
    std::vector<CoapReply> replies;
    for (size_t i = from; i < to; ++i) replies.push_back(devices_[i]->Await(tokens[i - from]));
    return replies;
  }
  static void ExpectAll(const std::vector<CoapReply>& rs, const char* code, const char* what) {
    size_t bad = 0;
    for (const auto& r : rs) bad += r.CodeString() != code;
    EXPECT_EQ(bad, 0u) << what;
  }

 private:
  std::vector<std::unique_ptr<SdkClient>> devices_;
};

TEST(Presence, ThousandDevicesHundredSilentFiftyGoOffline) {
  rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  ASSERT_GE(rl.rlim_max, kDevices + 200) << "needs one socket per simulated device";
  rl.rlim_cur = rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);

  TetherdProcess gw;
  uint16_t port = static_cast<uint16_t>(FreePort());
  gw.WriteConfig("device:\n  listen: \"127.0.0.1:" + std::to_string(port) +
                 "\"\n  heartbeat_target: 1s\n  session_timeout: 2s\n"
                 "admin:\n  listen: \"127.0.0.1:" + std::to_string(FreePort(false)) +
                 "\"\nstore:\n  path: ${STORE}\nlog:\n  level: info\napps:\n  - id: myapp\n");
  gw.Start();
  ASSERT_TRUE(gw.WaitForLog("listening for CoAP", 10s)) << gw.Log();

  Fleet fleet(port, kDevices);
  auto opens = fleet.Round(0, kDevices, [](SdkClient& d, size_t) { return d.SendOpen(); });
  for (size_t i = 0; i < kDevices; ++i) ASSERT_TRUE(fleet[i].AcceptOpen(opens[i])) << i << " " << opens[i].CodeString() << " " << Hex(opens[i].payload);
  auto user = [](size_t i) { return "users/u" + std::to_string(i); };
  // The recipe: onDisconnect first, then announce the connection.
  Fleet::ExpectAll(fleet.Round(0, kDevices, [&](SdkClient& d, size_t i) {
    return d.Send(kDelete, user(i) + "/connections/c1", "", {".dis=add"});
  }), "2.05", "onDisconnect remove");
  Fleet::ExpectAll(fleet.Round(0, kDevices, [&](SdkClient& d, size_t i) {
    return d.Send(kPut, user(i) + "/lastOnline", CborMap({{".sv", CborText("timestamp")}}), {".dis=add"});
  }), "2.05", "onDisconnect set lastOnline");
  Fleet::ExpectAll(fleet.Round(0, kDevices, [&](SdkClient& d, size_t i) {
    return d.Send(kPut, user(i) + "/connections/c1", "\xf5");
  }), "2.05", "connection set");

  // 50 go offline: handled at once.
  auto steady0 = std::chrono::steady_clock::now();
  Fleet::ExpectAll(fleet.Round(kSilent, kSilent + kOffline, [](SdkClient& d, size_t) { return d.Send(kGet, ".off"); }),
                   "2.05", "goOffline");
  auto offline_checks = fleet.Round(kSilent + kOffline, kSilent + 2 * kOffline, [&](SdkClient& d, size_t i) {
    return d.Send(kGet, user(i - kOffline) + "/connections");
  });
  for (const auto& r : offline_checks) EXPECT_EQ(r.payload, "\xf6") << "goOffline cleaned up at once";

  // The other 850 keep pinging; the first 100 are silent.
  bool all_gone = false;
  std::chrono::steady_clock::duration detected_after{};
  while (std::chrono::steady_clock::now() - steady0 < 5s) {
    Fleet::ExpectAll(fleet.Round(kSilent + kOffline, kDevices, [](SdkClient& d, size_t) { return d.Send(kGet, ".ping"); }),
                     "2.05", "pings of live devices");
    auto probes = fleet.Round(kSilent + kOffline, kSilent + kOffline + kSilent, [&](SdkClient& d, size_t i) {
      return d.Send(kGet, user(i - kSilent - kOffline) + "/connections");
    });
    size_t gone = 0;
    for (const auto& r : probes) gone += r.payload == "\xf6";
    if (gone == kSilent) {
      all_gone = true;
      detected_after = std::chrono::steady_clock::now() - steady0;
      break;
    }
    std::this_thread::sleep_for(250ms);
  }
  ASSERT_TRUE(all_gone) << gw.Log().substr(0, 4000);
  std::printf("presence: 100 silent devices all declared gone %lld ms after they fell silent\n",
              static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(detected_after).count()));
  EXPECT_LE(detected_after, 3s) << "session timeout (2 s) + 1 s";
  EXPECT_GE(detected_after, 1500ms) << "not before the timeout";

  // Final state, read by live devices: 150 cleaned up with lastOnline, 850 untouched.
  auto final_state = fleet.Round(kSilent + kOffline, kDevices, [&](SdkClient& d, size_t i) {
    return d.Send(kGet, user(i - kSilent - kOffline));
  });
  auto rest = fleet.Round(kSilent + kOffline, kSilent + 2 * kOffline + kSilent, [&](SdkClient& d, size_t i) {
    return d.Send(kGet, user(i));  // the 850 themselves (first 200 of them here)
  });
  size_t cleaned = 0, bad = 0;
  for (size_t k = 0; k < kSilent + kOffline; ++k) {
    const std::string& p = final_state[k].payload;  // {"lastOnline": <ms>} and no connections
    bool ok = p.size() >= 12 && p[0] == '\xa1' && p.find("lastOnline") != std::string::npos &&
              p.find("connections") == std::string::npos;
    cleaned += ok;
  }
  EXPECT_EQ(cleaned, kSilent + kOffline);
  for (size_t k = kSilent + kOffline; k < final_state.size(); ++k) {
    const std::string& p = final_state[k].payload;
    bad += p.find("connections") == std::string::npos || p.find("lastOnline") != std::string::npos;
  }
  for (const auto& r : rest) bad += r.payload.find("connections") == std::string::npos;
  EXPECT_EQ(bad, 0u) << "live devices untouched";
  gw.Signal(SIGTERM);
  EXPECT_EQ(gw.WaitExit(20s), 0);
}

}  // namespace
}  // namespace tether::testing
