// The daemon as an installer meets it: config checks, systemd notify, signals.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <vector>

#include "tests/integration/tetherd_process.h"

namespace tether::testing {
namespace {

using namespace std::chrono_literals;

std::string MinimalConfig() {
  return "device:\n  listen: \"127.0.0.1:" + std::to_string(FreePort()) + "\"\n" +
         "admin:\n  listen: \"127.0.0.1:" + std::to_string(FreePort(false)) + "\"\n" +
         "store:\n  path: ${STORE}\nlog:\n  level: debug\n";
}

TEST(DaemonLifecycle, CheckConfigNamesLineAndKey) {
  TetherdProcess d;
  d.WriteConfig("device:\n  listen: \"0.0.0.0:5683\"\n  heartbeat_taget: 20s\n");
  ShellResult r = Shell(TetherdProcess::BinaryPath("tetherd") + " --check-config " + d.config_path());
  EXPECT_EQ(r.status, 2);
  EXPECT_EQ(r.out, d.config_path() + ":3:3: device.heartbeat_taget: unknown key\n");

  d.WriteConfig(MinimalConfig());
  r = Shell(TetherdProcess::BinaryPath("tetherd") + " --check-config " + d.config_path());
  EXPECT_EQ(r.status, 0) << r.out;

  r = Shell(TetherdProcess::BinaryPath("tetherctl") + " check-config " + d.config_path());
  EXPECT_EQ(r.status, 0) << r.out;
}

// --check-config also reads the files the configuration names, and names the key that points to a
// bad one (file:line:col) without printing its content.
TEST(DaemonLifecycle, CheckConfigReadsTheFilesItNames) {
  TetherdProcess d;
  const std::string secret = d.dir() + "/hmac.secret", sa = d.dir() + "/sa.json";
  auto check = [&](const std::string& yaml) {
    d.WriteConfig(yaml);
    ShellResult a = Shell(TetherdProcess::BinaryPath("tetherd") + " --check-config " + d.config_path());
    ShellResult b = Shell(TetherdProcess::BinaryPath("tetherctl") + " check-config " + d.config_path());
    EXPECT_EQ(a.status, b.status) << a.out << b.out;
    return a;
  };
  const std::string hmac_app = "apps:\n  - id: a\n    auth:\n      mode: hmac\n      secret_file: " + secret + "\n";
  ShellResult r = check(hmac_app);
  EXPECT_EQ(r.status, 2);
  EXPECT_EQ(r.out.rfind(d.config_path() + ":5:20: apps[0].auth.secret_file: cannot read " + secret, 0), 0u) << r.out;
  std::ofstream(secret) << "short-secret\n";
  r = check(hmac_app);
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.out.find(":5:20: apps[0].auth.secret_file: " + secret + ": the secret must be at least 16 bytes"),
            std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("short-secret"), std::string::npos) << "file content in an error";
  std::ofstream(secret) << "a-long-enough-secret-value\n";
  EXPECT_EQ(check(hmac_app).status, 0);

  const std::string upstream = "upstream:\n  url: http://127.0.0.1:9\n  service_account_file: " + sa + "\n";
  std::ofstream(sa) << "{\"client_email\": \"x@y\"}";
  r = check(upstream);
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.out.find(":3:25: upstream.service_account_file: " + sa + " lacks client_email or private_key"),
            std::string::npos) << r.out;
  std::ofstream(sa) << "{\"client_email\": \"x@y\", \"private_key\": \"not a pem\"}";
  r = check(upstream);
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.out.find("private_key is not a usable RSA key"), std::string::npos) << r.out;
  r = check("upstream:\n  url: http://127.0.0.1:9\n  secret_file: " + d.dir() + "/none\n");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.out.find(":3:16: upstream.secret_file: cannot read " + d.dir() + "/none"), std::string::npos) << r.out;
  r = check("upstream:\n  url: \"http://127.0.0.1:9/?auth=abc\"\n");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.out.find(":2:8: upstream.url: must be a plain database URL"), std::string::npos) << r.out;

  // tetherd refuses to start on the same errors, with the same message.
  d.WriteConfig(MinimalConfig() + hmac_app.substr(0, hmac_app.find(secret)) + d.dir() + "/none\n");
  d.Start();
  EXPECT_EQ(d.WaitExit(10s), 2);
  EXPECT_NE(d.Log().find("apps[0].auth.secret_file: cannot read"), std::string::npos) << d.Log();
}

TEST(DaemonLifecycle, VersionAndHelp) {
  ShellResult r = Shell(TetherdProcess::BinaryPath("tetherd") + " --version");
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(r.out.rfind("tetherd ", 0), 0u);
  r = Shell(TetherdProcess::BinaryPath("tetherd") + " --help");
  EXPECT_EQ(r.status, 0);
  EXPECT_NE(r.out.find("--check-config"), std::string::npos);
  r = Shell(TetherdProcess::BinaryPath("tetherctl") + " --help");
  EXPECT_EQ(r.status, 0);
  r = Shell(TetherdProcess::BinaryPath("tetherctl") + " version");
  EXPECT_EQ(r.out.rfind("tetherctl ", 0), 0u);
}

TEST(DaemonLifecycle, InvalidConfigRefusesToStart) {
  TetherdProcess d;
  d.WriteConfig("store:\n  durability: sometimes\n");
  d.Start();
  EXPECT_EQ(d.WaitExit(10s), 2);
  EXPECT_NE(d.Log().find("store.durability: 'sometimes' is not one of"), std::string::npos) << d.Log();
}

// A unix datagram socket standing in for systemd's notify socket.
class FakeNotifySocket {
 public:
  explicit FakeNotifySocket(const std::string& path) : path_(path) {
    fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
    EXPECT_EQ(bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    timeval tv{0, 100'000};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  ~FakeNotifySocket() { close(fd_); unlink(path_.c_str()); }

  // Collects messages until one received during this call contains text, or the timeout passes.
  bool WaitFor(const std::string& text, std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      char buf[4096];
      ssize_t n = recv(fd_, buf, sizeof buf, 0);  // SO_RCVTIMEO bounds each wait to 100 ms
      if (n <= 0) continue;
      std::string msg(buf, static_cast<size_t>(n));
      received_ += msg + "\n";
      if (msg.find(text) != std::string::npos) return true;
    }
    return false;
  }
  const std::string& received() const { return received_; }

 private:
  std::string path_;
  int fd_;
  std::string received_;
};

// A daemon killed and restarted gets its port back although other sockets come and go meanwhile.
// The tests' ports lie below the kernel's ephemeral range: a port inside it could be handed to
// any auto-bound client socket between the kill and the restart (CI saw "address already in use"
// in FaultKill9 that way).
TEST(DaemonLifecycle, RestartsOnItsPortWhileClientSocketsTakeEphemeralPorts) {
  int low = 0, high = 0;
  std::ifstream range("/proc/sys/net/ipv4/ip_local_port_range");
  ASSERT_TRUE(range >> low >> high);
  const int port = FreePort();
  ASSERT_TRUE(port > 0 && (port < low || port > high)) << port << " is in [" << low << ", " << high << "]";
  TetherdProcess d;
  d.WriteConfig("device:\n  listen: \"127.0.0.1:" + std::to_string(port) + "\"\nadmin:\n  listen: \"127.0.0.1:" +
                std::to_string(FreePort(false)) + "\"\nstore:\n  path: ${STORE}\n");
  d.Start();
  ASSERT_TRUE(d.WaitForLog("listening for CoAP", 10s)) << d.Log();
  d.Kill9();
  std::vector<int> clients;  // auto-bound, as every test's client sockets are
  for (int i = 0; i < 200; ++i) {
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    sockaddr_in any{};
    any.sin_family = AF_INET;
    ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&any), sizeof any), 0);
    clients.push_back(fd);
  }
  d.Start();
  EXPECT_TRUE(d.WaitForLog("listening for CoAP", 10s)) << d.Log();
  for (int fd : clients) close(fd);
}

TEST(DaemonLifecycle, NotifiesSystemdAndStopsCleanlyOnSigterm) {
  TetherdProcess d;
  d.WriteConfig(MinimalConfig());
  FakeNotifySocket notify(d.dir() + "/notify.sock");
  d.SetEnv("NOTIFY_SOCKET", d.dir() + "/notify.sock");
  d.SetEnv("WATCHDOG_USEC", "400000");  // 0.4 s: the daemon pings every 100 ms
  d.Start();
  ASSERT_TRUE(notify.WaitFor("READY=1", 10s)) << d.Log();
  EXPECT_TRUE(d.WaitForLog("local-only mode", 5s)) << d.Log();
  // Several watchdog pings (one per 100 ms) prove they come from a running loop, not a one-off.
  auto deadline = std::chrono::steady_clock::now() + 5s;
  int pings = 0;
  while (pings < 3 && std::chrono::steady_clock::now() < deadline) pings += notify.WaitFor("WATCHDOG=1", 1s);
  ASSERT_EQ(pings, 3) << notify.received();
  d.Signal(SIGTERM);
  EXPECT_TRUE(notify.WaitFor("STOPPING=1", 5s));
  EXPECT_EQ(d.WaitExit(10s), 0) << d.Log();
}

TEST(DaemonLifecycle, SighupWithBrokenFileKeepsRunningConfig) {
  TetherdProcess d;
  d.WriteConfig(MinimalConfig());
  d.Start();
  ASSERT_TRUE(d.WaitForLog("local-only mode", 10s)) << d.Log();
  d.WriteConfig("log:\n  levle: debug\n");
  d.Signal(SIGHUP);
  ASSERT_TRUE(d.WaitForLog("reload rejected, keeping the running configuration", 5s)) << d.Log();
  EXPECT_NE(d.Log().find("log.levle: unknown key"), std::string::npos);
  d.WriteConfig(MinimalConfig());
  d.Signal(SIGHUP);
  ASSERT_TRUE(d.WaitForLog("applied", 5s)) << d.Log();
  d.Signal(SIGINT);
  EXPECT_EQ(d.WaitExit(10s), 0);
}

}  // namespace
}  // namespace tether::testing
