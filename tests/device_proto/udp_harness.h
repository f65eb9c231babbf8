// Test helpers: a uv loop pumped from the test thread, a plain UDP client
// socket, and builders for CoAP datagrams. Every wait is bounded.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "device_proto/endpoint.h"
#include "device_proto/message.h"

namespace tether::coap::test {

using Bytes = std::vector<uint8_t>;

inline Bytes BytesOf(std::string_view s) { return Bytes(s.begin(), s.end()); }

struct Packet {
  Bytes bytes;
  Message m;
  Address from;
  bool ok = false;
  std::string payload() const { return std::string(m.payload.begin(), m.payload.end()); }
};

inline std::unique_ptr<Packet> MakePacket(Bytes b, Address from = {}) {
  auto p = std::make_unique<Packet>();
  p->bytes = std::move(b);
  p->from = from;
  p->ok = Parse(p->bytes, p->m).ok();
  return p;
}

// A non-blocking UDP socket bound to an ephemeral port on the loopback.
class UdpSocket {
 public:
  explicit UdpSocket(int family = AF_INET) : family_(family) {
    fd_ = ::socket(family, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    sockaddr_storage ss{};
    Address a;
    a.family = static_cast<uint8_t>(family);
    if (family == AF_INET) {
      a.ip[0] = 127, a.ip[3] = 1;
    } else {
      a.ip[15] = 1;
    }
    socklen_t len = a.ToSockaddr(ss);
    ::bind(fd_, reinterpret_cast<sockaddr*>(&ss), len);
  }
  ~UdpSocket() { ::close(fd_); }
  UdpSocket(const UdpSocket&) = delete;

  uint16_t port() const {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    getsockname(fd_, reinterpret_cast<sockaddr*>(&ss), &len);
    return Address::FromSockaddr(reinterpret_cast<sockaddr*>(&ss)).port;
  }
  Address address() const {
    Address a;
    a.family = static_cast<uint8_t>(family_);
    if (family_ == AF_INET) {
      a.ip[0] = 127, a.ip[3] = 1;
    } else {
      a.ip[15] = 1;
    }
    a.port = port();
    return a;
  }
  void SendTo(const Address& to, const Bytes& b) {
    sockaddr_storage ss;
    socklen_t len = to.ToSockaddr(ss);
    ::sendto(fd_, b.data(), b.size(), 0, reinterpret_cast<sockaddr*>(&ss), len);
  }
  std::optional<std::pair<Bytes, Address>> TryRecv() {
    Bytes b(65536);
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    ssize_t n = ::recvfrom(fd_, b.data(), b.size(), 0, reinterpret_cast<sockaddr*>(&ss), &len);
    if (n < 0) return std::nullopt;
    b.resize(static_cast<size_t>(n));
    return std::make_pair(std::move(b), Address::FromSockaddr(reinterpret_cast<sockaddr*>(&ss)));
  }

 private:
  int fd_;
  int family_;
};

// Runs the loop without blocking until `done` or the deadline; returns done().
inline bool PumpUntil(uv_loop_t* loop, const std::function<bool()>& done, int timeout_ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < deadline) {
    uv_run(loop, UV_RUN_NOWAIT);
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::microseconds(500));
  }
  uv_run(loop, UV_RUN_NOWAIT);
  return done();
}

inline void PumpFor(uv_loop_t* loop, int ms) {
  PumpUntil(loop, [] { return false; }, ms);
}

// Builds a datagram; options must be given in increasing number order.
struct Build {
  Type type = Type::kCon;
  uint8_t code = code::kGet;
  uint16_t mid = 1;
  Bytes token = {0xA1, 0xB2, 0xC3, 0xD4};
  std::vector<std::pair<uint16_t, Bytes>> options;
  Bytes payload;

  Build& Path(std::string_view seg) { return Opt(opt::kUriPath, BytesOf(seg)); }
  Build& Opt(uint16_t n, Bytes v) {
    options.emplace_back(n, std::move(v));
    return *this;
  }
  Build& OptUint(uint16_t n, uint32_t v) {
    uint8_t b[4];
    size_t len = EncodeUint(v, b);
    return Opt(n, Bytes(b, b + len));
  }
  Bytes done() const {
    auto sorted = options;
    std::stable_sort(sorted.begin(), sorted.end(), [](auto& a, auto& b) { return a.first < b.first; });
    Bytes out(70000);
    Writer w(out);
    w.Header(type, code, mid, token);
    for (auto& [n, v] : sorted) w.Option(n, v);
    w.Payload(payload);
    out.resize(w.size());
    return out;
  }
};

}  // namespace tether::coap::test
