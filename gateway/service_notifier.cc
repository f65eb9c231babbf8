#include "gateway/service_notifier.h"

#include <spdlog/spdlog.h>
#include <systemd/sd-daemon.h>

namespace tether {

ServiceNotifier::ServiceNotifier(uv_loop_t* loop) : watchdog_(util::UvTimer(loop, this)) {
  uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
    // Ping at a quarter of the interval: two missed ticks still leave margin.
    uint64_t ms = std::max<uint64_t>(usec / 4000, 1);
    uv_timer_start(watchdog_, OnWatchdog, ms, ms);
    watchdog_started_ = true;
    spdlog::info("systemd watchdog enabled: pinging every {}ms", ms);
  }
  uv_unref(watchdog_.handle());
}

ServiceNotifier::~ServiceNotifier() = default;

void ServiceNotifier::OnWatchdog(uv_timer_t*) { sd_notify(0, "WATCHDOG=1"); }

void ServiceNotifier::Ready(const std::string& status) {
  sd_notifyf(0, "READY=1\nSTATUS=%s", status.c_str());
  if (watchdog_started_) sd_notify(0, "WATCHDOG=1");
}

void ServiceNotifier::Reloading() { sd_notify(0, "RELOADING=1"); }

void ServiceNotifier::Status(const std::string& status) { sd_notifyf(0, "READY=1\nSTATUS=%s", status.c_str()); }

void ServiceNotifier::Stopping() { sd_notify(0, "STOPPING=1"); }

void ServiceNotifier::Close() { watchdog_.Close(); }

}  // namespace tether
