// CloudFixture: tetherd uploading to a tests/fakecloud process, for the cloud-link integration
// tests. Each test writes its own routes and upstream keys; the rest of the config is fixed.
#pragma once

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <optional>
#include <string>
#include <thread>

#include "tests/integration/sdk_client.h"
#include "tests/integration/tetherd_process.h"
#include "tests/support/eventually.h"
#include "tests/upstream/fakecloud_process.h"

namespace tether::testing {

inline int64_t WallMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

class CloudFixture : public ::testing::Test {
 protected:
  static constexpr uint8_t kGet = 1, kPost = 2, kPut = 3;
  static constexpr const char* kDefaultRoutes =
      "  - { name: devs, match: \"devices/{device}/**\", cloud: \"fleet/{device}/**\" }\n"
      "  - { name: cfg, match: \"config/**\", write: none, sync: [ \"config\" ] }\n";

  // routes: the YAML list under `routes:`; upstream_extra: more keys under `upstream:` (indented).
  // Writes are practically never shed here (max_write_wait at its 2 s maximum): these tests send bursts that
  // must all be acknowledged, and under ASan on a loaded machine a group commit can take longer
  // than the 100 ms default. Shedding itself is tests/integration/overload_test.cc's subject.
  void StartGateway(const std::string& routes = kDefaultRoutes, const std::string& upstream_extra = "") {
    if (port_ == 0) port_ = static_cast<uint16_t>(FreePort());
    if (admin_port_ == 0) admin_port_ = FreePort(false);
    gw_.WriteConfig("gateway:\n  id: gw-test\ndevice:\n  listen: \"127.0.0.1:" + std::to_string(port_) +
                    "\"\n  max_write_wait: 2000ms\nadmin:\n  listen: \"127.0.0.1:" + std::to_string(admin_port_) +
                    "\"\nstore:\n  path: ${STORE}\nupstream:\n  url: " + cloud_.url() + "\n" + upstream_extra +
                    "apps:\n  - id: myapp\nroutes:\n" + routes);
    gw_.Start();
    ASSERT_TRUE(gw_.WaitForLog("listening for CoAP", std::chrono::seconds(10))) << gw_.Log();
  }
  // Polls .info/connected until it reads `want` (bounded).
  static bool WaitConnected(SdkClient& dev, bool want, std::chrono::milliseconds limit = std::chrono::seconds(10)) {
    return Eventually([&] { return (dev.Request(kGet, ".info/connected", "", {}, {}, {}, 50u).payload == "true") == want; },
                      limit, std::chrono::milliseconds(50));
  }
  // The cloud's value at path, read through the control API (no credential needed).
  nlohmann::json CloudAt(const std::string& path) const {
    nlohmann::json v = cloud_.Control({{"op", "dump"}});
    size_t i = 0;
    while (i < path.size()) {
      size_t j = path.find('/', i);
      if (j == std::string::npos) j = path.size();
      std::string key = path.substr(i, j - i);
      if (!key.empty()) {
        if (!v.is_object() || !v.contains(key)) return nullptr;
        v = v[key];
      }
      i = j + 1;
    }
    return v;
  }
  // Waits until CloudAt(path) satisfies pred (bounded).
  template <typename Pred>
  bool WaitCloud(const std::string& path, Pred pred, std::chrono::milliseconds limit = std::chrono::seconds(10)) {
    return Eventually(
        [&] {
          try {
            return static_cast<bool>(pred(CloudAt(path)));
          } catch (const std::exception&) {  // the cloud is down
            return false;
          }
        },
        limit, std::chrono::milliseconds(100));
  }
  // tetherctl --json <args> against this gateway (null when it did not answer JSON).
  nlohmann::json CtlJson(const std::string& args) const {
    ShellResult r = Shell(TetherdProcess::BinaryPath("tetherctl") + " --admin 127.0.0.1:" + std::to_string(admin_port_) +
                          " --json " + args);
    return nlohmann::json::parse(r.out, nullptr, false);
  }
  // An admin endpoint's body, with the HTTP status first ("503 not ready: ...").
  std::string Admin(const std::string& path) const {
    ShellResult r = Shell("curl -s -w '\\n%{http_code}' http://127.0.0.1:" + std::to_string(admin_port_) + path);
    size_t nl = r.out.rfind('\n');
    return nl == std::string::npos ? r.out : r.out.substr(nl + 1) + " " + r.out.substr(0, nl);
  }
  // One sample of /metrics ("name{labels}"), NaN when it is NaN, nullopt when absent.
  std::optional<double> Metric(const std::string& series) const {
    std::string text = Admin("/metrics");
    size_t at = text.find("\n" + series + " ");
    if (at == std::string::npos) return std::nullopt;
    return std::stod(text.substr(at + series.size() + 2));
  }
  void CloudPut(const std::string& path, const std::string& json_text) {
    ASSERT_EQ(cloud_.Request("PUT", "/" + path + ".json", json_text).is_discarded(), false);
  }
  void TearDown() override {
    if (!HasFailure()) return;  // gw_ prints its own log
    try {
      std::fprintf(stderr, "---- cloud requests ----\n%s\n", cloud_.Control({{"op", "attempts"}}).dump(1).c_str());
    } catch (const std::exception&) {  // the cloud is down
    }
  }

  upstream::testing::FakeCloud cloud_;
  TetherdProcess gw_;
  uint16_t port_ = 0;
  int admin_port_ = 0;
};

}  // namespace tether::testing
