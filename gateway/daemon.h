// Daemon: owns the event loop and wires the modules together for one tetherd process.
//
// Threading: everything here runs on the one libuv loop thread; the store's writer thread and the
// admin HTTP threads hand results back through uv_async. Run() returns the process exit code.
#pragma once

#include <uv.h>

#include <memory>
#include <string>

#include "device_proto/endpoint.h"
#include "gateway/admin_server.h"
#include "gateway/cloud_bridge.h"
#include "gateway/config.h"
#include "gateway/daemon_admin.h"
#include "gateway/device_api.h"
#include "gateway/route_table.h"
#include "gateway/service_notifier.h"
#include "store/store.h"
#include "upstream/cloud_clock.h"
#include "upstream/credentials.h"
#include "upstream/sync_stream.h"
#include "upstream/drainer.h"
#include "upstream/http_client.h"

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
  // Re-reads the config file; on error keeps the running configuration and returns the reason.
  AdminResult Reload();
  void Stop();

  Config config_;
  std::string config_path_;
  uv_loop_t loop_;
  uv_signal_t sigterm_, sigint_, sighup_;
  std::unique_ptr<ServiceNotifier> notifier_;
  // Construction order is data-flow order; destruction runs backwards.
  std::unique_ptr<store::Store> store_;
  std::unique_ptr<DeviceApi> device_api_;
  std::unique_ptr<coap::Endpoint> endpoint_;
  std::unique_ptr<CloudBridge> cloud_;
  std::unique_ptr<upstream::HttpClient> http_;
  std::unique_ptr<upstream::Credentials> credentials_;
  std::unique_ptr<upstream::Drainer> drainer_;
  std::unique_ptr<upstream::CloudClock> clock_;
  std::vector<std::unique_ptr<upstream::SyncStream>> streams_;
  std::unique_ptr<LoopCaller> loop_caller_;
  std::unique_ptr<DaemonAdmin> admin_backend_;
  std::unique_ptr<AdminServer> admin_;
  bool stopping_ = false;
};

}  // namespace tether
