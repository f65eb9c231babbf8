// SourceRateLimiter: a token bucket per source IP (the port does not count), in fixed memory.
//
// Used for what an unverified sender may make a server do: DTLS ClientHellos, CoAP session opens,
// answers to wrong session tokens. Owned and used by one thread (the loop's); times in ms.
//
// Invariants and their reasons:
// - Fixed memory (kBuckets slots, ~100 KB): a flood of spoofed sources cannot grow it. Two IPs
//   hashing to one slot share it; a slot taken over by another IP starts full (a colliding
//   flood source can reset a victim's bucket, never drain it below what a fresh source gets).
// - Burst = 2 s worth (at least 1): a device retransmitting a few times is never refused.
// - rate 0 = no limit.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "device_proto/address.h"

namespace tether::coap {

class SourceRateLimiter {
 public:
  static constexpr size_t kBuckets = 4096;

  explicit SourceRateLimiter(double per_second = 0) : per_second_(per_second) {}
  void set_rate(double per_second) { per_second_ = per_second; }
  double rate() const { return per_second_; }

  // Takes one token of `from`'s IP; false when its bucket is empty (the caller refuses).
  bool Take(const Address& from, uint64_t now_ms) {
    if (per_second_ <= 0) return true;
    Address ip = from;
    ip.port = 0;
    ip.secure = false;
    const uint64_t h = AddressHash{}(ip) | 1;  // 0 marks a slot never used
    Bucket& b = buckets_[h % kBuckets];
    const double burst = std::max(1.0, 2 * per_second_);
    if (b.ip_hash != h) {
      b = Bucket{h, now_ms, burst};
    } else if (now_ms > b.at_ms) {
      b.tokens = std::min(burst, b.tokens + static_cast<double>(now_ms - b.at_ms) * per_second_ / 1000.0);
      b.at_ms = now_ms;
    }
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }

 private:
  struct Bucket {
    uint64_t ip_hash = 0, at_ms = 0;
    double tokens = 0;
  };
  double per_second_;
  std::vector<Bucket> buckets_ = std::vector<Bucket>(kBuckets);
};

}  // namespace tether::coap
