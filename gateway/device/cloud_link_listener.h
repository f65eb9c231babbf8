// CloudLinkListener: what the device side hears from the cloud link, and nothing else. CloudBridge
// calls it; DeviceApi implements it; the daemon hands DeviceApi to the CloudLink that owns the
// bridge (the two do not know each other). Loop thread only; the listener must outlive the link
// (the daemon destroys the link first). Calls cannot fail.
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
