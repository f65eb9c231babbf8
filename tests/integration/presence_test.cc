// The Firebase presence recipe at fleet scale, against a running tetherd over real UDP:
// 1,000 devices each register onDisconnect { remove users/<id>/connections, set lastOnline =
// server time } FIRST, then push (POST) their connection under users/<id>/connections. 100 go
// silent and 50 call goOffline. All 150 must be cleaned up (silent ones within the session
// timeout + 1 s of their last datagram, measured per device from the lastOnline the gateway
// wrote), the other 850 untouched, no ghost connection left.
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <optional>
#include <thread>

#include "tests/integration/sdk_client.h"
#include "tests/integration/tetherd_process.h"

namespace tether::testing {
namespace {

using namespace std::chrono_literals;
constexpr uint8_t kGet = 1, kPost = 2, kPut = 3, kDelete = 4;

int64_t WallMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// The unsigned integer that follows the CBOR text key `key` in `cbor` (test-only, no nesting).
std::optional<int64_t> CborUintAfter(const std::string& cbor, const std::string& key) {
  size_t at = cbor.find(CborText(key));
  if (at == std::string::npos) return std::nullopt;
  size_t i = at + CborText(key).size();
  if (i >= cbor.size()) return std::nullopt;
  const uint8_t head = static_cast<uint8_t>(cbor[i]);
  if (head < 0x18) return head;
  const size_t n = head == 0x18 ? 1 : head == 0x19 ? 2 : head == 0x1a ? 4 : head == 0x1b ? 8 : 0;
  if (!n || i + 1 + n > cbor.size()) return std::nullopt;
  int64_t v = 0;
  for (size_t b = 0; b < n; ++b) v = v << 8 | static_cast<uint8_t>(cbor[i + 1 + b]);
  return v;
}
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
                 "  opens_per_second: 0\n"  // one host opens the whole fleet at once
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
    return d.Send(kDelete, user(i) + "/connections", "", {".dis=add"});
  }), "2.05", "onDisconnect remove");
  Fleet::ExpectAll(fleet.Round(0, kDevices, [&](SdkClient& d, size_t i) {
    return d.Send(kPut, user(i) + "/lastOnline", CborMap({{".sv", CborText("timestamp")}}), {".dis=add"});
  }), "2.05", "onDisconnect set lastOnline");
  // The silent devices' last datagram is their push: when each left, and when all were answered.
  std::vector<int64_t> last_sent(kDevices);
  auto push = [&](SdkClient& d, size_t i) {
    last_sent[i] = WallMs();
    return d.Send(kPost, user(i) + "/connections", "\xf5");
  };
  auto pushes = fleet.Round(0, kSilent, push);
  const int64_t silent_answered = WallMs();
  auto others = fleet.Round(kSilent, kDevices, push);
  pushes.insert(pushes.end(), others.begin(), others.end());
  Fleet::ExpectAll(pushes, "2.05", "connection pushed");
  std::vector<std::string> keys;
  for (const auto& r : pushes) keys.push_back(r.payload);  // the new child's key, raw bytes
  for (const auto& k : keys) ASSERT_EQ(k.size(), 20u) << "push id";
  auto steady0 = std::chrono::steady_clock::now();

  // 50 go offline: handled at once.
  const int64_t offline_sent = WallMs();
  Fleet::ExpectAll(fleet.Round(kSilent, kSilent + kOffline, [](SdkClient& d, size_t) { return d.Send(kGet, ".off"); }),
                   "2.05", "goOffline");
  const int64_t offline_answered = WallMs();
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
  EXPECT_LE(detected_after, 3s) << "session timeout (2 s) + 1 s";

  // Final state, read by live devices: 150 cleaned up with lastOnline, 850 untouched.
  auto final_state = fleet.Round(kSilent + kOffline, kDevices, [&](SdkClient& d, size_t i) {
    return d.Send(kGet, user(i - kSilent - kOffline));
  });
  auto rest = fleet.Round(kSilent + kOffline, kDevices, [&](SdkClient& d, size_t i) { return d.Send(kGet, user(i)); });
  std::vector<int64_t> latency;  // lastOnline - last datagram, per silent device
  size_t cleaned = 0, bad = 0;
  for (size_t k = 0; k < kSilent + kOffline; ++k) {
    const std::string& p = final_state[k].payload;  // {"lastOnline": <ms>} and no connections
    std::optional<int64_t> at = CborUintAfter(p, "lastOnline");
    const bool ok = p.size() > 2 && static_cast<uint8_t>(p[0]) == 0xa1 && at && p.find("connections") == std::string::npos;
    cleaned += ok;
    if (!at) continue;
    if (k < kSilent) {
      EXPECT_GE(*at, last_sent[k] + 2000 - 20) << "device " << k << ": not before the timeout";
      EXPECT_LE(*at, last_sent[k] + 3000) << "device " << k << ": within timeout + 1 s of its last datagram";
      EXPECT_LE(*at, silent_answered + 3000);
      latency.push_back(*at - last_sent[k]);
    } else {
      EXPECT_GE(*at, offline_sent - 5) << "device " << k;
      EXPECT_LE(*at, offline_answered + 5) << "device " << k << ": at goOffline";
    }
  }
  EXPECT_EQ(cleaned, kSilent + kOffline);
  ASSERT_EQ(latency.size(), kSilent);
  std::sort(latency.begin(), latency.end());
  std::printf("presence: silent devices declared gone after their last datagram: min %lld ms, median %lld ms, "
              "max %lld ms (timeout 2000 ms)\n",
              static_cast<long long>(latency.front()), static_cast<long long>(latency[kSilent / 2]),
              static_cast<long long>(latency.back()));
  for (size_t k = kSilent + kOffline; k < kDevices; ++k) {
    const std::string& own = rest[k - kSilent - kOffline].payload;  // {"connections": {<key>: true}}
    // (final_state[k] is the same user read by another device.)
    bad += own.find(keys[k]) == std::string::npos || own.find("lastOnline") != std::string::npos;
    if (k < final_state.size()) bad += final_state[k].payload != own;
  }
  EXPECT_EQ(bad, 0u) << "live devices untouched";
  gw.Signal(SIGTERM);
  EXPECT_EQ(gw.WaitExit(20s), 0);
}

}  // namespace
}  // namespace tether::testing
