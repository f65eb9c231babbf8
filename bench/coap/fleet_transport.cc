#include "bench/coap/fleet_transport.h"

#include <arpa/inet.h>
#include <linux/filter.h>
#include <netinet/ip.h>
#include <netinet/udp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace tether::bench {

FleetTransport::~FleetTransport() {
  if (polling_) uv_poll_stop(&rx_poll_);
  if (raw_tx_ >= 0) close(raw_tx_);
  if (raw_rx_ >= 0) close(raw_rx_);
  if (sink_ >= 0) close(sink_);
}

bool FleetTransport::Open(uv_loop_t* loop, const sockaddr_in& server, size_t devices, bool raw,
                          OnDatagram on_datagram) {
  loop_ = loop;
  server_ = server;
  devices_ = devices;
  raw_ = raw;
  on_datagram_ = std::move(on_datagram);
  if (raw && devices > kMaxRawDevices) {
    std::fprintf(stderr, "raw transport: at most %zu devices\n", kMaxRawDevices);
    return false;
  }
  return raw ? OpenRaw() : OpenSockets();
}

void FleetTransport::Send(size_t device, std::span<const uint8_t> bytes) {
  if (!raw_) {
    uv_buf_t b = uv_buf_init(const_cast<char*>(reinterpret_cast<const char*>(bytes.data())),
                             static_cast<unsigned>(bytes.size()));
    if (uv_udp_try_send(&sockets_[device], &b, 1, reinterpret_cast<const sockaddr*>(&server_)) < 0) ++send_drops_;
    return;
  }
  uint8_t pkt[sizeof(iphdr) + sizeof(udphdr) + 1500] = {};
  if (bytes.size() > 1500) return;
  auto* ip = reinterpret_cast<iphdr*>(pkt);
  auto* udp = reinterpret_cast<udphdr*>(pkt + sizeof(iphdr));
  std::memcpy(pkt + sizeof(iphdr) + sizeof(udphdr), bytes.data(), bytes.size());
  const size_t total = sizeof(iphdr) + sizeof(udphdr) + bytes.size();
  ip->version = 4;
  ip->ihl = 5;
  ip->ttl = 64;
  ip->protocol = IPPROTO_UDP;
  ip->saddr = htonl(RawSourceIp(device));
  ip->daddr = server_.sin_addr.s_addr;
  ip->tot_len = htons(static_cast<uint16_t>(total));  // the kernel fills id and checksum
  udp->source = htons(raw_port_);
  udp->dest = server_.sin_port;
  udp->len = htons(static_cast<uint16_t>(sizeof(udphdr) + bytes.size()));
  udp->check = 0;  // IPv4 allows "no checksum"
  if (sendto(raw_tx_, pkt, total, 0, reinterpret_cast<const sockaddr*>(&server_), sizeof server_) < 0) {
    ++send_drops_;
    if (errno != EAGAIN && errno != ENOBUFS) std::perror("raw sendto");
  }
}

bool FleetTransport::OpenRaw() {
  // The fleet's port P: a UDP socket bound to a free one and never read. Without it every reply
  // would also make the kernel send an ICMP port unreachable, work charged to the server on
  // loopback; once its small buffer is full, datagrams to it are dropped, which costs less.
  sink_ = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
  sockaddr_in any{};
  any.sin_family = AF_INET;
  socklen_t len = sizeof any;
  int small = 4096;
  if (sink_ < 0 || setsockopt(sink_, SOL_SOCKET, SO_RCVBUF, &small, sizeof small) != 0 ||
      bind(sink_, reinterpret_cast<const sockaddr*>(&any), sizeof any) != 0 ||
      getsockname(sink_, reinterpret_cast<sockaddr*>(&any), &len) != 0) {
    std::perror("bind the fleet's port");
    return false;
  }
  raw_port_ = ntohs(any.sin_port);
  raw_tx_ = socket(AF_INET, SOCK_RAW | SOCK_NONBLOCK, IPPROTO_RAW);  // IPPROTO_RAW implies IP_HDRINCL
  raw_rx_ = socket(AF_INET, SOCK_RAW | SOCK_NONBLOCK, IPPROTO_UDP);
  if (raw_tx_ < 0 || raw_rx_ < 0) {
    std::perror("raw socket (the raw transport needs CAP_NET_RAW)");
    return false;
  }
  int big = 64 << 20;
  setsockopt(raw_rx_, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big);
  setsockopt(raw_tx_, SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof big);
  // Only UDP from the server's port to the fleet's source port (the raw socket sees all UDP,
  // including the fleet's own requests on loopback). Assumes no IP options (IHL 5) on loopback.
  const uint16_t sport = ntohs(server_.sin_port);
  sock_filter code[] = {
      {BPF_LD | BPF_H | BPF_ABS, 0, 0, 20}, {BPF_JMP | BPF_JEQ | BPF_K, 0, 3, sport},
      {BPF_LD | BPF_H | BPF_ABS, 0, 0, 22}, {BPF_JMP | BPF_JEQ | BPF_K, 0, 1, raw_port_},
      {BPF_RET | BPF_K, 0, 0, 0xFFFFFFFF},  {BPF_RET | BPF_K, 0, 0, 0},
  };
  sock_fprog prog{static_cast<unsigned short>(sizeof code / sizeof code[0]), code};
  if (setsockopt(raw_rx_, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog) != 0) {
    std::perror("SO_ATTACH_FILTER");
    return false;
  }
  uv_poll_init(loop_, &rx_poll_, raw_rx_);
  rx_poll_.data = this;
  polling_ = true;
  uv_poll_start(&rx_poll_, UV_READABLE, [](uv_poll_t* h, int status, int) {
    if (status >= 0) static_cast<FleetTransport*>(h->data)->OnRawReadable();
  });
  return true;
}

void FleetTransport::OnRawReadable() {
  constexpr int kBatch = 64;
  static uint8_t bufs[kBatch][2048];
  mmsghdr msgs[kBatch];
  iovec iov[kBatch];
  for (;;) {
    for (int i = 0; i < kBatch; ++i) {
      iov[i] = {bufs[i], sizeof bufs[i]};
      msgs[i] = {};
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
    }
    const int got = recvmmsg(raw_rx_, msgs, kBatch, MSG_DONTWAIT, nullptr);
    if (got <= 0) return;
    for (int i = 0; i < got; ++i) {
      const size_t len = msgs[i].msg_len;
      if (len < sizeof(iphdr) + sizeof(udphdr)) continue;
      const size_t ihl = (bufs[i][0] & 0x0F) * 4u;
      if (len < ihl + sizeof(udphdr)) continue;
      // The destination address names the device (inverse of RawSourceIp).
      const uint32_t dst = ntohl(reinterpret_cast<const iphdr*>(bufs[i])->daddr);
      const uint32_t b2 = (dst >> 16) & 0xFF, b1 = (dst >> 8) & 0xFF, b0 = dst & 0xFF;
      if ((dst >> 24) != 127 || b2 < 2 || b0 == 0) continue;
      const size_t device = size_t{b2 - 2} * 62500 + size_t{b1} * 250 + (b0 - 1);
      if (device >= devices_) continue;
      on_datagram_(device, {bufs[i] + ihl + sizeof(udphdr), len - ihl - sizeof(udphdr)});
    }
  }
}

bool FleetTransport::OpenSockets() {
  sockets_.resize(devices_);
  for (size_t i = 0; i < devices_; ++i) {
    uv_udp_t& s = sockets_[i];
    uv_udp_init(loop_, &s);
    s.data = this;
    sockaddr_in any;
    uv_ip4_addr("127.0.0.1", 0, &any);
    if (uv_udp_bind(&s, reinterpret_cast<const sockaddr*>(&any), 0) != 0) {
      std::fprintf(stderr, "bind failed after %zu sockets (raise ulimit -n, or run as root for raw)\n", i);
      return false;
    }
    uv_udp_recv_start(
        &s,
        [](uv_handle_t* h, size_t, uv_buf_t* b) {
          auto* t = static_cast<FleetTransport*>(h->data);
          *b = uv_buf_init(t->rbuf_, sizeof t->rbuf_);
        },
        [](uv_udp_t* h, ssize_t n, const uv_buf_t* b, const sockaddr*, unsigned) {
          if (n <= 0) return;
          auto* t = static_cast<FleetTransport*>(h->data);
          const size_t device = static_cast<size_t>(h - t->sockets_.data());
          t->on_datagram_(device, {reinterpret_cast<const uint8_t*>(b->base), static_cast<size_t>(n)});
        });
  }
  return true;
}

}  // namespace tether::bench
