// Daemon: owns the event loop and wires the modules together for one tetherd process.
//
// Threading: everything here runs on the one libuv loop thread; the store's writer thread and the
// admin HTTP threads hand results back through uv_async. Run() returns the process exit code.
#pragma once

#include <uv.h>

#include <memory>
#include <string>

#include "gateway/config.h"
#include "gateway/service_notifier.h"

namespace tether {

class Daemon {
 public:
  Daemon(Config config, std::string config_path);
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  int Run();

 private:
  static void OnSignal(uv_signal_t* h, int signum);
  void Reload();
  void Stop();

  Config config_;
  std::string config_path_;
  uv_loop_t loop_;
  uv_signal_t sigterm_, sigint_, sighup_;
  std::unique_ptr<ServiceNotifier> notifier_;
  bool stopping_ = false;
};

}  // namespace tether
