#include "tests/integration/presence_watch.h"

#include <nlohmann/json.hpp>

#include <chrono>

#include "tests/integration/sdk_client.h"
#include "tests/integration/sdk_device.h"

namespace tether::testing {

PresenceWatcher::PresenceWatcher(uint16_t gateway_port, std::string app, std::string auth_token, std::string path)
    : path_(std::move(path)),
      thread_([this, gateway_port, app = std::move(app), auth_token = std::move(auth_token)] {
        Run(gateway_port, app, auth_token);
      }) {}

PresenceWatcher::~PresenceWatcher() {
  stop_ = true;
  thread_.join();
}

void PresenceWatcher::Run(uint16_t port, std::string app, std::string token) {
  using namespace std::chrono_literals;
  SdkClient c(port, app);
  c.set_timeout(400ms);
  bool open = false;
  int64_t last_ping = 0;
  while (!stop_) {
    const int64_t now = SteadyMs();
    if (!open) {
      open = c.Open(token);
      if (!open) {
        std::this_thread::sleep_for(100ms);
        continue;
      }
    }
    if (now - last_ping >= 2000) {
      CoapReply p = c.Ping();
      if (p.CodeString() == "4.01") open = false;
      last_ping = now;
    }
    const int64_t asked = SteadyMs();  // the value read was current at some time after this
    CoapReply r = c.Request(1, path_, "", {}, {}, {}, 50u);
    if (r.CodeString() == "4.01") open = false;
    if (r.CodeString() == "2.05") {
      ++reads_;
      nlohmann::json v = nlohmann::json::parse(r.payload, nullptr, false);
      std::map<std::string, std::string> seen;
      if (v.is_object()) {
        for (auto& [k, x] : v.items()) seen[k] = x.is_string() ? x.get<std::string>() : x.dump();
      }
      const int64_t at = asked;
      std::lock_guard<std::mutex> lock(mu_);
      for (const auto& [k, x] : seen) {
        auto old = current_.find(k);
        if (old == current_.end() || old->second != x) changes_.push_back({at, k, x});
      }
      for (const auto& [k, x] : current_) {
        if (!seen.count(k)) changes_.push_back({at, k, ""});
      }
      current_ = std::move(seen);
    }
    std::this_thread::sleep_for(100ms);
  }
}

std::vector<PresenceWatcher::Change> PresenceWatcher::Changes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return changes_;
}

std::string PresenceWatcher::Value(const std::string& device) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = current_.find(device);
  return it == current_.end() ? "" : it->second;
}

int64_t PresenceWatcher::FirstSeen(const std::string& device, const std::string& value, int64_t since_ms) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const Change& c : changes_) {
    if (c.device == device && c.value == value && c.at_ms >= since_ms) return c.at_ms;
  }
  return -1;
}

}  // namespace tether::testing
