// DaemonAdmin: the running daemon seen through the admin API (metrics, status, tetherctl actions).
// Every call runs on the loop thread (AdminServer hops there), so it reads module state directly.
#pragma once

#include <chrono>
#include <functional>
#include <string>

#include "device_proto/endpoint.h"
#include "gateway/admin_server.h"
#include "gateway/config.h"
#include "gateway/device_api.h"
#include "store/store.h"

namespace tether {

class DaemonAdmin : public AdminBackend {
 public:
  struct Parts {
    const Config* config = nullptr;
    store::Store* store = nullptr;
    DeviceApi* devices = nullptr;
    coap::Endpoint* endpoint = nullptr;
    std::function<AdminResult()> reload;             // re-reads the config file
  };
  explicit DaemonAdmin(Parts parts) : p_(std::move(parts)), started_(std::chrono::steady_clock::now()) {}

  std::string MetricsText() override;
  bool Ready() override;
  nlohmann::json Status() override;
  nlohmann::json Sessions(const std::optional<std::string>& app) override;
  AdminResult Kick(const std::string& device) override;
  nlohmann::json Queue() override;
  nlohmann::json DeadLetters() override;
  AdminResult RetryDeadLetter(const std::optional<std::string>& id) override;
  AdminResult DropDeadLetter(const std::optional<std::string>& id) override;
  AdminResult Reload() override { return p_.reload(); }
  nlohmann::json StoreCheck() override;

 private:
  AdminResult ChangeDeadLetters(const std::optional<std::string>& id, bool retry);
  Parts p_;
  std::chrono::steady_clock::time_point started_;
};

}  // namespace tether
