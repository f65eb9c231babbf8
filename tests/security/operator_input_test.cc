// Careless operator input against the real tetherd (issue 16 item 10): secret files others could
// replace, and a reload of a big file while devices keep pinging.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <string>
#include <vector>

#include "gateway/device_auth.h"
#include "tests/integration/sdk_client.h"
#include "tests/integration/tetherd_process.h"

namespace tether::testing {
namespace {

using namespace std::chrono_literals;

class OperatorInput : public ::testing::Test {
 protected:
  void SetUp() override {
    coap_port_ = static_cast<uint16_t>(FreePort());
    admin_port_ = FreePort(false);
    secret_ = gw_.dir() + "/app.secret";
    WriteSecret("0123456789abcdef-first", 0640);
  }
  void WriteSecret(const std::string& text, mode_t mode) {
    std::ofstream(secret_) << text << "\n";
    ASSERT_EQ(chmod(secret_.c_str(), mode), 0);
  }
  // An hmac app whose secret is secret_, plus `extra` at the top level.
  std::string Config(const std::string& extra = "") const {
    return "device:\n  listen: \"127.0.0.1:" + std::to_string(coap_port_) + "\"\nadmin:\n  listen: \"127.0.0.1:" +
           std::to_string(admin_port_) + "\"\nstore:\n  path: ${STORE}\napps:\n  - id: myapp\n    auth:\n      mode: hmac\n" +
           "      secret_file: " + secret_ + "\n" + extra;
  }
  ShellResult Ctl(const std::string& args) {
    return Shell(TetherdProcess::BinaryPath("tetherctl") + " --admin 127.0.0.1:" + std::to_string(admin_port_) + " " +
                 args);
  }

  TetherdProcess gw_;
  uint16_t coap_port_ = 0;
  int admin_port_ = 0;
  std::string secret_;
};

// Anyone could have replaced a world-writable secret: tetherd does not start on one, and says why
// at the key that names it.
TEST_F(OperatorInput, AWorldWritableSecretIsRefusedAtStart) {
  WriteSecret("0123456789abcdef-first", 0666);
  gw_.WriteConfig(Config());
  ShellResult check = Shell(TetherdProcess::BinaryPath("tetherd") + " --check-config " + gw_.config_path());
  EXPECT_EQ(check.status, 2) << check.out;
  EXPECT_NE(check.out.find("apps[0].auth.secret_file: " + secret_ + ": writable by every user (mode 0666)"),
            std::string::npos)
      << check.out;
  EXPECT_EQ(check.out.find("0123456789abcdef"), std::string::npos) << "the secret itself was printed";
  gw_.Start();
  EXPECT_EQ(gw_.WaitExit(10s), 2) << gw_.Log();
  EXPECT_NE(gw_.Log().find("writable by every user"), std::string::npos) << gw_.Log();

  // A DTLS keys file likewise.
  WriteSecret("0123456789abcdef-first", 0640);
  std::ofstream(gw_.dir() + "/keys.yaml") << "dev-1: 0123456789abcdef\n";
  ASSERT_EQ(chmod((gw_.dir() + "/keys.yaml").c_str(), 0646), 0);
  gw_.WriteConfig(Config("dtls:\n  listen: \"127.0.0.1:" + std::to_string(FreePort()) + "\"\n  keys_file: " +
                         gw_.dir() + "/keys.yaml\n"));
  check = Shell(TetherdProcess::BinaryPath("tetherd") + " --check-config " + gw_.config_path());
  EXPECT_EQ(check.status, 2) << check.out;
  EXPECT_NE(check.out.find("keys.yaml: writable by every user (mode 0646)"), std::string::npos) << check.out;

  // World-readable is accepted with a warning, as ssh warns.
  ASSERT_EQ(chmod((gw_.dir() + "/keys.yaml").c_str(), 0644), 0);
  ASSERT_EQ(chmod(secret_.c_str(), 0644), 0);
  check = Shell(TetherdProcess::BinaryPath("tetherd") + " --check-config " + gw_.config_path());
  EXPECT_EQ(check.status, 0) << check.out;
  EXPECT_NE(check.out.find(secret_ + ": readable by every user (mode 0644)"), std::string::npos) << check.out;

  // The configuration itself chooses routes and secret files: world-writable, it is refused too.
  ASSERT_EQ(chmod(gw_.config_path().c_str(), 0666), 0);
  check = Shell(TetherdProcess::BinaryPath("tetherd") + " --check-config " + gw_.config_path());
  EXPECT_EQ(check.status, 2) << check.out;
  EXPECT_NE(check.out.find(gw_.config_path() + ": writable by every user (mode 0666)"), std::string::npos) << check.out;
}

// A reload re-checks the files: a secret that became world-writable is refused, the running
// configuration (and the secret it was started with) stays, and tetherctl reload says why.
TEST_F(OperatorInput, ASecretThatBecameWorldWritableIsRefusedOnReload) {
  gw_.WriteConfig(Config());
  gw_.Start();
  ASSERT_TRUE(gw_.WaitForLog("admin endpoint on", 10s)) << gw_.Log();
  WriteSecret("0123456789abcdef-swapped", 0666);  // anyone could have written this one
  ShellResult r = Ctl("reload");
  EXPECT_EQ(r.status, 1) << r.out;
  EXPECT_NE(r.out.find("writable by every user (mode 0666)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("keeping the running configuration"), std::string::npos) << r.out;
  gw_.Signal(SIGHUP);
  EXPECT_TRUE(gw_.WaitForLog("reload rejected", 5s));
  SdkClient old_device(coap_port_);
  EXPECT_TRUE(old_device.Open(DeviceAuthenticator::HmacToken("0123456789abcdef-first", "d1")))
      << "the secret tetherd started with is still the one in force";
  SdkClient swapped(coap_port_);
  EXPECT_FALSE(swapped.Open(DeviceAuthenticator::HmacToken("0123456789abcdef-swapped", "d2")));
  // Fixed by the operator: the next reload applies it.
  ASSERT_EQ(chmod(secret_.c_str(), 0640), 0);
  r = Ctl("reload");
  EXPECT_EQ(r.status, 0) << r.out;
  SdkClient now(coap_port_);
  EXPECT_TRUE(now.Open(DeviceAuthenticator::HmacToken("0123456789abcdef-swapped", "d3")));
}

// A SIGHUP with 100,000 gateway.variables: the file is parsed off the event loop, so a device
// pinging every 20 ms throughout is answered promptly, and /healthz stays 200.
TEST_F(OperatorInput, ReloadingABigFileKeepsServingDevices) {
  WriteSecret("0123456789abcdef-first", 0640);
  gw_.WriteConfig(Config());
  gw_.Start();
  ASSERT_TRUE(gw_.WaitForLog("admin endpoint on", 10s)) << gw_.Log();
  SdkClient dev(coap_port_);
  dev.set_timeout(1000ms);
  ASSERT_TRUE(dev.Open(DeviceAuthenticator::HmacToken("0123456789abcdef-first", "pinger")));
  std::string big = "gateway:\n  variables:\n";
  for (int i = 0; i < 100000; ++i) big += "    v" + std::to_string(i) + ": value-" + std::to_string(i) + "\n";
  std::ofstream(gw_.config_path()) << big;
  {
    std::string rest = Config();
    for (size_t p; (p = rest.find("${STORE}")) != std::string::npos;) rest.replace(p, 8, gw_.store_path());
    std::ofstream(gw_.config_path(), std::ios::app) << rest;
  }

  gw_.Signal(SIGHUP);
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::chrono::milliseconds> rtts;
  bool applied = false;
  while (!applied && std::chrono::steady_clock::now() - start < 60s) {
    auto t0 = std::chrono::steady_clock::now();
    CoapReply pong = dev.Ping();
    rtts.push_back(std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0));
    ASSERT_EQ(pong.CodeString(), "2.05") << "ping " << rtts.size() << " during the reload went unanswered";
    applied = gw_.Log().find("reload: configuration") != std::string::npos;
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_TRUE(applied) << gw_.Log();
  const auto took = std::chrono::steady_clock::now() - start;
  ASSERT_GE(rtts.size(), 3u) << "the reload was too quick to tell anything ("
                             << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms)";
  EXPECT_LT(*std::max_element(rtts.begin(), rtts.end()), 250ms)
      << rtts.size() << " pings over " << std::chrono::duration_cast<std::chrono::milliseconds>(took).count()
      << " ms of reload";
  EXPECT_EQ(Shell("curl -sf --max-time 2 http://127.0.0.1:" + std::to_string(admin_port_) + "/healthz").status, 0);
  std::fprintf(stderr, "reload of 100,000 variables: %lld ms, %zu pings, slowest %lld ms\n",
               static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(took).count()),
               rtts.size(), static_cast<long long>(std::max_element(rtts.begin(), rtts.end())->count()));
}

}  // namespace
}  // namespace tether::testing
