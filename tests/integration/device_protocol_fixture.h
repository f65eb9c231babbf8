// DeviceProtocol: the real tetherd on loopback with the apps and routes the device-protocol tests
// speak to (device_protocol_*_test.cc, one binary integration_device_protocol_test).
// - StartGateway(extra) writes the config (1 s heartbeat, 2 s session timeout, apps myapp (default),
//   app2..app4, locked (tokens), hm (hmac)) plus `extra`, starts the daemon and waits for CoAP.
// - Reload() edits that config, sends SIGHUP and waits until a probe sees the change.
// Test thread only; the TetherdProcess member kills the daemon and reports its log on failure.
#pragma once

#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>

#include "tests/integration/sdk_client.h"
#include "tests/integration/tetherd_process.h"
#include "tests/support/eventually.h"

namespace tether::testing {

using namespace std::chrono_literals;

inline constexpr uint8_t kGet = 1, kPost = 2, kPut = 3, kDelete = 4, kPatch = 6;

class DeviceProtocol : public ::testing::Test {
 protected:
  void StartGateway(const std::string& extra = "") {
    port_ = static_cast<uint16_t>(FreePort());
    admin_port_ = static_cast<uint16_t>(FreePort(false));
    {
      std::FILE* f = std::fopen((gw_.dir() + "/hmac.secret").c_str(), "w");
      std::fputs(kHmacSecret, f);
      std::fclose(f);
    }
    config_ = "device:\n  listen: \"127.0.0.1:" + std::to_string(port_) + "\"\n" +
              "  heartbeat_target: 1s\n  session_timeout: 2s\n  max_payload: 2KiB\n"
              "admin:\n  listen: \"127.0.0.1:" + std::to_string(admin_port_) + "\"\n" +
              "store:\n  path: ${STORE}\nlog:\n  level: debug\n"
              "apps:\n  - id: myapp\n    default: true\n  - id: app2\n  - id: app3\n  - id: app4\n"
              "  - id: locked\n    auth: { mode: tokens, tokens: [ { device: dev1, token: SECRETTOKEN } ] }\n"
              "  - id: hm\n    auth: { mode: hmac, secret_file: \"" + gw_.dir() + "/hmac.secret\" }\n"
              "routes:\n"
              "  - { name: myapp, app: myapp, match: \"**\" }\n"
              "  - { name: app2, app: app2, match: \"**\", cloud: \"a2/**\" }\n"
              "  - { name: app3, app: app3, match: \"**\", cloud: \"a3/**\" }\n"
              "  - { name: app4, app: app4, match: \"**\", cloud: \"a4/**\" }\n"
              "  - { name: own, app: locked, match: \"devices/{device}/**\", read: own, write: own }\n"
              "  - { name: ro, app: locked, match: \"config/**\", write: none }\n"
              "  - { name: hmown, app: hm, match: \"devices/{device}/**\", cloud: \"hm/{device}/**\", read: own, write: own }\n" +
              extra;
    gw_.WriteConfig(config_);
    gw_.Start();
    ASSERT_TRUE(gw_.WaitForLog("listening for CoAP", 10s)) << gw_.Log();
  }
  void Restart() {
    gw_.Start();
    ASSERT_TRUE(gw_.WaitForLog("listening for CoAP", 10s)) << gw_.Log();
  }

  // One series of /metrics, e.g. Metric("tether_device_events_total{event=\"too_large\"}"); -1 if absent.
  double Metric(const std::string& series) {
    ShellResult m = Shell("curl -sf http://127.0.0.1:" + std::to_string(admin_port_) + "/metrics");
    size_t at = 0;
    while ((at = m.out.find(series + " ", at)) != std::string::npos) {
      if (at == 0 || m.out[at - 1] == '\n') return std::stod(m.out.substr(at + series.size() + 1));
      at += series.size();
    }
    return -1;
  }
  // Applies a config edit by SIGHUP and waits until `probe` says the new routes are in force.
  void Reload(const std::string& from, const std::string& to, const std::function<bool()>& probe) {
    std::string next = config_;
    next.replace(next.find(from), from.size(), to);
    gw_.WriteConfig(next);
    gw_.Signal(SIGHUP);
    ASSERT_TRUE(Eventually(probe, 3s, 50ms)) << "reload not applied";
  }

  static constexpr const char* kHmacSecret = "0123456789abcdef0123\n";
  TetherdProcess gw_;
  uint16_t port_ = 0, admin_port_ = 0;
  std::string config_;
};

inline int64_t WallMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

inline const std::string kNull = "\xf6";

}  // namespace tether::testing
