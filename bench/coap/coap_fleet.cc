// Open-loop CoAP fleet: N sessions (distinct source addresses), sending CON GET/PUT at a fixed
// total rate regardless of replies.
//   coap_fleet [--raw] [--idle] HOST PORT SESSIONS RATE SECONDS [PUT_PERCENT] [PATH]
// Prints one line: sessions= rate= sent= recv= rps= p50_ms= p99_ms= loss_pct=
//
// Default transport: one UDP socket (source port) per session, so SESSIONS is bounded by the fd
// limit. --raw (needs CAP_NET_RAW): every session is its own source address 127.S.x.y:P, so 100k
// sessions cost the fleet three fds and no per-session syscalls (bench/coap/fleet_transport.h).
// --idle: each session sends exactly one GET (paced at RATE); once every answer is in, prints
// "IDLE answered=N" and keeps quiet until SECONDS have passed (for RSS-per-idle-session readings).
// The token carries the request's sequence number, so latency needs no lookup.
#include <uv.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bench/coap/fleet_transport.h"
#include "device_proto/message.h"

using namespace tether::coap;
using tether::bench::FleetTransport;

namespace {

struct Fleet {
  uv_loop_t* loop = nullptr;
  sockaddr_in server{};
  size_t sessions = 0;
  bool raw = false, idle = false;
  FleetTransport transport;
  // bookkeeping
  std::vector<uint64_t> sent_at;  // by sequence number
  std::vector<uint32_t> latency_us;
  std::vector<bool> answered;
  uint64_t rate = 0, sent = 0, limit = UINT64_MAX, start_ns = 0, stop_ns = 0;
  unsigned put_percent = 0;
  bool idle_reported = false;
  std::string path = "echo";
};

size_t EncodeRequest(Fleet& f, uint64_t seq, uint8_t* buf, size_t cap) {
  uint8_t tok[8];
  for (int i = 0; i < 8; ++i) tok[i] = static_cast<uint8_t>(seq >> (8 * i));
  Writer w(std::span<uint8_t>(buf, cap));
  const bool put = (seq * 37 % 100) < f.put_percent;
  w.Header(Type::kCon, put ? code::kPut : code::kGet, static_cast<uint16_t>(seq / f.sessions), tok);
  if (!f.path.empty()) w.Option(opt::kUriPath, f.path);  // empty: the root resource
  static const uint8_t kBody[] = {0xBF, 0x61, 0x62, 0x61, 0x78, 0xFF};
  if (put) w.Payload(kBody);
  return w.size();
}

void OnReply(Fleet& f, const uint8_t* data, size_t n) {
  Message m;
  if (!Parse({data, n}, m).ok()) return;
  if (m.token.len != 8 || m.code == code::kEmpty) return;
  uint64_t seq = 0;
  for (int i = 0; i < 8; ++i) seq |= uint64_t{m.token.bytes[i]} << (8 * i);
  if (seq >= f.sent_at.size() || f.answered[seq]) return;
  f.answered[seq] = true;
  f.latency_us.push_back(static_cast<uint32_t>((uv_hrtime() - f.sent_at[seq]) / 1000));
  if (f.idle && !f.idle_reported && f.latency_us.size() == f.sessions) {
    f.idle_reported = true;
    std::printf("IDLE answered=%zu\n", f.latency_us.size());
    std::fflush(stdout);
  }
}

void SendOne(Fleet& f) {
  const uint64_t seq = f.sent++;
  f.sent_at.push_back(uv_hrtime());
  f.answered.push_back(false);
  uint8_t buf[128];
  const size_t n = EncodeRequest(f, seq, buf, sizeof buf);
  f.transport.Send(seq % f.sessions, {buf, n});
}

}  // namespace

int main(int argc, char** argv) {
  Fleet f;
  int a = 1;
  for (; a < argc && argv[a][0] == '-' && argv[a][1] == '-'; ++a) {
    std::string flag = argv[a];
    if (flag == "--raw") f.raw = true;
    else if (flag == "--idle") f.idle = true;
    else return std::fprintf(stderr, "unknown flag %s\n", argv[a]), 2;
  }
  if (argc - a < 5) {
    std::fprintf(stderr, "usage: %s [--raw] [--idle] HOST PORT SESSIONS RATE SECONDS [PUT_PERCENT] [PATH]\n", argv[0]);
    return 2;
  }
  f.loop = uv_default_loop();
  if (uv_ip4_addr(argv[a], std::atoi(argv[a + 1]), &f.server) != 0) return 2;
  f.sessions = std::strtoul(argv[a + 2], nullptr, 10);
  f.rate = std::strtoull(argv[a + 3], nullptr, 10);
  const double seconds = std::atof(argv[a + 4]);
  if (argc > a + 5) f.put_percent = static_cast<unsigned>(std::atoi(argv[a + 5]));
  if (argc > a + 6) f.path = argv[a + 6];
  if (f.sessions == 0 || f.rate == 0 || seconds <= 0) return std::fprintf(stderr, "SESSIONS, RATE, SECONDS > 0\n"), 2;
  if (f.idle) f.limit = f.sessions;
  f.sent_at.reserve(std::min<uint64_t>(f.limit, static_cast<uint64_t>(f.rate * seconds * 1.1) + 16));
  if (!f.transport.Open(f.loop, f.server, f.sessions, f.raw,
                        [&f](size_t, std::span<const uint8_t> b) { OnReply(f, b.data(), b.size()); })) {
    return 1;
  }

  f.start_ns = uv_hrtime();
  f.stop_ns = f.start_ns + static_cast<uint64_t>(seconds * 1e9);
  uv_timer_t pacer, done;
  uv_timer_init(f.loop, &pacer);
  pacer.data = &f;
  uv_timer_start(&pacer, [](uv_timer_t* t) {
    auto& fl = *static_cast<Fleet*>(t->data);
    const uint64_t now = uv_hrtime();
    if (now >= fl.stop_ns || fl.sent >= fl.limit) {
      uv_timer_stop(t);
      return;
    }
    const uint64_t due = std::min<uint64_t>(fl.limit, (now - fl.start_ns) * fl.rate / 1000000000ull);
    while (fl.sent < due) SendOne(fl);
  }, 1, 1);
  uv_timer_init(f.loop, &done);
  uv_timer_start(&done, [](uv_timer_t* t) { uv_stop(t->loop); }, static_cast<uint64_t>(seconds * 1000) + 1000, 0);
  uv_run(f.loop, UV_RUN_DEFAULT);

  std::vector<uint32_t> lat = f.latency_us;
  std::sort(lat.begin(), lat.end());
  auto pct = [&](double p) { return lat.empty() ? 0.0 : lat[std::min(lat.size() - 1, size_t(p * lat.size()))] / 1000.0; };
  std::printf("sessions=%zu rate=%llu sent=%llu recv=%zu rps=%.0f p50_ms=%.3f p99_ms=%.3f loss_pct=%.2f\n", f.sessions,
              static_cast<unsigned long long>(f.rate), static_cast<unsigned long long>(f.sent), lat.size(),
              lat.size() / seconds, pct(0.50), pct(0.99), f.sent ? 100.0 * (f.sent - lat.size()) / f.sent : 0.0);
  return 0;
}
