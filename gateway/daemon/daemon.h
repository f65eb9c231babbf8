// Daemon: owns the event loop and wires the modules together for one tetherd process.
//
// Threading: everything here runs on the one libuv loop thread; the store's writer thread and the
// admin HTTP threads hand results back through uv_async. Run() returns the process exit code.
#pragma once

#include <uv.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "device_proto/endpoint.h"
#include "gateway/admin/admin_server.h"
#include "gateway/cloud/cloud_link.h"
#include "gateway/config/config.h"
#include "gateway/daemon/daemon_admin.h"
#include "gateway/device/device_api.h"
#include "gateway/device/local_copy.h"
#include "gateway/config/psk_store.h"
#include "gateway/config/route_table.h"
#include "gateway/daemon/service_notifier.h"
#include "store/store.h"
#include "util/callback_scope.h"

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
  bool StartModules();
  bool StartUpstream();  // only with an upstream configured
  bool StartDtls();      // only with a dtls section
  // Re-reads the config file; on error keeps the running configuration and reports the reason.
  // What only a restart applies keeps its running value; the result and the log list it.
  // The file (and every file it names) is read and checked on libuv's thread pool; only applying
  // the result runs on the loop, so devices are served while a big file is parsed. A reload asked
  // for while one runs starts when it ends (the file may have changed since it was read).
  // `done` (may be empty) runs on the loop with the outcome.
  void Reload(std::function<void(AdminResult)> done);
  struct ReloadJob;
  void StartReload();
  void ApplyReload(ReloadJob& job);
  void FinishReloads(std::vector<std::function<void(AdminResult)>>& waiters, const AdminResult& result);
  UpstreamView Upstream() const;
  void Stop();

  const Config started_;  // as loaded at start: the sections only a restart changes
  Config config_;         // running: the latest valid file, restart-only sections from started_
  std::string config_path_;
  uv_loop_t loop_;
  uv_signal_t sigterm_, sigint_, sighup_;
  std::unique_ptr<ServiceNotifier> notifier_;
  // Construction order is data-flow order; destruction runs backwards.
  std::unique_ptr<store::Store> store_;
  std::unique_ptr<LocalCopy> local_copy_;  // the one door for cloud data into the tree
  std::unique_ptr<DeviceApi> device_api_;
  std::unique_ptr<coap::Endpoint> endpoint_;
  std::shared_ptr<const PskStore> psk_;  // DTLS keys; replaced by a reload
  std::unique_ptr<CloudLink> cloud_;  // only with an upstream configured
  std::vector<util::Subscription> cloud_hooks_;  // DeviceApi's hooks, registered for cloud_
  std::unique_ptr<LoopCaller> loop_caller_;
  std::unique_ptr<DaemonAdmin> admin_backend_;
  std::unique_ptr<AdminServer> admin_;
  std::string admin_token_;  // written to config_.admin_token_file at start, removed at stop
  bool stopping_ = false;
  bool reload_running_ = false;
  std::vector<std::function<void(AdminResult)>> reload_waiters_;  // of the reload running
  std::vector<std::function<void(AdminResult)>> reload_queued_;   // of the next one
  bool reload_again_ = false;                                     // one is queued
};

}  // namespace tether
