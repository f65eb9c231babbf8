// DTLS-PSK CoAP fleet: SESSIONS mbedTLS clients, each on its own UDP socket, against one server.
//   dtls_fleet HOST PORT SESSIONS RATE SECONDS KEY [IDLE_SECONDS]
// Phase 1 runs every handshake (each followed at once by one GET, as a CoAP client does), at
// most kWindow at once, and prints
//   handshakes=N failed=N seconds=S hs_per_s=R
// Phase 2 sends CON GETs on the root at RATE req/s (open loop, round robin) for SECONDS and prints
//   sessions= rate= sent= recv= rps= p50_ms= p99_ms= loss_pct=
// With IDLE_SECONDS, it then prints "IDLE" and keeps every session open and silent that long (for
// RSS-per-idle-session readings by bench/coap/run-dtls.sh). Every session uses identity
// "bench-device" with KEY and TLS_PSK_WITH_AES_128_CCM_8.
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/ssl.h>
#include <uv.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "device_proto/message.h"

using namespace tether::coap;

namespace {

constexpr size_t kWindow = 32;  // handshakes in flight (below the gateway's default cap of 64)

struct Fleet;

struct Session {
  Fleet* fleet = nullptr;
  uv_udp_t udp;
  mbedtls_ssl_context ssl;
  std::deque<std::string> in;
  uint64_t int_at = 0, fin_at = 0;
  bool started = false, done = false, failed = false;
};

struct Fleet {
  uv_loop_t* loop = nullptr;
  sockaddr_in server{};
  std::string key;
  size_t sessions = 0;
  uint64_t rate = 0, seconds = 0, idle_seconds = 0;
  mbedtls_entropy_context entropy;
  mbedtls_ctr_drbg_context drbg;
  mbedtls_ssl_config conf;
  std::vector<std::unique_ptr<Session>> s;
  size_t next_start = 0, in_flight = 0, handshakes = 0, failed = 0;
  uint64_t hs_start_ns = 0, hs_end_ns = 0;
  // request phase
  bool requesting = false;
  uint64_t sent = 0, start_ns = 0;
  std::vector<uint64_t> sent_at;
  std::vector<bool> answered;
  std::vector<uint32_t> latency_us;
  uv_timer_t tick;
  char rbuf[2048];
};

uint64_t NowMs(const Fleet& f) { return uv_now(f.loop); }

int Send(void* p, const unsigned char* buf, size_t len) {
  auto* s = static_cast<Session*>(p);
  uv_buf_t b = uv_buf_init(const_cast<char*>(reinterpret_cast<const char*>(buf)), static_cast<unsigned>(len));
  int r = uv_udp_try_send(&s->udp, &b, 1, nullptr);
  return r < 0 ? static_cast<int>(len) : r;  // a full socket buffer is loss, as on a real network
}

int Recv(void* p, unsigned char* buf, size_t len) {
  auto* s = static_cast<Session*>(p);
  if (s->in.empty()) return MBEDTLS_ERR_SSL_WANT_READ;
  std::string d = std::move(s->in.front());
  s->in.pop_front();
  const size_t n = std::min(len, d.size());
  std::copy_n(d.data(), n, buf);
  return static_cast<int>(n);
}

void SetTimer(void* p, uint32_t int_ms, uint32_t fin_ms) {
  auto* s = static_cast<Session*>(p);
  const uint64_t now = NowMs(*s->fleet);
  s->int_at = now + int_ms;
  s->fin_at = fin_ms ? now + fin_ms : 0;
}

int GetTimer(void* p) {
  auto* s = static_cast<Session*>(p);
  if (s->fin_at == 0) return -1;
  const uint64_t now = NowMs(*s->fleet);
  return now >= s->fin_at ? 2 : now >= s->int_at ? 1 : 0;
}

void StartNext(Fleet& f);

void OnReply(Fleet& f, const uint8_t* data, size_t n) {
  Message m;
  if (!Parse({data, n}, m).ok() || m.token.len != 8 || m.code == code::kEmpty) return;
  uint64_t seq = 0;
  for (int i = 0; i < 8; ++i) seq |= uint64_t{m.token.bytes[i]} << (8 * i);
  if (seq >= f.sent_at.size() || f.answered[seq]) return;
  f.answered[seq] = true;
  f.latency_us.push_back(static_cast<uint32_t>((uv_hrtime() - f.sent_at[seq]) / 1000));
}

void Drive(Session& s) {
  Fleet& f = *s.fleet;
  if (!s.done && !s.failed) {
    const int r = mbedtls_ssl_handshake(&s.ssl);
    if (r == 0) {
      s.done = true;
      ++f.handshakes;
      // A CoAP client's first request follows its handshake at once (it is what the handshake was
      // for); this one is not counted in the request phase.
      static const uint8_t kFirst[] = {0x40, 0x01, 0x00, 0x00};  // CON GET, no token, MID 0
      mbedtls_ssl_write(&s.ssl, kFirst, sizeof kFirst);
    } else if (r != MBEDTLS_ERR_SSL_WANT_READ && r != MBEDTLS_ERR_SSL_WANT_WRITE) {
      s.failed = true;
      ++f.failed;
    }
    if (s.done || s.failed) {
      --f.in_flight;
      if (f.handshakes + f.failed == f.sessions) f.hs_end_ns = uv_hrtime();
      StartNext(f);
    }
    if (!s.done) return;
  }
  unsigned char buf[2048];
  for (;;) {
    const int r = mbedtls_ssl_read(&s.ssl, buf, sizeof buf);
    if (r <= 0) break;
    OnReply(f, buf, static_cast<size_t>(r));
  }
}

void StartNext(Fleet& f) {
  while (f.in_flight < kWindow && f.next_start < f.sessions) {
    Session& s = *f.s[f.next_start++];
    s.started = true;
    ++f.in_flight;
    Drive(s);
  }
}

bool Open(Fleet& f, size_t i) {  // i: the session's index (its socket is its identity on the wire)
  auto s = std::make_unique<Session>();
  s->fleet = &f;
  (void)i;
  uv_udp_init(f.loop, &s->udp);
  s->udp.data = s.get();
  if (uv_udp_connect(&s->udp, reinterpret_cast<const sockaddr*>(&f.server)) != 0) return false;
  uv_udp_recv_start(
      &s->udp,
      [](uv_handle_t* h, size_t, uv_buf_t* b) {
        auto* ss = static_cast<Session*>(h->data);
        *b = uv_buf_init(ss->fleet->rbuf, sizeof ss->fleet->rbuf);
      },
      [](uv_udp_t* h, ssize_t n, const uv_buf_t* b, const sockaddr*, unsigned) {
        if (n <= 0) return;
        auto* ss = static_cast<Session*>(h->data);
        ss->in.emplace_back(b->base, static_cast<size_t>(n));
        if (ss->started) Drive(*ss);
      });
  mbedtls_ssl_init(&s->ssl);
  if (mbedtls_ssl_setup(&s->ssl, &f.conf) != 0) return false;
  mbedtls_ssl_set_bio(&s->ssl, s.get(), Send, Recv, nullptr);
  mbedtls_ssl_set_timer_cb(&s->ssl, s.get(), SetTimer, GetTimer);
  mbedtls_ssl_set_mtu(&s->ssl, 1280);
  f.s.push_back(std::move(s));
  return true;
}

void SendRequest(Fleet& f) {
  const uint64_t seq = f.sent++;
  Session& s = *f.s[seq % f.sessions];
  f.sent_at.push_back(uv_hrtime());
  f.answered.push_back(false);
  if (!s.done) return;
  uint8_t tok[8], buf[64];
  for (int i = 0; i < 8; ++i) tok[i] = static_cast<uint8_t>(seq >> (8 * i));
  Writer w(buf);
  w.Header(Type::kCon, code::kGet, static_cast<uint16_t>(seq / f.sessions), tok);
  mbedtls_ssl_write(&s.ssl, buf, w.size());
}

double Percentile(std::vector<uint32_t> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))] / 1000.0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 7) {
    std::fprintf(stderr, "usage: dtls_fleet HOST PORT SESSIONS RATE SECONDS KEY [IDLE_SECONDS]\n");
    return 2;
  }
  Fleet f;
  f.loop = uv_default_loop();
  uv_ip4_addr(argv[1], std::atoi(argv[2]), &f.server);
  f.sessions = std::strtoull(argv[3], nullptr, 10);
  f.rate = std::strtoull(argv[4], nullptr, 10);
  f.seconds = std::strtoull(argv[5], nullptr, 10);
  f.key = argv[6];
  f.idle_seconds = argc > 7 ? std::strtoull(argv[7], nullptr, 10) : 0;
  mbedtls_entropy_init(&f.entropy);
  mbedtls_ctr_drbg_init(&f.drbg);
  mbedtls_ssl_config_init(&f.conf);
  if (mbedtls_ctr_drbg_seed(&f.drbg, mbedtls_entropy_func, &f.entropy, nullptr, 0) != 0 ||
      mbedtls_ssl_config_defaults(&f.conf, MBEDTLS_SSL_IS_CLIENT, MBEDTLS_SSL_TRANSPORT_DATAGRAM,
                                  MBEDTLS_SSL_PRESET_DEFAULT) != 0) {
    std::fprintf(stderr, "mbedTLS setup failed\n");
    return 1;
  }
  mbedtls_ssl_conf_rng(&f.conf, mbedtls_ctr_drbg_random, &f.drbg);
  static const int kSuites[] = {MBEDTLS_TLS_PSK_WITH_AES_128_CCM_8, 0};  // CoAP's mandatory suite
  mbedtls_ssl_conf_ciphersuites(&f.conf, kSuites);
  static const char kIdentity[] = "bench-device";
  mbedtls_ssl_conf_psk(&f.conf, reinterpret_cast<const unsigned char*>(f.key.data()), f.key.size(),
                       reinterpret_cast<const unsigned char*>(kIdentity), sizeof kIdentity - 1);
  mbedtls_ssl_conf_handshake_timeout(&f.conf, 1000, 16000);
  for (size_t i = 0; i < f.sessions; ++i) {
    if (!Open(f, i)) {
      std::fprintf(stderr, "cannot open session %zu (raise ulimit -n)\n", i);
      return 1;
    }
  }
  // Handshake retransmission timers: poll every 10 ms.
  uv_timer_init(f.loop, &f.tick);
  f.tick.data = &f;
  f.hs_start_ns = uv_hrtime();
  StartNext(f);
  uv_timer_start(
      &f.tick,
      [](uv_timer_t* t) {
        Fleet& fl = *static_cast<Fleet*>(t->data);
        if (!fl.requesting) {
          for (auto& s : fl.s)
            if (s->started && !s->done && !s->failed && s->fin_at && NowMs(fl) >= s->fin_at) Drive(*s);
          if (fl.handshakes + fl.failed < fl.sessions) return;
          const double secs = static_cast<double>(fl.hs_end_ns - fl.hs_start_ns) / 1e9;
          std::printf("handshakes=%zu failed=%zu seconds=%.3f hs_per_s=%.0f\n", fl.handshakes, fl.failed, secs,
                      secs > 0 ? static_cast<double>(fl.handshakes) / secs : 0);
          std::fflush(stdout);
          fl.requesting = true;
          fl.start_ns = uv_hrtime();
          return;
        }
        const uint64_t elapsed_ns = uv_hrtime() - fl.start_ns;
        if (elapsed_ns < fl.seconds * 1'000'000'000ull) {
          const uint64_t due = fl.rate * elapsed_ns / 1'000'000'000ull;
          while (fl.sent < due) SendRequest(fl);
          return;
        }
        if (elapsed_ns < (fl.seconds + 1) * 1'000'000'000ull) return;  // late answers
        const double rps = static_cast<double>(fl.latency_us.size()) / static_cast<double>(fl.seconds);
        std::printf("sessions=%zu rate=%llu sent=%llu recv=%zu rps=%.0f p50_ms=%.3f p99_ms=%.3f loss_pct=%.2f\n",
                    fl.sessions, static_cast<unsigned long long>(fl.rate), static_cast<unsigned long long>(fl.sent),
                    fl.latency_us.size(), rps, Percentile(fl.latency_us, 0.5), Percentile(fl.latency_us, 0.99),
                    fl.sent ? 100.0 * static_cast<double>(fl.sent - fl.latency_us.size()) / static_cast<double>(fl.sent) : 0);
        std::fflush(stdout);
        uv_timer_stop(t);
        if (fl.idle_seconds) {
          std::printf("IDLE\n");
          std::fflush(stdout);
          uv_timer_start(t, [](uv_timer_t* h) { uv_stop(h->loop); }, fl.idle_seconds * 1000, 0);
        } else {
          uv_stop(fl.loop);
        }
      },
      10, 1);
  uv_run(f.loop, UV_RUN_DEFAULT);
  return 0;
}
