// ServiceNotifier: tells systemd (Type=notify) about readiness, liveness and shutdown.
// WATCHDOG=1 is sent from a timer on the daemon's event loop, so a stuck loop stops the pings and
// systemd kills and restarts the service. Without NOTIFY_SOCKET every call is a no-op.
#pragma once

#include <uv.h>

#include <string>

#include "util/uv_handle.h"

namespace tether {

class ServiceNotifier {
 public:
  explicit ServiceNotifier(uv_loop_t* loop);
  ~ServiceNotifier();
  ServiceNotifier(const ServiceNotifier&) = delete;
  ServiceNotifier& operator=(const ServiceNotifier&) = delete;

  void Ready(const std::string& status);
  void Reloading();
  void Status(const std::string& status);
  void Stopping();
  // Closes the watchdog timer handle; call before the loop's final run.
  void Close();

 private:
  static void OnWatchdog(uv_timer_t* t);
  util::UvHandle<uv_timer_t> watchdog_;
  bool watchdog_started_ = false;
};

}  // namespace tether
