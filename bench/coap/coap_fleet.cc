// Open-loop CoAP fleet: N sessions (distinct source addresses), sending CON GET/PUT at a fixed
// total rate regardless of replies.
//   coap_fleet [--raw] [--idle] HOST PORT SESSIONS RATE SECONDS [PUT_PERCENT] [PATH]
// Prints one line: sessions= rate= sent= recv= rps= p50_ms= p99_ms= loss_pct=
//
// Default transport: one UDP socket (source port) per session, so SESSIONS is bounded by the fd
// limit. --raw (needs CAP_NET_RAW): every session is its own source address 127.S.x.y:P, sent
// through one IP_HDRINCL raw socket and received through one raw socket with a BPF filter, so 100k
// sessions cost the fleet two fds and no per-session syscalls.
// --idle: each session sends exactly one GET (paced at RATE); once every answer is in, prints
// "IDLE answered=N" and keeps quiet until SECONDS have passed (for RSS-per-idle-session readings).
// The token carries the request's sequence number, so latency needs no lookup.
#include <arpa/inet.h>
#include <linux/filter.h>
#include <netinet/ip.h>
#include <netinet/udp.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "device_proto/message.h"

using namespace tether::coap;

namespace {

struct Fleet {
  uv_loop_t* loop = nullptr;
  sockaddr_in server{};
  size_t sessions = 0;
  bool raw = false, idle = false;
  uint16_t raw_port = 0;  // --raw source port; differs per run so a server's duplicate cache of an
                          // earlier run (same addresses, same message ids) cannot answer this one
  // socket transport
  std::vector<uv_udp_t> sockets;
  // raw transport
  int raw_tx = -1, raw_rx = -1;
  uv_poll_t rx_poll{};
  // bookkeeping
  std::vector<uint64_t> sent_at;  // by sequence number
  std::vector<uint32_t> latency_us;
  std::vector<bool> answered;
  uint64_t rate = 0, sent = 0, limit = UINT64_MAX, start_ns = 0, stop_ns = 0;
  unsigned put_percent = 0;
  bool idle_reported = false;
  std::string path = "echo";
  char rbuf[2048];
};

// Session i's source address in --raw mode: 127.(2 + i/62500).x.y, never .0 in the last byte.
uint32_t RawSourceIp(size_t i) {
  return (127u << 24) | ((2u + static_cast<uint32_t>(i / 62500)) << 16) |
         (static_cast<uint32_t>((i / 250) % 250) << 8) | static_cast<uint32_t>(i % 250 + 1);
}

size_t EncodeRequest(Fleet& f, uint64_t seq, uint8_t* buf, size_t cap) {
  uint8_t tok[8];
  for (int i = 0; i < 8; ++i) tok[i] = static_cast<uint8_t>(seq >> (8 * i));
  Writer w(std::span<uint8_t>(buf, cap));
  const bool put = (seq * 37 % 100) < f.put_percent;
  w.header(Type::kCon, put ? code::kPut : code::kGet, static_cast<uint16_t>(seq / f.sessions), tok);
  if (!f.path.empty()) w.option(opt::kUriPath, f.path);  // empty: the root resource
  static const uint8_t kBody[] = {0xBF, 0x61, 0x62, 0x61, 0x78, 0xFF};
  if (put) w.payload(kBody);
  return w.size();
}

void OnReply(Fleet& f, const uint8_t* data, size_t n) {
  Message m;
  if (!parse({data, n}, m).ok()) return;
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
  const size_t session = seq % f.sessions;
  f.sent_at.push_back(uv_hrtime());
  f.answered.push_back(false);
  if (!f.raw) {
    uint8_t buf[128];
    size_t n = EncodeRequest(f, seq, buf, sizeof buf);
    uv_buf_t b = uv_buf_init(reinterpret_cast<char*>(buf), static_cast<unsigned>(n));
    uv_udp_try_send(&f.sockets[session], &b, 1, reinterpret_cast<const sockaddr*>(&f.server));
    return;
  }
  uint8_t pkt[sizeof(iphdr) + sizeof(udphdr) + 128] = {};
  auto* ip = reinterpret_cast<iphdr*>(pkt);
  auto* udp = reinterpret_cast<udphdr*>(pkt + sizeof(iphdr));
  size_t n = EncodeRequest(f, seq, pkt + sizeof(iphdr) + sizeof(udphdr), 128);
  ip->version = 4;
  ip->ihl = 5;
  ip->ttl = 64;
  ip->protocol = IPPROTO_UDP;
  ip->saddr = htonl(RawSourceIp(session));
  ip->daddr = f.server.sin_addr.s_addr;
  ip->tot_len = htons(static_cast<uint16_t>(sizeof(iphdr) + sizeof(udphdr) + n));  // kernel fills id, csum
  udp->source = htons(f.raw_port);
  udp->dest = f.server.sin_port;
  udp->len = htons(static_cast<uint16_t>(sizeof(udphdr) + n));
  udp->check = 0;  // IPv4 allows "no checksum"
  if (sendto(f.raw_tx, pkt, sizeof(iphdr) + sizeof(udphdr) + n, 0, reinterpret_cast<const sockaddr*>(&f.server),
             sizeof f.server) < 0 && errno != EAGAIN && errno != ENOBUFS) {
    std::perror("raw sendto");
  }
}

bool OpenRaw(Fleet& f) {
  f.raw_port = static_cast<uint16_t>(20000 + getpid() % 40000);
  f.raw_tx = socket(AF_INET, SOCK_RAW | SOCK_NONBLOCK, IPPROTO_RAW);  // IPPROTO_RAW implies IP_HDRINCL
  f.raw_rx = socket(AF_INET, SOCK_RAW | SOCK_NONBLOCK, IPPROTO_UDP);
  if (f.raw_tx < 0 || f.raw_rx < 0) {
    std::perror("raw socket (--raw needs CAP_NET_RAW)");
    return false;
  }
  int big = 64 << 20;
  setsockopt(f.raw_rx, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big);
  setsockopt(f.raw_tx, SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof big);
  // Only UDP from the server's port to the fleet's source port (the raw socket sees all UDP,
  // including the fleet's own requests on loopback). Assumes no IP options (IHL 5) from loopback.
  const uint16_t sport = ntohs(f.server.sin_port);
  sock_filter code[] = {
      {BPF_LD | BPF_H | BPF_ABS, 0, 0, 20},  {BPF_JMP | BPF_JEQ | BPF_K, 0, 3, sport},
      {BPF_LD | BPF_H | BPF_ABS, 0, 0, 22},  {BPF_JMP | BPF_JEQ | BPF_K, 0, 1, f.raw_port},
      {BPF_RET | BPF_K, 0, 0, 0xFFFFFFFF},   {BPF_RET | BPF_K, 0, 0, 0},
  };
  sock_fprog prog{static_cast<unsigned short>(sizeof code / sizeof code[0]), code};
  if (setsockopt(f.raw_rx, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog) != 0) {
    std::perror("SO_ATTACH_FILTER");
    return false;
  }
  uv_poll_init(f.loop, &f.rx_poll, f.raw_rx);
  f.rx_poll.data = &f;
  uv_poll_start(&f.rx_poll, UV_READABLE, [](uv_poll_t* h, int status, int) {
    if (status < 0) return;
    auto& fl = *static_cast<Fleet*>(h->data);
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
      int got = recvmmsg(fl.raw_rx, msgs, kBatch, MSG_DONTWAIT, nullptr);
      if (got <= 0) return;
      for (int i = 0; i < got; ++i) {
        size_t len = msgs[i].msg_len;
        if (len < sizeof(iphdr) + sizeof(udphdr)) continue;
        size_t ihl = (bufs[i][0] & 0x0F) * 4u;
        if (len < ihl + sizeof(udphdr)) continue;
        OnReply(fl, bufs[i] + ihl + sizeof(udphdr), len - ihl - sizeof(udphdr));
      }
    }
  });
  return true;
}

bool OpenSockets(Fleet& f) {
  f.sockets.resize(f.sessions);
  for (auto& s : f.sockets) {
    uv_udp_init(f.loop, &s);
    s.data = &f;
    sockaddr_in any;
    uv_ip4_addr("0.0.0.0", 0, &any);
    if (uv_udp_bind(&s, reinterpret_cast<const sockaddr*>(&any), 0) != 0) {
      std::fprintf(stderr, "bind failed (raise ulimit -n, or use --raw)\n");
      return false;
    }
    uv_udp_recv_start(
        &s,
        [](uv_handle_t* h, size_t, uv_buf_t* b) {
          auto* fl = static_cast<Fleet*>(h->data);
          *b = uv_buf_init(fl->rbuf, sizeof fl->rbuf);
        },
        [](uv_udp_t* h, ssize_t n, const uv_buf_t* b, const sockaddr*, unsigned) {
          if (n <= 0) return;
          OnReply(*static_cast<Fleet*>(h->data), reinterpret_cast<const uint8_t*>(b->base), static_cast<size_t>(n));
        });
  }
  return true;
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
  if (f.raw && f.sessions > 62500 * 200) return std::fprintf(stderr, "--raw: at most 12.5M sessions\n"), 2;
  if (f.idle) f.limit = f.sessions;
  f.sent_at.reserve(std::min<uint64_t>(f.limit, static_cast<uint64_t>(f.rate * seconds * 1.1) + 16));
  if (!(f.raw ? OpenRaw(f) : OpenSockets(f))) return 1;

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
  if (f.raw) {
    close(f.raw_tx);
    close(f.raw_rx);
  }
  return 0;
}
