// Observers for the notification benchmark (bench/coap/run-notify.sh) against
// `coap_bench_server --observe HZ`: LIVE observers that acknowledge every CON notification at once,
// as a device does, and DEAD observers that register and then never answer (their sockets are
// read only at the end, to count what reached them).
//   notify_fleet HOST PORT LIVE DEAD SECONDS
// Prints one line: live= dead= states= p50_ms= p99_ms= max_ms= dead_datagrams_per_observer=
// where latency runs from the server's state change (the 8-byte CLOCK_MONOTONIC timestamp the
// notification carries) to its arrival at a live observer, over every notification received.
#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "device_proto/message.h"

using namespace tether::coap;

namespace {

struct Fleet {
  uv_loop_t* loop = nullptr;
  sockaddr_in server{};
  std::vector<uv_udp_t> live;
  std::vector<int> dead;
  std::vector<uint32_t> latency_us;
  uint64_t registered = 0;
  char rbuf[2048];
};

size_t Register(uint16_t mid, uint32_t token, uint8_t* buf, size_t cap) {
  Writer w(std::span<uint8_t>(buf, cap));
  const uint8_t tok[4] = {static_cast<uint8_t>(token >> 24), static_cast<uint8_t>(token >> 16),
                          static_cast<uint8_t>(token >> 8), static_cast<uint8_t>(token)};
  w.Header(Type::kCon, code::kGet, mid, tok);
  w.OptionUint(opt::kObserve, 0);
  w.Option(opt::kUriPath, std::string_view("state"));
  return w.size();
}

void OnDatagram(Fleet& f, uv_udp_t* h, const uint8_t* data, size_t n, const sockaddr* from) {
  const uint64_t now = uv_hrtime();
  Message m;
  if (!Parse({data, n}, m).ok() || m.code != code::kContent) return;
  if (m.type == Type::kAck) {
    ++f.registered;  // the registration's answer
  } else if (m.type == Type::kCon) {
    uint8_t ack[4];
    Writer w(ack);
    w.Header(Type::kAck, code::kEmpty, m.mid, {});
    uv_buf_t b = uv_buf_init(reinterpret_cast<char*>(ack), 4);
    uv_udp_try_send(h, &b, 1, from);
  }
  if (m.type == Type::kAck || m.payload.size() != 8) return;
  uint64_t at = 0;
  std::memcpy(&at, m.payload.data(), 8);
  if (now > at) f.latency_us.push_back(static_cast<uint32_t>((now - at) / 1000));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 6) {
    std::fprintf(stderr, "usage: %s HOST PORT LIVE DEAD SECONDS\n", argv[0]);
    return 2;
  }
  Fleet f;
  f.loop = uv_default_loop();
  if (uv_ip4_addr(argv[1], std::atoi(argv[2]), &f.server) != 0) return 2;
  const size_t live = std::strtoul(argv[3], nullptr, 10), dead = std::strtoul(argv[4], nullptr, 10);
  const double seconds = std::atof(argv[5]);
  uint8_t req[64];
  f.live.resize(live);
  for (size_t i = 0; i < live; ++i) {
    uv_udp_t& s = f.live[i];
    uv_udp_init(f.loop, &s);
    s.data = &f;
    sockaddr_in any;
    uv_ip4_addr("127.0.0.1", 0, &any);
    uv_udp_bind(&s, reinterpret_cast<const sockaddr*>(&any), 0);
    uv_udp_recv_start(
        &s,
        [](uv_handle_t* h, size_t, uv_buf_t* b) {
          auto* fl = static_cast<Fleet*>(h->data);
          *b = uv_buf_init(fl->rbuf, sizeof fl->rbuf);
        },
        [](uv_udp_t* h, ssize_t n, const uv_buf_t* b, const sockaddr* from, unsigned) {
          if (n <= 0 || !from) return;
          OnDatagram(*static_cast<Fleet*>(h->data), h, reinterpret_cast<const uint8_t*>(b->base),
                     static_cast<size_t>(n), from);
        });
    uv_buf_t b = uv_buf_init(reinterpret_cast<char*>(req),
                             static_cast<unsigned>(Register(static_cast<uint16_t>(i), static_cast<uint32_t>(i), req, sizeof req)));
    uv_udp_try_send(&s, &b, 1, reinterpret_cast<const sockaddr*>(&f.server));
  }
  for (size_t i = 0; i < dead; ++i) {
    const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    int big = 8 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big);
    sockaddr_in any{};
    any.sin_family = AF_INET;
    any.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd, reinterpret_cast<sockaddr*>(&any), sizeof any);
    const size_t n = Register(static_cast<uint16_t>(live + i), static_cast<uint32_t>(live + i), req, sizeof req);
    sendto(fd, req, n, 0, reinterpret_cast<const sockaddr*>(&f.server), sizeof f.server);
    f.dead.push_back(fd);
  }
  uv_timer_t done;
  uv_timer_init(f.loop, &done);
  uv_timer_start(&done, [](uv_timer_t* t) { uv_stop(t->loop); }, static_cast<uint64_t>(seconds * 1000), 0);
  uv_run(f.loop, UV_RUN_DEFAULT);

  uint64_t dead_datagrams = 0;
  for (int fd : f.dead) {
    char buf[2048];
    while (recv(fd, buf, sizeof buf, MSG_DONTWAIT) > 0) ++dead_datagrams;
    close(fd);
  }
  std::vector<uint32_t> lat = f.latency_us;
  std::sort(lat.begin(), lat.end());
  auto pct = [&](double p) { return lat.empty() ? 0.0 : lat[std::min(lat.size() - 1, size_t(p * lat.size()))] / 1000.0; };
  std::printf("live=%zu dead=%zu registered=%llu states=%zu p50_ms=%.3f p99_ms=%.3f max_ms=%.3f "
              "dead_datagrams_per_observer=%.1f\n",
              live, dead, static_cast<unsigned long long>(f.registered), lat.size(), pct(0.50), pct(0.99),
              lat.empty() ? 0.0 : lat.back() / 1000.0, dead ? static_cast<double>(dead_datagrams) / dead : 0.0);
  return 0;
}
