#include "tests/integration/tetherd_process.h"
#include "tests/support/eventually.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <sstream>
#include <stdexcept>
#include <vector>

namespace tether::testing {

namespace {
std::mutex g_token_mu;
std::string g_token_file;  // of the daemon started last; guarded by g_token_mu
}  // namespace

TetherdProcess::TetherdProcess() {
  char tmpl[] = "/tmp/tetherd-test-XXXXXX";
  if (!mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
  dir_ = tmpl;
}

TetherdProcess::~TetherdProcess() {
  if (pid_ > 0) Kill9();
  // Under the ASan/UBSan build the daemon reports to its stderr, which is this log.
  std::string log = Log();
  for (const char* marker : {"ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"}) {
    if (log.find(marker) != std::string::npos) {
      ADD_FAILURE() << "tetherd sanitizer report:\n" << log.substr(log.find(marker), 4000);
      break;
    }
  }
  if (::testing::Test::HasFailure()) {
    ReportFailure(log);
    return;  // the directory stays for the post-mortem
  }
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

void TetherdProcess::ReportFailure(const std::string& log) const {
  if (const char* keep = std::getenv("TETHER_FAULT_KEEP_LOG")) std::ofstream(keep) << log;
  std::fprintf(stderr, "---- tetherd log (tail; all of it and the store in %s) ----\n%s\n", dir_.c_str(),
               log.substr(log.size() > kFailureLogTail ? log.size() - kFailureLogTail : 0).c_str());
}

std::string TetherdProcess::BinaryPath(const std::string& name) {
  const char* b = std::getenv("TETHER_BUILD_DIR");
  return std::string(b ? b : TETHER_BUILD_DIR_FALLBACK) + "/" + name;
}

void TetherdProcess::WriteConfig(const std::string& yaml) {
  std::string text = yaml;
  for (size_t p; (p = text.find("${STORE}")) != std::string::npos;) text.replace(p, 8, store_path());
  std::ofstream(config_path()) << text;
}

std::string TetherdProcess::admin_token_file() const {
  auto it = env_.find("RUNTIME_DIRECTORY");
  return (it != env_.end() ? it->second : dir_) + "/admin.token";
}

void TetherdProcess::Start() {
  std::string bin = BinaryPath("tetherd");
  std::string log = dir_ + "/tetherd.log";
  log_offset_ = Log().size();
  {
    std::lock_guard<std::mutex> lock(g_token_mu);
    g_token_file = admin_token_file();
  }
  pid_ = fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    setenv("RUNTIME_DIRECTORY", dir_.c_str(), 1);
    for (const auto& [k, v] : env_) setenv(k.c_str(), v.c_str(), 1);
    FILE* f = std::fopen(log.c_str(), "a");
    if (f) dup2(fileno(f), 2);
    execl(bin.c_str(), bin.c_str(), "--config", config_path().c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
}

std::string TetherdProcess::Log() const {
  std::ifstream in(dir_ + "/tetherd.log");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool TetherdProcess::WaitForLog(const std::string& text, std::chrono::milliseconds timeout) {
  return Eventually([&] { return Log().find(text, log_offset_) != std::string::npos; }, timeout,
                    std::chrono::milliseconds(10));
}

void TetherdProcess::Signal(int sig) {
  if (pid_ > 0) kill(pid_, sig);
}

int TetherdProcess::WaitExit(std::chrono::milliseconds timeout) {
  if (pid_ <= 0) return -1;
  int exit_status = -1;
  Eventually(
      [&] {
        int status = 0;
        if (waitpid(pid_, &status, WNOHANG) != pid_) return false;
        pid_ = -1;
        exit_status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        return true;
      },
      timeout, std::chrono::milliseconds(5));
  return exit_status;
}

void TetherdProcess::Kill9() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  int status;
  waitpid(pid_, &status, 0);
  pid_ = -1;
}

ShellResult Shell(const std::string& command) {
  std::string out;
  char buf[4096];
  std::string env;
  {
    std::lock_guard<std::mutex> lock(g_token_mu);
    if (!g_token_file.empty() && !std::getenv("TETHER_ADMIN_TOKEN_FILE")) {
      env = "export TETHER_ADMIN_TOKEN_FILE='" + g_token_file + "'; ";
    }
  }
  FILE* p = popen((env + command + " 2>&1").c_str(), "r");
  if (!p) return {-1, ""};
  while (size_t n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  int st = pclose(p);
  return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, out};
}

// Picks below the kernel's ephemeral range (net.ipv4.ip_local_port_range). A port inside it is
// free only until some other test's client socket is auto-bound to it: a daemon killed and
// restarted on "its" port then finds the port taken (seen in CI: FaultKill9, "address already
// in use" on the third restart). Below the range only an explicit bind takes a port.
// - Start point random per process, then sequential: concurrent tests rarely meet.
// - A port is returned only after a bind to it succeeded.
int FreePort(bool udp) {
  int low = 32768;  // the kernel's default, if the sysctl cannot be read
  if (std::ifstream range("/proc/sys/net/ipv4/ip_local_port_range"); range) range >> low;
  constexpr int kFirst = 10000;
  EXPECT_GT(low, kFirst + 1000) << "ephemeral range starts too low for the tests' ports";
  static std::mutex mu;
  static std::mt19937 rng(std::random_device{}());
  std::lock_guard<std::mutex> lock(mu);
  const int span = low - kFirst;
  int next = kFirst + static_cast<int>(rng() % static_cast<unsigned>(span));
  for (int tries = 0; tries < span; ++tries, next = next + 1 < low ? next + 1 : kFirst) {
    int fd = socket(AF_INET, udp ? SOCK_DGRAM : SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(next));
    bool bound = bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    close(fd);
    if (bound) return next;
  }
  ADD_FAILURE() << "no free port in [" << kFirst << ", " << low << ")";
  return 0;
}

}  // namespace tether::testing
