// PresenceWatcher: reads a presence map (e.g. /pres: {device: "online" | "gone"}) from the real
// gateway every 100 ms, from its own thread and its own session, and records every change with
// its time (SteadyMs when the read was sent: the value was current at some moment after it).
// The presence suites judge false and missed offlines from it.
//
// Its session pings every 2 s (within any heartbeat target, so never steered) and is opened again
// if the gateway forgets it. Requests time out after 400 ms, so a stopped or restarting gateway
// only delays the record. Thread-safe readers; the thread stops in the destructor.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace tether::testing {

class PresenceWatcher {
 public:
  PresenceWatcher(uint16_t gateway_port, std::string app, std::string auth_token, std::string path = "pres");
  ~PresenceWatcher();
  PresenceWatcher(const PresenceWatcher&) = delete;
  PresenceWatcher& operator=(const PresenceWatcher&) = delete;

  struct Change {
    int64_t at_ms;
    std::string device, value;  // value "" = absent
  };
  std::vector<Change> Changes() const;
  std::string Value(const std::string& device) const;
  // The first time `device` was seen with `value` at or after since_ms; -1 if not (yet).
  int64_t FirstSeen(const std::string& device, const std::string& value, int64_t since_ms) const;
  uint64_t reads() const { return reads_; }

 private:
  void Run(uint16_t port, std::string app, std::string token);
  std::string path_;
  mutable std::mutex mu_;
  std::map<std::string, std::string> current_;
  std::vector<Change> changes_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> reads_{0};
  std::thread thread_;
};

}  // namespace tether::testing
