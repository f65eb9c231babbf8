// Open-loop CoAP fleet: N sessions, each its own UDP socket (source port),
// sending CON GET/PUT at a fixed total rate regardless of replies.
//   coap_fleet HOST PORT SESSIONS RATE SECONDS [PUT_PERCENT] [PATH]
// Prints one line: sessions= rate= sent= recv= rps= p50_ms= p99_ms= loss_pct=
// The token carries the request's sequence number, so latency needs no lookup.
#include <uv.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "device_proto/message.h"

using namespace tether::coap;

namespace {

struct Fleet {
  uv_loop_t* loop;
  sockaddr_storage server{};
  std::vector<uv_udp_t> sockets;
  std::vector<uint64_t> sent_at;    // by sequence number
  std::vector<uint32_t> latency_us;
  std::vector<bool> answered;
  uint64_t rate = 0, sent = 0, start_ns = 0, stop_ns = 0;
  unsigned put_percent = 0;
  std::string path = "echo";
  char rbuf[2048];
};

void send_one(Fleet& f) {
  const uint64_t seq = f.sent++;
  uv_udp_t& s = f.sockets[seq % f.sockets.size()];
  uint8_t tok[8];
  for (int i = 0; i < 8; ++i) tok[i] = static_cast<uint8_t>(seq >> (8 * i));
  uint8_t buf[128];
  Writer w(buf);
  const bool put = (seq * 37 % 100) < f.put_percent;
  w.header(Type::kCon, put ? code::kPut : code::kGet, static_cast<uint16_t>(seq / f.sockets.size()), tok);
  if (!f.path.empty()) w.option(opt::kUriPath, f.path);  // empty: the root resource
  static const uint8_t kBody[] = {0xBF, 0x61, 0x62, 0x61, 0x78, 0xFF};
  if (put) w.payload(kBody);
  f.sent_at.push_back(uv_hrtime());
  f.answered.push_back(false);
  uv_buf_t b = uv_buf_init(reinterpret_cast<char*>(buf), static_cast<unsigned>(w.size()));
  uv_udp_try_send(&s, &b, 1, reinterpret_cast<const sockaddr*>(&f.server));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 6) {
    std::fprintf(stderr, "usage: %s HOST PORT SESSIONS RATE SECONDS [PUT_PERCENT] [PATH]\n", argv[0]);
    return 2;
  }
  Fleet f;
  f.loop = uv_default_loop();
  if (uv_ip4_addr(argv[1], std::atoi(argv[2]), reinterpret_cast<sockaddr_in*>(&f.server)) != 0) return 2;
  const size_t sessions = std::strtoul(argv[3], nullptr, 10);
  f.rate = std::strtoull(argv[4], nullptr, 10);
  const double seconds = std::atof(argv[5]);
  if (argc > 6) f.put_percent = static_cast<unsigned>(std::atoi(argv[6]));
  if (argc > 7) f.path = argv[7];
  f.sockets.resize(sessions);
  f.sent_at.reserve(static_cast<size_t>(f.rate * seconds * 1.1) + 16);
  for (auto& s : f.sockets) {
    uv_udp_init(f.loop, &s);
    s.data = &f;
    sockaddr_in any;
    uv_ip4_addr("0.0.0.0", 0, &any);
    if (uv_udp_bind(&s, reinterpret_cast<const sockaddr*>(&any), 0) != 0) {
      std::fprintf(stderr, "bind failed (raise ulimit -n?)\n");
      return 1;
    }
    uv_udp_recv_start(
        &s,
        [](uv_handle_t* h, size_t, uv_buf_t* b) {
          auto* fl = static_cast<Fleet*>(h->data);
          *b = uv_buf_init(fl->rbuf, sizeof fl->rbuf);
        },
        [](uv_udp_t* h, ssize_t n, const uv_buf_t* b, const sockaddr*, unsigned) {
          if (n <= 0) return;
          auto* fl = static_cast<Fleet*>(h->data);
          Message m;
          if (!parse({reinterpret_cast<const uint8_t*>(b->base), static_cast<size_t>(n)}, m).ok()) return;
          if (m.token.len != 8 || m.code == code::kEmpty) return;
          uint64_t seq = 0;
          for (int i = 0; i < 8; ++i) seq |= uint64_t{m.token.bytes[i]} << (8 * i);
          if (seq >= fl->sent_at.size() || fl->answered[seq]) return;
          fl->answered[seq] = true;
          fl->latency_us.push_back(static_cast<uint32_t>((uv_hrtime() - fl->sent_at[seq]) / 1000));
        });
  }
  f.start_ns = uv_hrtime();
  f.stop_ns = f.start_ns + static_cast<uint64_t>(seconds * 1e9);
  uv_timer_t pacer, done;
  uv_timer_init(f.loop, &pacer);
  pacer.data = &f;
  uv_timer_start(&pacer, [](uv_timer_t* t) {
    auto& fl = *static_cast<Fleet*>(t->data);
    const uint64_t now = uv_hrtime();
    if (now >= fl.stop_ns) {
      uv_timer_stop(t);
      return;
    }
    const uint64_t due = (now - fl.start_ns) * fl.rate / 1000000000ull;
    while (fl.sent < due) send_one(fl);
  }, 1, 1);
  uv_timer_init(f.loop, &done);
  uv_timer_start(&done, [](uv_timer_t* t) { uv_stop(t->loop); }, static_cast<uint64_t>(seconds * 1000) + 1000, 0);
  uv_run(f.loop, UV_RUN_DEFAULT);

  std::vector<uint32_t> lat = f.latency_us;
  std::sort(lat.begin(), lat.end());
  auto pct = [&](double p) { return lat.empty() ? 0.0 : lat[std::min(lat.size() - 1, size_t(p * lat.size()))] / 1000.0; };
  std::printf("sessions=%zu rate=%llu sent=%llu recv=%zu rps=%.0f p50_ms=%.3f p99_ms=%.3f loss_pct=%.2f\n", sessions,
              static_cast<unsigned long long>(f.rate), static_cast<unsigned long long>(f.sent), lat.size(),
              lat.size() / seconds, pct(0.50), pct(0.99), f.sent ? 100.0 * (f.sent - lat.size()) / f.sent : 0.0);
  return 0;
}
