// PresenceDevice: an SdkDevice running the presence recipe, and the judge of what the gateway made
// of it, shared by the presence suites.
//
// The app (on_online, after boot and after every goOnline; never after the SDK re-authenticates
// by itself): PUT pres/<name> "online", then PUT pres/<name>?.dis=add "gone". A "gone" the watcher
// sees is legitimate only while the device is offline by its own doing (from GoOffline until its
// next "online" write is acknowledged) or after it was killed; any other is a false offline.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tests/integration/presence_watch.h"
#include "tests/integration/sdk_client.h"
#include "tests/integration/sdk_device.h"

namespace tether::testing {

class PresenceDevice {
 public:
  PresenceDevice(uint16_t port, std::string name, SdkDevice::Options options)
      : port_(port), name_(std::move(name)), options_(std::move(options)) {
    Spawn();
  }

  SdkDevice& sdk() { return *device_; }
  const std::string& name() const { return name_; }
  void Boot(int64_t now) {
    windows_.push_back({now, -1});  // not online until its first write is acknowledged
    device_->Boot(now);
  }
  // A new process of the same device (after Kill): a new socket, the SDK's timers from scratch.
  void Reboot(int64_t now) {
    ++options_.seed;
    Spawn();
    Boot(now);
  }
  void GoOffline(int64_t now) {
    windows_.push_back({now, -1});
    device_->GoOffline(now);
  }
  void GoOnline(int64_t now) { device_->GoOnline(now); }
  void Kill(int64_t now) {
    windows_.push_back({now, -1});
    kills_.push_back({now, device_->last_sent_ms()});
    device_->Kill(now);
  }
  bool running() const { return device_->alive(); }
  int onlines() const { return onlines_; }
  int registrations() const { return registrations_; }
  struct KillRecord {
    int64_t at_ms, last_datagram_ms;
  };
  const std::vector<KillRecord>& kills() const { return kills_; }

  // Whether "gone" at time t is what the device asked for (goOffline) or earned (killed): from
  // then until its next "online" write was acknowledged.
  bool GoneIsLegitimate(int64_t t) const {
    for (const auto& [from, to] : windows_) {
      if (t >= from && (to < 0 || t <= to)) return true;
    }
    return false;
  }
  // The "gone" changes the watcher saw that the device did not ask for, with their times.
  std::vector<int64_t> FalseOfflines(const PresenceWatcher& w) const {
    std::vector<int64_t> out;
    for (const auto& c : w.Changes()) {
      if (c.device == name_ && c.value == "gone" && !GoneIsLegitimate(c.at_ms)) out.push_back(c.at_ms);
    }
    return out;
  }

 private:
  void Spawn() {
    device_ = std::make_unique<SdkDevice>(port_, options_);
    device_->on_online = [this](SdkDevice& d, int64_t) {
      d.Request(3, "pres/" + name_, CborText("online"), {}, [this](const CoapReply& r, int64_t now) {
        if (r.code != 0x45) return;
        for (auto& w : windows_) {
          if (w.second < 0) w.second = now;  // online again: a later "gone" needs a new reason
        }
        ++onlines_;
      });
      d.Request(3, "pres/" + name_, CborText("gone"), {".dis=add"}, [this](const CoapReply& r, int64_t) {
        if (r.code == 0x45) ++registrations_;
      });
    };
  }

  uint16_t port_;
  std::string name_;
  SdkDevice::Options options_;
  std::unique_ptr<SdkDevice> device_;
  std::vector<std::pair<int64_t, int64_t>> windows_;  // [from, to]: "gone" is fine; to -1: still open
  std::vector<KillRecord> kills_;
  int onlines_ = 0, registrations_ = 0;
};

}  // namespace tether::testing
