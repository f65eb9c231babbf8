// CloudLinkListener: what the device side hears from the cloud link, and nothing else. CloudBridge
// calls it; DeviceApi implements it; the daemon wires the two (they do not know each other).
// Loop thread only; the listener must outlive the bridge's use of it (the daemon destroys the
// bridge first). Calls cannot fail.
#pragma once

#include <cstdint>
#include <optional>

namespace tether {

class CloudLinkListener {
 public:
  virtual ~CloudLinkListener() = default;
  // Whether the cloud answers, and the clock estimate (cloud ms - local wall ms; nullopt: none).
  // Called again whenever either changes (also with equal values: the listener compares).
  virtual void SetCloudLink(bool connected, std::optional<int64_t> offset_ms) = 0;
  // The uploader found a compare-and-set write conflicting with the cloud.
  virtual void OnTransactionConflict() = 0;
};

}  // namespace tether
