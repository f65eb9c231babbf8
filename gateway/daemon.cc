#include "gateway/daemon.h"

#include <spdlog/spdlog.h>

#include "gateway/log.h"

namespace tether {

Daemon::Daemon(Config config, std::string config_path)
    : config_(std::move(config)), config_path_(std::move(config_path)) {
  uv_loop_init(&loop_);
}

Daemon::~Daemon() { uv_loop_close(&loop_); }

int Daemon::Run() {
  notifier_ = std::make_unique<ServiceNotifier>(&loop_);
  for (auto [h, sig] : {std::pair{&sigterm_, SIGTERM}, {&sigint_, SIGINT}, {&sighup_, SIGHUP}}) {
    uv_signal_init(&loop_, h);
    h->data = this;
    uv_signal_start(h, OnSignal, sig);
  }

  spdlog::info("tetherd starting: gateway id '{}', config {}", config_.gateway_id, config_path_);
  if (config_.upstream) {
    spdlog::info("upstream: {}", config_.upstream->url);
  } else {
    spdlog::info("local-only mode: no upstream configured; devices are served from the local store "
                 "and writes queue until a cloud is configured");
  }
  notifier_->Ready(config_.upstream ? "serving" : "serving (local-only)");

  uv_run(&loop_, UV_RUN_DEFAULT);
  // Let close callbacks of handles closed during Stop() run.
  uv_run(&loop_, UV_RUN_DEFAULT);
  spdlog::info("tetherd stopped");
  return 0;
}

void Daemon::OnSignal(uv_signal_t* h, int signum) {
  auto* self = static_cast<Daemon*>(h->data);
  if (signum == SIGHUP) {
    self->Reload();
  } else {
    spdlog::info("received {}, stopping", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    self->Stop();
  }
}

void Daemon::Reload() {
  notifier_->Reloading();
  try {
    Config next = Config::Load(config_path_);
    if (next.device.listen.ToString() != config_.device.listen.ToString() || next.store.path != config_.store.path ||
        next.admin_listen.ToString() != config_.admin_listen.ToString()) {
      spdlog::warn("reload: device.listen, admin.listen and store.path changes take effect after a restart");
    }
    SetLogLevel(next.log_level);
    config_ = std::move(next);
    spdlog::info("reload: configuration {} applied", config_path_);
  } catch (const ConfigError& e) {
    spdlog::error("reload rejected, keeping the running configuration: {}", e.what());
  }
  notifier_->Status(config_.upstream ? "serving" : "serving (local-only)");
}

void Daemon::Stop() {
  if (stopping_) return;
  stopping_ = true;
  notifier_->Stopping();
  for (uv_signal_t* h : {&sigterm_, &sigint_, &sighup_}) {
    uv_close(reinterpret_cast<uv_handle_t*>(h), nullptr);
  }
  notifier_->Close();
}

}  // namespace tether
