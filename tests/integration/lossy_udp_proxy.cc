#include "tests/integration/lossy_udp_proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <queue>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace tether::testing {
namespace {

using Clock = std::chrono::steady_clock;

sockaddr_in Loopback(uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

struct Scheduled {
  Clock::time_point due;
  uint64_t order;     // FIFO among equal due times
  int fd;             // socket to send on
  bool to_device;     // via the front socket to `device`, else on the connected upstream socket
  sockaddr_in device;
  std::string bytes;
  bool operator>(const Scheduled& o) const { return due != o.due ? due > o.due : order > o.order; }
};

}  // namespace

LossyUdpProxy::LossyUdpProxy(uint16_t gateway_port, LossProfile profile, uint32_t seed) {
  front_fd_ = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_in a = Loopback(0);
  if (front_fd_ < 0 || bind(front_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    throw std::runtime_error("proxy: bind failed");
  }
  socklen_t len = sizeof a;
  getsockname(front_fd_, reinterpret_cast<sockaddr*>(&a), &len);
  port_ = ntohs(a.sin_port);
  thread_ = std::thread([this, gateway_port, profile, seed] { Run(gateway_port, profile, seed); });
}

LossyUdpProxy::~LossyUdpProxy() {
  stop_ = true;
  thread_.join();
  close(front_fd_);
}

LossyUdpProxy::Stats LossyUdpProxy::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

void LossyUdpProxy::Run(uint16_t gateway_port, LossProfile p, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> roll(0, 1);
  std::uniform_int_distribution<int> delay(0, p.max_delay_ms), hold(p.max_delay_ms, 3 * p.max_delay_ms);
  std::map<uint16_t, int> upstream_of;            // device port -> upstream socket
  std::map<int, sockaddr_in> device_of;           // upstream socket -> device address
  std::priority_queue<Scheduled, std::vector<Scheduled>, std::greater<>> pending;
  uint64_t order = 0;
  sockaddr_in gateway = Loopback(gateway_port);

  auto schedule = [&](int fd, bool to_device, const sockaddr_in& dev, std::string bytes) {
    std::lock_guard lock(mu_);
    ++stats_.in;
    if (roll(rng) < p.loss) {
      ++stats_.dropped;
      return;
    }
    auto now = Clock::now();
    bool reorder = roll(rng) < p.reorder;
    stats_.reordered += reorder;
    auto first = now + std::chrono::milliseconds(reorder ? hold(rng) : delay(rng));
    if (roll(rng) < p.duplicate) {
      ++stats_.duplicated;
      pending.push({now + std::chrono::milliseconds(delay(rng)), order++, fd, to_device, dev, bytes});
    }
    pending.push({first, order++, fd, to_device, dev, std::move(bytes)});
  };

  char buf[65536];
  while (!stop_) {
    std::vector<pollfd> fds = {{front_fd_, POLLIN, 0}};
    for (const auto& [fd, dev] : device_of) fds.push_back({fd, POLLIN, 0});
    int wait_ms = 20;
    if (!pending.empty()) {
      auto until = std::chrono::duration_cast<std::chrono::milliseconds>(pending.top().due - Clock::now()).count();
      wait_ms = static_cast<int>(std::max<int64_t>(0, std::min<int64_t>(wait_ms, until)));
    }
    poll(fds.data(), fds.size(), wait_ms);
    for (const pollfd& pf : fds) {
      if (!(pf.revents & POLLIN)) continue;
      while (true) {
        sockaddr_in from{};
        socklen_t len = sizeof from;
        ssize_t n = recvfrom(pf.fd, buf, sizeof buf, MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&from), &len);
        if (n < 0) break;
        if (pf.fd == front_fd_) {
          uint16_t dport = ntohs(from.sin_port);
          int up = upstream_of.count(dport) ? upstream_of[dport] : -1;
          if (up < 0) {
            up = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
            connect(up, reinterpret_cast<sockaddr*>(&gateway), sizeof gateway);
            upstream_of[dport] = up;
            device_of[up] = from;
          }
          schedule(up, false, from, std::string(buf, static_cast<size_t>(n)));
        } else {
          schedule(front_fd_, true, device_of[pf.fd], std::string(buf, static_cast<size_t>(n)));
        }
      }
    }
    for (auto now = Clock::now(); !pending.empty() && pending.top().due <= now;) {
      const Scheduled& s = pending.top();
      if (s.to_device) {
        sendto(s.fd, s.bytes.data(), s.bytes.size(), 0, reinterpret_cast<const sockaddr*>(&s.device), sizeof s.device);
      } else {
        send(s.fd, s.bytes.data(), s.bytes.size(), 0);
      }
      pending.pop();
    }
  }
  for (const auto& [fd, dev] : device_of) close(fd);
}

}  // namespace tether::testing
