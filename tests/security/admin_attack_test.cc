// Attacks on the admin API of the real tetherd (issue 16 item 8): an unprivileged local user, a
// DNS-rebinding web page, and clients that connect and then send nothing or dribble.
#include <gtest/gtest.h>
#include <arpa/inet.h>
#include <grp.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <vector>

#include "tests/integration/sdk_client.h"
#include "tests/integration/tetherd_process.h"

namespace tether::testing {
namespace {

using namespace std::chrono_literals;

struct ChildRun {
  int status;
  std::string out;
};

// Runs `args` as user and group nobody (65534, no supplementary groups) in a child, with only
// `env`; returns its exit status and combined output.
ChildRun RunAsNobody(const std::vector<std::string>& args, const std::vector<std::string>& env) {
  int out[2];
  if (pipe(out) != 0) return {-1, "pipe failed"};
  pid_t pid = fork();
  if (pid == 0) {
    dup2(out[1], 1);
    dup2(out[1], 2);
    close(out[0]);
    if (setgroups(0, nullptr) != 0 || setgid(65534) != 0 || setuid(65534) != 0) _exit(126);
    std::vector<char*> argv, envp;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    for (const auto& e : env) envp.push_back(const_cast<char*>(e.c_str()));
    argv.push_back(nullptr);
    envp.push_back(nullptr);
    execve(argv[0], argv.data(), envp.data());
    _exit(127);
  }
  close(out[1]);
  std::string text;
  char buf[4096];
  for (ssize_t n; (n = read(out[0], buf, sizeof buf)) > 0;) text.append(buf, static_cast<size_t>(n));
  close(out[0]);
  int st = 0;
  waitpid(pid, &st, 0);
  return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, text};
}

class AdminAttack : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(geteuid(), 0u) << "the attack suite runs as root (it acts as user nobody)";
    coap_port_ = static_cast<uint16_t>(FreePort());
    admin_port_ = FreePort(false);
    gw_.WriteConfig("device:\n  listen: \"127.0.0.1:" + std::to_string(coap_port_) + "\"\nadmin:\n  listen: \"127.0.0.1:" +
                    std::to_string(admin_port_) + "\"\nstore:\n  path: ${STORE}\napps:\n  - id: myapp\n");
    gw_.Start();
    ASSERT_TRUE(gw_.WaitForLog("admin endpoint on", 10s)) << gw_.Log();
    device_ = std::make_unique<SdkClient>(coap_port_);
    ASSERT_TRUE(device_->Open("victim-7"));
  }
  std::string Url(const std::string& path) const { return "http://127.0.0.1:" + std::to_string(admin_port_) + path; }
  // curl as root with the admin token (what the daemon's operator may do); prints body + status.
  ShellResult Curl(const std::string& args) {
    return Shell("curl -s --max-time 5 -w '\\n%{http_code}' -H \"Authorization: Bearer $(cat '" +
                 gw_.admin_token_file() + "')\" " + args);
  }

  TetherdProcess gw_;
  uint16_t coap_port_ = 0;
  int admin_port_ = 0;
  std::unique_ptr<SdkClient> device_;
};

// As user nobody, with the token file's path in hand: every admin action is refused (401) and
// nothing happens; root (sudo) still gets through.
TEST_F(AdminAttack, AnUnprivilegedUserCanNeitherActNorList) {
  const std::string ctl = TetherdProcess::BinaryPath("tetherctl");
  const std::vector<std::string> env = {"TETHER_ADMIN_TOKEN_FILE=" + gw_.admin_token_file(), "PATH=/usr/bin:/bin"};
  const std::string admin = "127.0.0.1:" + std::to_string(admin_port_);
  for (const std::vector<std::string>& action : std::vector<std::vector<std::string>>{
           {"kick", "victim-7"}, {"reload"}, {"deadletters", "drop", "--all"}, {"deadletters", "retry", "--all"},
           {"sessions"}, {"status"}, {"queue"}, {"deadletters", "list"}, {"store", "check"}}) {
    std::vector<std::string> args = {ctl, "--admin", admin};
    args.insert(args.end(), action.begin(), action.end());
    ChildRun r = RunAsNobody(args, env);
    EXPECT_EQ(r.status, 1) << action[0] << ": " << r.out;
    EXPECT_NE(r.out.find("HTTP 401"), std::string::npos) << action[0] << ": " << r.out;
    EXPECT_NE(r.out.find("Permission denied"), std::string::npos) << "says why it has no token: " << r.out;
    EXPECT_EQ(r.out.find("victim-7"), std::string::npos) << action[0] << " leaked the session list: " << r.out;
  }
  // Guessing is no better than not knowing.
  ChildRun guess = RunAsNobody({"/usr/bin/curl", "-s", "-X", "POST", "-H", "Content-Type: application/json", "-H",
                           "Authorization: Bearer AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "-w", "%{http_code}",
                           Url("/api/v1/sessions/victim-7/kick")},
                          env);
  EXPECT_NE(guess.out.find("401"), std::string::npos) << guess.out;

  EXPECT_EQ(device_->Ping().CodeString(), "2.05") << "the session was kicked";
  EXPECT_EQ(gw_.Log().find("reload"), std::string::npos) << "a reload ran";
  // The operator (root) is not locked out.
  ShellResult sessions = Shell(ctl + " --admin " + admin + " sessions");
  EXPECT_EQ(sessions.status, 0) << sessions.out;
  EXPECT_NE(sessions.out.find("victim-7"), std::string::npos) << sessions.out;
  // Probes and Prometheus need no token.
  ChildRun metrics = RunAsNobody({"/usr/bin/curl", "-sf", Url("/metrics")}, env);
  EXPECT_EQ(metrics.status, 0);
  EXPECT_NE(metrics.out.find("tether_admin_refused_total{reason=\"unauthorized\"} 10"), std::string::npos)
      << metrics.out;
}

// DNS rebinding: attacker.example resolves to 127.0.0.1 for the victim's browser, so its requests
// reach the admin port with Host: attacker.example. Even carrying a valid token they get nothing.
TEST_F(AdminAttack, ARebindingHostGetsNothing) {
  const std::string host = "-H 'Host: attacker.example:" + std::to_string(admin_port_) + "' ";
  for (const char* path : {"/api/v1/sessions", "/api/v1/status", "/metrics", "/healthz"}) {
    ShellResult r = Curl(host + Url(path));
    EXPECT_EQ(r.out.substr(r.out.rfind('\n') + 1), "421") << path << ": " << r.out;
    EXPECT_EQ(r.out.find("victim-7"), std::string::npos) << path << ": " << r.out;
  }
  ShellResult kick = Curl(host + "-X POST -H 'Content-Type: application/json' " + Url("/api/v1/sessions/victim-7/kick"));
  EXPECT_EQ(kick.out.substr(kick.out.rfind('\n') + 1), "421") << kick.out;
  EXPECT_EQ(device_->Ping().CodeString(), "2.05");
  // The same requests naming the server itself are served.
  ShellResult ok = Curl(Url("/api/v1/sessions"));
  EXPECT_EQ(ok.out.substr(ok.out.rfind('\n') + 1), "200") << ok.out;
  EXPECT_NE(ok.out.find("victim-7"), std::string::npos);
}

int Connect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// Idle and half-open connections (connect and say nothing; or start a request and stop) far beyond
// the workers and the listen backlog: /healthz, /metrics and tetherctl keep answering at once.
TEST_F(AdminAttack, SlowAndHalfOpenClientsDoNotStarveHealthOrMetrics) {
  std::vector<int> held;
  for (int i = 0; i < 150; ++i) {
    int fd = Connect(admin_port_);
    if (fd < 0) break;
    if (i % 3 == 1) {  // a head that never ends
      std::string part = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
      (void)send(fd, part.data(), part.size(), MSG_NOSIGNAL);
    } else if (i % 3 == 2) {  // a body that never comes
      std::string part = "POST /api/v1/reload HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n";
      (void)send(fd, part.data(), part.size(), MSG_NOSIGNAL);
    }
    held.push_back(fd);
  }
  ASSERT_GE(held.size(), 100u);
  // Over 3 s (past the 2 s request timeout, while the attacker keeps reconnecting), every probe
  // answers within a second.
  const auto end = std::chrono::steady_clock::now() + 3s;
  int probes = 0;
  while (std::chrono::steady_clock::now() < end) {
    for (const char* path : {"/healthz", "/metrics"}) {
      auto t0 = std::chrono::steady_clock::now();
      ShellResult r = Shell("curl -sf --max-time 3 -o /dev/null -w '%{http_code}' " + Url(path));
      auto took = std::chrono::steady_clock::now() - t0;
      EXPECT_EQ(r.out, "200") << path;
      EXPECT_LT(took, 1s) << path << " took "
                          << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms";
      ++probes;
    }
    for (int i = 0; i < 20; ++i) {  // the attacker replaces connections the server closed
      int fd = Connect(admin_port_);
      if (fd >= 0) held.push_back(fd);
    }
  }
  EXPECT_GE(probes, 4);
  ShellResult status = Shell(TetherdProcess::BinaryPath("tetherctl") + " --admin 127.0.0.1:" +
                             std::to_string(admin_port_) + " --json status");
  EXPECT_EQ(status.status, 0) << status.out;
  for (int fd : held) close(fd);
  // They were closed (after 2 s, or for newer ones past 256 waiting) and counted.
  ShellResult m = Shell("curl -sf --max-time 3 " + Url("/metrics"));
  auto series = [&](const std::string& name) {
    size_t at = m.out.find("\n" + name + " ");
    return at == std::string::npos ? -1.0 : std::stod(m.out.substr(at + name.size() + 2));
  };
  const double timed_out = series("tether_admin_dropped_total{reason=\"timeout\"}");
  const double evicted = series("tether_admin_dropped_total{reason=\"evicted\"}");
  EXPECT_GE(timed_out + evicted, 100) << m.out;
}

}  // namespace
}  // namespace tether::testing
