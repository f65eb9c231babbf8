// TetherdProcess: starts the real tetherd binary for an integration test and stops it.
//
// Each instance owns a temp directory holding the config file, the store and the captured stderr.
// The destructor SIGKILLs a still-running daemon and removes the directory, except when the test
// has failed: then it prints the tail of the daemon's log to stderr, leaves the directory for the
// post-mortem and, when TETHER_FAULT_KEEP_LOG names a file, writes the whole log there. This is
// the one failure report for every test that runs the daemon (fixtures add only what is theirs,
// e.g. the fake cloud's request log).
// Like systemd's RuntimeDirectory=, Start() gives the daemon RUNTIME_DIRECTORY=dir(), so its admin
// token is admin_token_file() (unless the config names another), and Shell() hands that file to
// the tetherctl it runs (TETHER_ADMIN_TOKEN_FILE of the daemon started last in this process).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <string>

namespace tether::testing {

class TetherdProcess {
 public:
  TetherdProcess();
  ~TetherdProcess();

  const std::string& dir() const { return dir_; }
  std::string store_path() const { return dir_ + "/store"; }
  std::string config_path() const { return dir_ + "/tether.yaml"; }
  std::string admin_token_file() const;
  // Writes the config file; "${STORE}" in yaml is replaced with store_path().
  void WriteConfig(const std::string& yaml);
  void SetEnv(const std::string& key, const std::string& value) { env_[key] = value; }

  void Start();
  // Waits until stderr captured since the latest Start() contains text.
  bool WaitForLog(const std::string& text, std::chrono::milliseconds timeout);
  std::string Log() const;
  void Signal(int sig);
  // Waits for exit; returns the exit status (or 128+signal), -1 on timeout.
  int WaitExit(std::chrono::milliseconds timeout);
  void Kill9();
  pid_t pid() const { return pid_; }

  static std::string BinaryPath(const std::string& name);

 private:
  static constexpr size_t kFailureLogTail = 12000;  // bytes of log printed for a failed test
  void ReportFailure(const std::string& log) const;

  std::string dir_;
  std::map<std::string, std::string> env_;
  pid_t pid_ = -1;
  size_t log_offset_ = 0;  // log size at the latest Start()
};

// A free UDP (or TCP) port on 127.0.0.1 at the time of the call, below the kernel's ephemeral
// range, so no auto-bound client socket takes it while a daemon restarts on it.
int FreePort(bool udp = true);

// Runs a shell command; returns its exit status and combined stdout + stderr.
struct ShellResult {
  int status;
  std::string out;
};
ShellResult Shell(const std::string& command);

}  // namespace tether::testing
