// LossyUdpProxy: a lossy LAN between devices and tetherd, on 127.0.0.1.
//
// Devices send to port(); each device (source address) gets its own upstream socket to the
// gateway, so the gateway still sees one address per device. Datagrams in both directions are
// dropped, duplicated, delayed and reordered (a reordered one is held back past later ones) by a
// seeded RNG, so a run is reproducible up to thread timing. Every datagram leaves within
// 3 * max_delay_ms of arriving. One thread; stopped by the destructor.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <thread>

namespace tether::testing {

struct LossProfile {
  double loss = 0.1;       // per datagram and direction
  double duplicate = 0.1;  // a second copy, delayed independently
  double reorder = 0.1;    // held back by max_delay_ms .. 3 * max_delay_ms
  int max_delay_ms = 20;   // every datagram is delayed by 0 .. max_delay_ms
};

class LossyUdpProxy {
 public:
  LossyUdpProxy(uint16_t gateway_port, LossProfile profile, uint32_t seed);
  ~LossyUdpProxy();
  LossyUdpProxy(const LossyUdpProxy&) = delete;
  LossyUdpProxy& operator=(const LossyUdpProxy&) = delete;

  uint16_t port() const { return port_; }
  struct Stats {
    uint64_t in = 0, dropped = 0, duplicated = 0, reordered = 0;
  };
  Stats stats() const;

 private:
  void Run(uint16_t gateway_port, LossProfile profile, uint32_t seed);

  int front_fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  mutable std::mutex mu_;
  Stats stats_;
  std::thread thread_;
};

}  // namespace tether::testing
