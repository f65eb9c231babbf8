// Support for the attack suites: the real tetherd on loopback with free ports (AttackGateway), a
// DTLS-PSK client on a UDP socket bound to a chosen 127.0.0.0/8 address (UdpDtlsClient, so one
// test acts as many hosts), and a UDP socket that only counts what reaches an address (Sink, a
// victim or a dead device). Everything blocks with bounded waits; loopback only.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "tests/integration/tetherd_process.h"
#include "tests/integration/udp_dtls_client.h"

namespace tether::testing {

class AttackGateway {
 public:
  // Starts tetherd with an open default app `myapp`, a catch-all route, `device_keys` added under
  // `device:` and `extra` appended at the top level. With `dtls` it also listens for DTLS with the
  // PSK identities `keys` (identity: key lines); `app_auth` is the app's `auth` value (flow YAML,
  // empty: open). Fails the test if it does not come up.
  void Start(const std::string& device_keys = "", const std::string& extra = "", bool dtls = false,
             const std::string& keys = "", const std::string& app_auth = "");

  uint16_t port() const { return port_; }
  uint16_t dtls_port() const { return dtls_port_; }
  TetherdProcess& process() { return gw_; }
  // One series of /metrics, e.g. Metric("tether_coap_peers{state=\"verified\"}"); -1 if absent.
  double Metric(const std::string& series) const;

 private:
  TetherdProcess gw_;
  uint16_t port_ = 0, dtls_port_ = 0, admin_port_ = 0;
};

// A UDP socket bound to ip:port that receives and counts, never answers.
class Sink {
 public:
  Sink(const std::string& ip, uint16_t port = 0);
  ~Sink();
  uint16_t port() const { return port_; }
  // Reads every datagram waiting and then for `wait`; returns them.
  std::vector<std::string> Drain(std::chrono::milliseconds wait = std::chrono::milliseconds(0));

 private:
  int fd_ = -1;
  uint16_t port_ = 0;
};

// Attack threads that run until the test ends, however it ends (a failed ASSERT returns early):
// the destructor sets `stop` and joins them.
class Background {
 public:
  ~Background() {
    stop = true;
    for (std::thread& t : threads_) t.join();
  }
  template <typename Fn>
  void Run(Fn&& fn) { threads_.emplace_back(std::forward<Fn>(fn)); }
  std::atomic<bool> stop{false};

 private:
  std::vector<std::thread> threads_;
};

// A CoAP CON request as the SDK sends it: 4-byte token, Uri-Path segments, Uri-Query items.
std::string CoapRequest(uint8_t method, uint16_t mid, const std::string& token, const std::vector<std::string>& path,
                        const std::vector<std::string>& queries = {}, const std::string& payload = "");

}  // namespace tether::testing
