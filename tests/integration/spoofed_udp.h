// SpoofedUdp: sends UDP datagrams with a forged IPv4 source, as an attacker on the LAN would.
//
// Used by the attack and presence suites to act as somebody else on 127.0.0.0/8: the daemon sees
// a datagram "from" any loopback address and port, and a test can bind a socket at that address to
// see what the victim receives (amplification). Needs CAP_NET_RAW (the suites run as root, as CI
// does); the constructor throws with the reason when the raw socket cannot be opened, so a test
// fails loudly instead of silently skipping. Not thread-safe; one per thread.
#pragma once

#include <netinet/in.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace tether::testing {

class SpoofedUdp {
 public:
  SpoofedUdp();
  ~SpoofedUdp();
  SpoofedUdp(const SpoofedUdp&) = delete;
  SpoofedUdp& operator=(const SpoofedUdp&) = delete;

  // Sends payload to dst_ip:dst_port as if it came from src_ip:src_port. Both addresses must be
  // loopback (127.0.0.0/8): the suites never forge packets that could leave the machine.
  // Returns false (errno set) when the kernel refused the datagram.
  bool Send(const std::string& src_ip, uint16_t src_port, const std::string& dst_ip, uint16_t dst_port,
            std::string_view payload);

  // 127.<a>.<b>.<c> for the n-th forged source (n < 2^24, skipping 127.0.0.1 and .0/.255 hosts),
  // so a flood can use many distinct sources without colliding with the daemon's own address.
  static std::string LoopbackSource(uint32_t n);

 private:
  int fd_ = -1;
};

}  // namespace tether::testing
