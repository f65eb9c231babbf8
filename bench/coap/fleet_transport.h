// FleetTransport: many simulated devices, each its own UDP source address, for the load
// generators in bench/ (coap_fleet, sdk_fleet). Loop thread only.
//
// Two ways to give every device its own address:
// - raw (needs CAP_NET_RAW): device i sends from 127.(2 + i/62500).x.y:P through one IP_HDRINCL
//   raw socket and receives through one raw socket with a BPF filter (server port -> P), so
//   100k devices cost the fleet three fds and no per-device syscalls. P is a free port bound
//   (and never read) by the fleet, so it differs per process and a server's duplicate cache of
//   an earlier run (same addresses, same message IDs) cannot answer this one, and replies cause
//   no ICMP port unreachable.
// - sockets: one UDP socket (ephemeral port on 127.0.0.1) per device, bounded by ulimit -n.
// Replies reach OnDatagram with the index of the device they were sent to. Send never blocks: a
// full socket buffer drops the datagram (counted in send_drops), as a LAN would.
#pragma once

#include <netinet/in.h>
#include <uv.h>

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

namespace tether::bench {

class FleetTransport {
 public:
  using OnDatagram = std::function<void(size_t device, std::span<const uint8_t> bytes)>;

  FleetTransport() = default;
  ~FleetTransport();
  FleetTransport(const FleetTransport&) = delete;
  FleetTransport& operator=(const FleetTransport&) = delete;

  // False (with a message on stderr) if the sockets cannot be opened.
  bool Open(uv_loop_t* loop, const sockaddr_in& server, size_t devices, bool raw, OnDatagram on_datagram);
  void Send(size_t device, std::span<const uint8_t> bytes);
  uint64_t send_drops() const { return send_drops_; }

  static constexpr size_t kMaxRawDevices = 62500 * 200;
  // Device i's source address in raw mode (host order): never .0 in the last byte.
  static uint32_t RawSourceIp(size_t i) {
    return (127u << 24) | ((2u + static_cast<uint32_t>(i / 62500)) << 16) |
           (static_cast<uint32_t>((i / 250) % 250) << 8) | static_cast<uint32_t>(i % 250 + 1);
  }

 private:
  bool OpenRaw();
  bool OpenSockets();
  void OnRawReadable();

  uv_loop_t* loop_ = nullptr;
  sockaddr_in server_{};
  size_t devices_ = 0;
  bool raw_ = false;
  OnDatagram on_datagram_;
  uint64_t send_drops_ = 0;
  // raw
  uint16_t raw_port_ = 0;
  int raw_tx_ = -1, raw_rx_ = -1, sink_ = -1;
  uv_poll_t rx_poll_{};
  bool polling_ = false;
  // sockets
  std::vector<uv_udp_t> sockets_;
  char rbuf_[2048];
};

}  // namespace tether::bench
