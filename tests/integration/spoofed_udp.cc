#include "tests/integration/spoofed_udp.h"

#include <arpa/inet.h>
#include <netinet/ip.h>
#include <netinet/udp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace tether::testing {

namespace {

bool IsLoopback(const in_addr& a) { return (ntohl(a.s_addr) >> 24) == 127; }

}  // namespace

SpoofedUdp::SpoofedUdp() {
  // IPPROTO_RAW implies IP_HDRINCL: we write the IPv4 header, the kernel fills in its checksum
  // and total length.
  fd_ = socket(AF_INET, SOCK_RAW, IPPROTO_RAW);
  if (fd_ < 0) {
    throw std::runtime_error(std::string("raw socket for spoofed sources: ") + std::strerror(errno) +
                             " (the attack suites need CAP_NET_RAW; run them as root)");
  }
}

SpoofedUdp::~SpoofedUdp() {
  if (fd_ >= 0) close(fd_);
}

bool SpoofedUdp::Send(const std::string& src_ip, uint16_t src_port, const std::string& dst_ip, uint16_t dst_port,
                      std::string_view payload) {
  in_addr src{}, dst{};
  if (inet_pton(AF_INET, src_ip.c_str(), &src) != 1 || inet_pton(AF_INET, dst_ip.c_str(), &dst) != 1 ||
      !IsLoopback(src) || !IsLoopback(dst)) {
    errno = EINVAL;
    return false;
  }
  // Format: IPv4 header (20 bytes, no options) | UDP header (8 bytes) | payload. The UDP checksum
  // is 0, which IPv4 defines as "not computed" (RFC 768), so the receiver accepts it.
  const size_t udp_len = sizeof(udphdr) + payload.size();
  std::string packet(sizeof(iphdr) + udp_len, '\0');
  auto* ip = reinterpret_cast<iphdr*>(packet.data());
  ip->version = 4;
  ip->ihl = 5;
  ip->ttl = 64;
  ip->protocol = IPPROTO_UDP;
  ip->saddr = src.s_addr;
  ip->daddr = dst.s_addr;
  auto* udp = reinterpret_cast<udphdr*>(packet.data() + sizeof(iphdr));
  udp->source = htons(src_port);
  udp->dest = htons(dst_port);
  udp->len = htons(static_cast<uint16_t>(udp_len));
  std::memcpy(packet.data() + sizeof(iphdr) + sizeof(udphdr), payload.data(), payload.size());

  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_addr = dst;
  return sendto(fd_, packet.data(), packet.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to) ==
         static_cast<ssize_t>(packet.size());
}

std::string SpoofedUdp::LoopbackSource(uint32_t n) {
  // Hosts 2..254 in each /24 below 127.1.0.0 upward: never 127.0.0.1 (the daemon and the tests'
  // own sockets), never a .0 or .255 host.
  const uint32_t per_net = 253;
  const uint32_t net = n / per_net + 256;  // 127.1.0.x upward
  const uint32_t host = n % per_net + 2;
  return "127." + std::to_string((net >> 8) & 0xff) + "." + std::to_string(net & 0xff) + "." +
         std::to_string(host);
}

}  // namespace tether::testing
