// The local copy's bound end to end: data a device observes stays in the copy while the bound
// evicts around it, so a later cloud change notifies the whole value, not what an eviction left.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

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

class LocalCopy : public ::testing::Test {
 protected:
  void Start() {
    coap_port_ = static_cast<uint16_t>(FreePort());
    admin_port_ = FreePort(false);
    gw_.WriteConfig("gateway:\n  id: gw-copy\ndevice:\n  listen: \"127.0.0.1:" + std::to_string(coap_port_) +
                    "\"\nadmin:\n  listen: \"127.0.0.1:" + std::to_string(admin_port_) +
                    "\"\nstore:\n  path: ${STORE}\n  cache_bytes: 64KiB\n"
                    "upstream:\n  url: " + cloud_.url() + "\n"
                    "apps:\n  - id: myapp\n"
                    "routes:\n"
                    "  - { name: devs, match: \"devices/{device}/**\", cloud: \"fleet/{device}/**\" }\n"
                    "  - { name: bulk, match: \"bulk/**\" }\n");
    gw_.Start();
    ASSERT_TRUE(gw_.WaitForLog("admin endpoint on", 10s)) << gw_.Log();
  }
  json Ctl(const std::string& args) {
    ShellResult o = Shell(TetherdProcess::BinaryPath("tetherctl") + " --admin 127.0.0.1:" +
                          std::to_string(admin_port_) + " --json " + args);
    EXPECT_EQ(o.status, 0) << o.out;
    return json::parse(o.out, nullptr, false);
  }
  uint64_t TreeLeaves() {
    json check = Ctl("store check");
    EXPECT_EQ(check["ok"], true) << check.dump();
    for (const auto& t : check["tables"]) {
      if (t["name"] == "tree") return t["entries"].get<uint64_t>();
    }
    return 0;
  }
  bool Connected(SdkClient& dev) {
    return Eventually([&] { return dev.Request(1, ".info/connected", "", {}, {}, {}, 50u).payload == "true"; }, 10s, 50ms);
  }
  static bool WaitFor(SdkClient& dev, const std::string& want, std::chrono::milliseconds limit, std::string* last) {
    auto end = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < end) {
      auto n = dev.WaitNotification(200ms);
      if (n) *last = n->payload;
      if (n && n->payload == want) return true;
    }
    return false;
  }
  upstream::testing::FakeCloud cloud_;
  TetherdProcess gw_;
  uint16_t coap_port_ = 0;
  int admin_port_ = 0;
};

TEST_F(LocalCopy, AnObservedValueSurvivesEvictionAndChangesArriveWhole) {
  const std::string note(400, 'n');
  ASSERT_FALSE(cloud_.Request("PUT", "/fleet/dev1/cmd.json", json{{"led", "off"}, {"note", note}}.dump()).is_discarded());
  Start();
  SdkClient dev(coap_port_);
  ASSERT_TRUE(dev.Open("dev1"));
  ASSERT_TRUE(Connected(dev));
  ASSERT_EQ(dev.Request(1, "devices/dev1/cmd", "", {}, 0u, {}, 50u).CodeString(), "2.05");  // observe, JSON
  std::string last;
  const std::string before = json{{"led", "off"}, {"note", note}}.dump();
  ASSERT_TRUE(WaitFor(dev, before, 5s, &last)) << last;

  // Twice the bound of newer data, uploaded (so evictable): the observed value is the oldest.
  SdkClient writer(coap_port_);
  ASSERT_TRUE(writer.Open("w"));
  const std::string blob(1'200, 'b');
  for (int i = 0; i < 110; ++i) ASSERT_EQ(writer.Put("bulk/b" + std::to_string(i), CborText(blob)).CodeString(), "2.05");
  Eventually(
      [&] {
        const json q = Ctl("queue");
        bool drained = true;
        for (const auto& row : q["routes"]) drained &= row["entries"] == 0;
        return drained;
      },
      20s, 100ms);
  ASSERT_EQ(writer.Put("bulk/last", CborText("x")).CodeString(), "2.05");  // a commit after the acks
  std::this_thread::sleep_for(300ms);
  ASSERT_LT(TreeLeaves(), 80u) << "the bound evicted nothing: this test would prove nothing";

  // The cloud changes one field: the observer hears the whole value.
  ASSERT_FALSE(cloud_.Request("PUT", "/fleet/dev1/cmd/led.json", "\"on\"").is_discarded());
  const std::string after = json{{"led", "on"}, {"note", note}}.dump();
  EXPECT_TRUE(WaitFor(dev, after, 5s, &last)) << "heard: " << last.substr(0, 80);
}

}  // namespace
}  // namespace tether::testing
