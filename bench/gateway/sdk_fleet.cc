// sdk_fleet: an open-loop fleet of devices speaking as the Wilddog SDK does, for the end-to-end
// benchmark (bench/gateway/run-e2e.sh) against tetherd and, with the same requests, against the
// engine alone (coap_bench_server) and libcoap (coap-server-notls -d).
//
//   sdk_fleet [--raw] [--server-pid PID] [--drain S] [--window N] [--closed N]
//             HOST PORT DEVICES MODE RATE SECONDS
//
// Every device first opens a session (CON `POST /.cs?v=2`, payload the device id, Uri-Host
// myapp.wilddogio.com; the short token of the 2.05 CBOR answer goes into `.cs=` of every later
// request; a server that answers otherwise gets a dummy token of the same length). At most
// --window (2000) set-up requests are in flight. Then, by MODE:
//   put      RATE CON PUTs a second to /fleet/d<i>/v, payload an SDK-shaped CBOR map
//            {"n": <request number>, "t": 21.5} (indefinite length, as the SDK encodes), devices
//            in turn; SECONDS long.
//   get      each device PUTs its value once, then RATE CON GETs a second of /fleet/d<i>/v.
//   observe  each device PUTs its value once and observes /fleet/d<i>/v (GET + Observe 0), then
//            PUTs as in `put`; every notification is matched to the PUT it carries ("n").
//   fanout   every device observes /fleet/all; then device 0 PUTs {"n": k} there RATE times a
//            second: latency from each PUT's send to each device's notification.
//   idle, idle-observe   sessions (and one observation each) only, then SECONDS of silence;
//            the server's memory is read 2 s after set-up and again at the end.
//            --pings N: N pings per device, one round after another (the SDK pings every 19-165 s,
//            so a device in the field has several within the server's exchange lifetime).
// In every mode each device pings right after its session opened (`GET /.ping?.cs=S`), as the
// SDK does: tetherd keeps a session that its device never used in memory only, under
// device.max_unconfirmed_sessions, so without the ping most would not be kept (10,000 opens at
// once, then PUTs: 59 % of them answered 4.01 unknown session).
// --closed N (put, get): closed loop instead: N requests in flight, a new one as each is
// answered (RATE is ignored), so goodput is the server's capacity with a bounded queue.
// An unanswered CON is sent again after 2 s and 6 s (the SDK's timers) unless the server sent
// an empty ACK (separate response); CON responses and notifications are acknowledged.
// Requests are counted by answer: ok (2.xx), shed (5.03), err (any other code), lost (none
// within SECONDS + --drain, default 3 s); latency runs from the first transmission.
// With --server-pid, also the server's CPU time over the load phase by thread (the loop is the
// thread whose id is the pid, the writer the thread named tether-writer) and its RssAnon /
// RssFile before the first device and after set-up.
// Prints one line of key=value pairs (after "READY ..." in the idle modes).
#include <uv.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <unistd.h>
#include <vector>

#include "bench/coap/fleet_transport.h"
#include "bench/gateway/cbor_reader.h"
#include "bench/gateway/proc_usage.h"
#include "device_proto/message.h"

using namespace tether::coap;
using tether::bench::CborReader;
using tether::bench::FleetTransport;
using tether::bench::ProcessMemory;
using tether::bench::ReadProcessMemory;
using tether::bench::ReadServerCpu;
using tether::bench::ServerCpu;

namespace {

enum class Mode { kPut, kGet, kObserve, kFanout, kIdle, kIdleObserve };
enum class Kind : uint8_t { kOpen, kPing, kPut, kGet, kObserve };

constexpr uint64_t kAckTimeoutNs = 2'000'000'000ull;  // the SDK's first retransmission ...
constexpr uint64_t kSecondRetryNs = 6'000'000'000ull; // ... and its second
constexpr char kHost[] = "myapp.wilddogio.com";

struct Req {
  uint64_t sent_ns = 0;  // first transmission; 0: not sent
  uint32_t latency_us = 0;
  Kind kind = Kind::kPut;
  uint8_t code = 0;      // the answer's code; 0: none yet
  uint8_t retransmits = 0;
  bool empty_acked = false;
  bool released = false;  // --closed: no longer counted in flight (answered, or 2 s without answer)
};

double Pct(std::vector<uint32_t>& v, double p) {
  if (v.empty()) return 0;
  const size_t k = std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())));
  std::nth_element(v.begin(), v.begin() + static_cast<long>(k), v.end());
  return v[k] / 1000.0;
}

struct Fleet {
  uv_loop_t* loop = nullptr;
  FleetTransport net;
  Mode mode = Mode::kPut;
  size_t devices = 0;
  uint64_t rate = 0;
  double seconds = 0, drain = 3;
  size_t window = 2000;
  int server_pid = 0;

  std::vector<Req> reqs;             // by request number = token; device = number % devices
  std::vector<std::string> session;  // short token by device
  std::vector<uint32_t> notif_us;    // notification latencies
  uint64_t notifications = 0, stale = 0, empty_acks = 0, resets = 0, retransmissions = 0;
  // Set-up phases: requests [phase_lo, phase_hi) are sent at most `window` at a time.
  uint64_t phase_lo = 0, phase_hi = 0, next = 0, done = 0;
  uint64_t retry_cursor = 0, retry2_cursor = 0, last_sent = 0;
  // A ping chained to each open (Setup's `then_ping`): requests [chain_lo, chain_hi), sent as
  // their opens are answered; `chain_sent` in send order, for their retransmissions.
  uint64_t chain_lo = 0, chain_hi = 0, chain_done = 0, chain_ok = 0;
  std::vector<uint64_t> chain_sent;
  size_t chain_cursor = 0, chain2_cursor = 0;
  // Load phase.
  uint64_t load_lo = 0, load_start_ns = 0, load_stop_ns = 0;
  uint64_t closed = 0;           // --closed: requests kept in flight; 0 = open loop
  uint64_t load_sent = 0, load_answered = 0;
  bool loading = false;          // within the load phase's SECONDS
  Kind load_kind = Kind::kPut;
  std::vector<uint64_t> fanout_sent_ns;  // by change number
  std::vector<uint32_t> fanout_count;    // devices notified, by change number
  uint8_t scratch[512];

  size_t DeviceOf(uint64_t n) const { return n % devices; }
  uint16_t MidOf(uint64_t n) const { return static_cast<uint16_t>(n / devices); }

  // "d<i>" into buf (no allocation: the fleet shares the CPU with the server it measures).
  static std::string_view DeviceId(size_t d, char (&buf)[24]) {
    const int n = std::snprintf(buf, sizeof buf, "d%zu", d);
    return {buf, static_cast<size_t>(n)};
  }

  size_t Encode(uint64_t n, uint8_t* out, size_t cap) {
    const Req& r = reqs[n];
    const size_t d = DeviceOf(n);
    const uint8_t tok[4] = {static_cast<uint8_t>(n >> 24), static_cast<uint8_t>(n >> 16),
                            static_cast<uint8_t>(n >> 8), static_cast<uint8_t>(n)};
    Writer w(std::span<uint8_t>(out, cap));
    const uint8_t method = r.kind == Kind::kOpen ? code::kPost : r.kind == Kind::kPut ? code::kPut : code::kGet;
    w.Header(Type::kCon, method, MidOf(n), tok);
    w.Option(opt::kUriHost, std::string_view(kHost));
    if (r.kind == Kind::kObserve) w.OptionUint(opt::kObserve, 0);
    const bool shared = mode == Mode::kFanout;
    if (r.kind == Kind::kOpen) {
      w.Option(opt::kUriPath, std::string_view(".cs"));
      w.Option(opt::kUriQuery, std::string_view("v=2"));
      char buf[24];
      const std::string_view id = DeviceId(d, buf);
      w.Payload({reinterpret_cast<const uint8_t*>(id.data()), id.size()});
      return w.size();
    }
    char cs[48];
    const int cs_len = std::snprintf(cs, sizeof cs, ".cs=%s", session[d].c_str());
    if (r.kind == Kind::kPing) {
      w.Option(opt::kUriPath, std::string_view(".ping"));
      w.Option(opt::kUriQuery, std::string_view(cs, static_cast<size_t>(cs_len)));
      return w.size();
    }
    w.Option(opt::kUriPath, std::string_view("fleet"));
    if (shared) {
      w.Option(opt::kUriPath, std::string_view("all"));
    } else {
      char buf[24];
      w.Option(opt::kUriPath, DeviceId(d, buf));
      w.Option(opt::kUriPath, std::string_view("v"));
    }
    w.Option(opt::kUriQuery, std::string_view(cs, static_cast<size_t>(cs_len)));
    if (r.kind == Kind::kPut) {
      // {"n": n, "t": 21.5} as the SDK encodes a map: indefinite length; 21.5 as a float32.
      const uint64_t value = shared ? (n - load_lo) / devices : n;  // fan-out: the change number
      uint8_t body[24] = {0xBF, 0x61, 'n', 0x1A, static_cast<uint8_t>(value >> 24), static_cast<uint8_t>(value >> 16),
                          static_cast<uint8_t>(value >> 8), static_cast<uint8_t>(value), 0x61, 't', 0xFA,
                          0x41, 0xAC, 0x00, 0x00, 0xFF};
      w.Payload({body, 16});
    }
    return w.size();
  }

  void Transmit(uint64_t n) {
    const size_t len = Encode(n, scratch, sizeof scratch);
    net.Send(DeviceOf(n), {scratch, len});
  }

  uint64_t Add(Kind kind) {
    reqs.push_back(Req{});
    reqs.back().kind = kind;
    return reqs.size() - 1;
  }

  void SendNew(uint64_t n) {
    reqs[n].sent_ns = uv_hrtime();
    last_sent = std::max(last_sent, n);
    Transmit(n);
  }

  void Ack(size_t device, uint16_t mid) {
    uint8_t b[4];
    Writer w(b);
    w.Header(Type::kAck, code::kEmpty, mid, {});
    net.Send(device, {b, 4});
  }

  // The request an empty ACK from `device` with `mid` acknowledges: the newest one of that
  // device sent with that message ID.
  std::optional<uint64_t> ByMid(size_t device, uint16_t mid) const {
    if (reqs.size() <= device) return std::nullopt;
    const uint64_t newest = (reqs.size() - 1 - device) / devices;  // this device's newest round
    const uint64_t back = static_cast<uint16_t>(static_cast<uint16_t>(newest) - mid);
    if (back > newest) return std::nullopt;
    return (newest - back) * devices + device;
  }

  void OnDatagram(size_t device, std::span<const uint8_t> bytes) {
    const uint64_t now = uv_hrtime();
    Message m;
    if (!Parse(bytes, m).ok()) {
      // The SDK quirk the servers accept is ours to send, not to receive: ignore anything odd.
      return;
    }
    if (m.type == Type::kRst) {
      ++resets;
      return;
    }
    if (m.code == code::kEmpty) {
      if (m.type == Type::kAck) {
        ++empty_acks;
        if (auto n = ByMid(device, m.mid); n && reqs[*n].sent_ns) reqs[*n].empty_acked = true;
      }
      return;
    }
    if (m.type == Type::kCon) Ack(device, m.mid);
    if (m.token.len != 4) return;
    const uint64_t n = uint64_t{m.token.bytes[0]} << 24 | uint64_t{m.token.bytes[1]} << 16 |
                       uint64_t{m.token.bytes[2]} << 8 | m.token.bytes[3];
    if (n >= reqs.size() || DeviceOf(n) != device || !reqs[n].sent_ns) return;
    Req& r = reqs[n];
    if (r.code == 0) {  // the answer
      r.code = m.code;
      r.latency_us = static_cast<uint32_t>(std::min<uint64_t>((now - r.sent_ns) / 1000, UINT32_MAX));
      if (n >= phase_lo && n < phase_hi) OnSetupAnswer(n, m);
      if (n >= chain_lo && n < chain_hi) ++chain_done, chain_ok += code::Cls(m.code) == 2;
      if (n >= load_lo && load_lo) Release(n);  // (may grow reqs: r is not used after this)
      return;
    }
    if (r.kind != Kind::kObserve || !m.Find(opt::kObserve)) return;
    // A notification of the observation registered by request n.
    ++notifications;
    CborReader c{m.payload};
    const std::optional<uint64_t> v = c.FindUint("n");
    if (!v) return;
    if (mode == Mode::kFanout) {
      if (*v < fanout_sent_ns.size()) {
        notif_us.push_back(static_cast<uint32_t>((now - fanout_sent_ns[*v]) / 1000));
        ++fanout_count[*v];
      }
      return;
    }
    if (*v < reqs.size() && reqs[*v].sent_ns && *v >= load_lo) {
      notif_us.push_back(static_cast<uint32_t>((now - reqs[*v].sent_ns) / 1000));
    } else {
      ++stale;
    }
  }

  void OnSetupAnswer(uint64_t n, const Message& m) {
    ++done;
    if (reqs[n].kind == Kind::kOpen && m.code == code::kContent) {
      CborReader c{m.payload};
      if (auto s = c.FindText("s")) session[DeviceOf(n)] = *s;
      if (chain_hi) {  // the SDK pings right after its session opened
        chain_sent.push_back(n - phase_lo + chain_lo);
        SendNew(chain_sent.back());
      }
    }
    FillWindow();
  }

  // A load request leaves the closed loop's window: answered, or unanswered at its first
  // retransmission (a server that drops requests would otherwise stall the window).
  void Release(uint64_t n) {
    if (reqs[n].released) return;
    reqs[n].released = true;
    ++load_answered;
    TopUp();
  }

  // Closed loop: keeps `closed` load requests in flight while loading.
  void TopUp() {
    if (!closed || !loading || uv_hrtime() >= load_stop_ns) return;
    while (load_sent - load_answered < closed) {
      SendNew(Add(load_kind));
      ++load_sent;
    }
  }

  void FillWindow() {
    while (next < phase_hi && next - phase_lo - done < window) SendNew(next++);
  }

  // Retransmits what is due: at 2 s and 6 s after the first transmission, as the SDK does.
  // Requests are sent in number order; numbers never sent (fan-out's gaps) are passed over.
  void Retransmit(uint64_t lo) {
    const uint64_t now = uv_hrtime();
    for (auto [cursor, after] : {std::pair{&retry_cursor, kAckTimeoutNs}, std::pair{&retry2_cursor, kSecondRetryNs}}) {
      uint64_t& c = *cursor;
      for (c = std::max(c, lo); c <= last_sent && c < reqs.size(); ++c) {
        Req& r = reqs[c];
        if (!r.sent_ns || (c >= chain_lo && c < chain_hi)) continue;  // chained: RetransmitChain
        if (r.sent_ns + after > now) break;
        if (r.code || r.empty_acked) continue;
        ++r.retransmits;
        ++retransmissions;
        Transmit(c);
        if (closed && load_lo && c >= load_lo) Release(c);  // (may grow reqs: r is not used after)
      }
    }
  }

  // Retransmits chained requests that are due (in their send order, as Retransmit does).
  void RetransmitChain() {
    const uint64_t now = uv_hrtime();
    for (auto [cursor, after] : {std::pair{&chain_cursor, kAckTimeoutNs}, std::pair{&chain2_cursor, kSecondRetryNs}}) {
      for (size_t& c = *cursor; c < chain_sent.size(); ++c) {
        Req& r = reqs[chain_sent[c]];
        if (r.sent_ns + after > now) break;
        if (r.code || r.empty_acked) continue;
        ++r.retransmits;
        ++retransmissions;
        Transmit(chain_sent[c]);
      }
    }
  }

  // Runs one set-up phase: one request of `kind` per device, `window` at a time, until all are
  // answered or 8 s passed since the last answer (the SDK's retransmissions are at 2 and 6 s).
  // Returns the number answered 2.xx.
  size_t Setup(Kind kind, double* took_s, bool then_ping = false) {
    phase_lo = reqs.size();
    for (size_t d = 0; d < devices; ++d) Add(kind);
    phase_hi = reqs.size();
    if (then_ping) {
      chain_lo = reqs.size();
      for (size_t d = 0; d < devices; ++d) Add(Kind::kPing);
      chain_hi = reqs.size();
    }
    next = phase_lo;
    done = 0;
    const uint64_t t0 = uv_hrtime();
    FillWindow();
    uv_timer_t tick;
    uv_timer_init(loop, &tick);
    tick.data = this;
    uint64_t last_done = 0, last_progress = uv_hrtime();
    struct Ctx {
      Fleet* f;
      uint64_t* last_done;
      uint64_t* last_progress;
    } ctx{this, &last_done, &last_progress};
    tick.data = &ctx;
    uv_timer_start(&tick, [](uv_timer_t* t) {
      auto& c = *static_cast<Ctx*>(t->data);
      Fleet& f = *c.f;
      f.Retransmit(f.phase_lo);
      f.RetransmitChain();
      const uint64_t now = uv_hrtime();
      if (f.done + f.chain_done != *c.last_done) {
        *c.last_done = f.done + f.chain_done;
        *c.last_progress = now;
      }
      const bool all = f.done >= f.phase_hi - f.phase_lo && f.chain_done >= f.chain_sent.size();
      if (all || now - *c.last_progress > 8'000'000'000ull) uv_stop(t->loop);
    }, 5, 5);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_timer_stop(&tick);
    uv_close(reinterpret_cast<uv_handle_t*>(&tick), nullptr);
    uv_run(loop, UV_RUN_NOWAIT);
    *took_s = static_cast<double>(uv_hrtime() - t0) / 1e9;
    size_t ok = 0;
    for (uint64_t n = phase_lo; n < phase_hi; ++n) ok += code::Cls(reqs[n].code) == 2;
    phase_lo = phase_hi = 0;
    chain_lo = chain_hi = 0;
    return ok;
  }

  // Keeps acknowledging what arrives for `secs` seconds; `each_ms` runs every millisecond.
  template <typename F>
  void RunFor(double secs, F each_ms) {
    uv_timer_t tick;
    uv_timer_init(loop, &tick);
    const uint64_t until = uv_hrtime() + static_cast<uint64_t>(secs * 1e9);
    struct Ctx {
      F* fn;
      uint64_t until;
    } ctx{&each_ms, until};
    tick.data = &ctx;
    uv_timer_start(&tick, [](uv_timer_t* t) {
      auto& c = *static_cast<Ctx*>(t->data);
      (*c.fn)();
      if (uv_hrtime() >= c.until) uv_stop(t->loop);
    }, 1, 1);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_timer_stop(&tick);
    uv_close(reinterpret_cast<uv_handle_t*>(&tick), nullptr);
    uv_run(loop, UV_RUN_NOWAIT);
  }
};

int Usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s [--raw] [--server-pid PID] [--drain S] [--window N] [--closed N] [--pings N] HOST PORT DEVICES "
               "put|get|observe|fanout|idle|idle-observe RATE SECONDS\n",
               argv0);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  Fleet f;
  bool raw = false;
  size_t pings = 1;  // idle modes: pings per device within the set-up
  int a = 1;
  for (; a < argc && std::strncmp(argv[a], "--", 2) == 0; ++a) {
    const std::string flag = argv[a];
    if (flag == "--raw") raw = true;
    else if (flag == "--server-pid" && a + 1 < argc) f.server_pid = std::atoi(argv[++a]);
    else if (flag == "--drain" && a + 1 < argc) f.drain = std::atof(argv[++a]);
    else if (flag == "--window" && a + 1 < argc) f.window = std::strtoul(argv[++a], nullptr, 10);
    else if (flag == "--closed" && a + 1 < argc) f.closed = std::strtoull(argv[++a], nullptr, 10);
    else if (flag == "--pings" && a + 1 < argc) pings = std::strtoul(argv[++a], nullptr, 10);
    else return Usage(argv[0]);
  }
  if (argc - a != 6) return Usage(argv[0]);
  sockaddr_in server;
  if (uv_ip4_addr(argv[a], std::atoi(argv[a + 1]), &server) != 0) return Usage(argv[0]);
  f.devices = std::strtoul(argv[a + 2], nullptr, 10);
  const std::string mode = argv[a + 3];
  f.rate = std::strtoull(argv[a + 4], nullptr, 10);
  f.seconds = std::atof(argv[a + 5]);
  if (mode == "put") f.mode = Mode::kPut;
  else if (mode == "get") f.mode = Mode::kGet;
  else if (mode == "observe") f.mode = Mode::kObserve;
  else if (mode == "fanout") f.mode = Mode::kFanout;
  else if (mode == "idle") f.mode = Mode::kIdle;
  else if (mode == "idle-observe") f.mode = Mode::kIdleObserve;
  else return Usage(argv[0]);
  if (f.devices == 0 || f.devices > (1u << 24) || f.seconds <= 0 || f.window == 0) return Usage(argv[0]);
  f.loop = uv_default_loop();
  f.session.assign(f.devices, "00000000");  // a server without sessions: a token of the usual size
  const uint64_t load = static_cast<uint64_t>(static_cast<double>(f.rate) * f.seconds * 1.02) + 64;
  if ((3 + pings) * f.devices + load >= (1ull << 32)) return std::fprintf(stderr, "too many requests for 4-byte tokens\n"), 2;
  f.reqs.reserve((3 + pings) * f.devices + (f.mode == Mode::kFanout ? 0 : load));
  if (!f.net.Open(f.loop, server, f.devices, raw,
                  [&f](size_t device, std::span<const uint8_t> b) { f.OnDatagram(device, b); })) {
    return 1;
  }
  const ProcessMemory mem0 = ReadProcessMemory(f.server_pid);

  double open_s = 0, setup_s = 0;
  // Every device as the SDK leaves it: opened, then pinged at once.
  const bool idle = f.mode == Mode::kIdle || f.mode == Mode::kIdleObserve;
  const size_t opened = f.Setup(Kind::kOpen, &open_s, true);
  size_t set_up = 0;
  size_t pinged = f.chain_ok;
  // The SDK pings every 19-165 s, so a device has several pings within EXCHANGE_LIFETIME.
  for (size_t i = 1; idle && i < pings; ++i) {
    double took = 0;
    pinged += f.Setup(Kind::kPing, &took);
  }
  // Values to read or observe (a server may create resources only on PUT).
  if (f.mode == Mode::kGet || f.mode == Mode::kObserve) set_up = f.Setup(Kind::kPut, &setup_s);
  if (f.mode == Mode::kObserve || f.mode == Mode::kFanout || f.mode == Mode::kIdleObserve) {
    double took = 0;
    set_up = f.Setup(Kind::kObserve, &took);
    setup_s += took;
  }
  std::printf("mode=%s devices=%zu opened=%zu open_s=%.2f opens_per_s=%.0f set_up=%zu setup_s=%.2f", mode.c_str(),
              f.devices, opened, open_s, open_s > 0 ? static_cast<double>(opened) / open_s : 0.0, set_up, setup_s);
  if (f.mode == Mode::kIdle || f.mode == Mode::kIdleObserve) std::printf(" pinged=%zu", pinged);

  if (f.mode == Mode::kIdle || f.mode == Mode::kIdleObserve) {
    f.RunFor(2.0, [] {});  // let the server settle (commits, timers) before reading its memory
    const ProcessMemory mem1 = ReadProcessMemory(f.server_pid);
    const auto per = [&](long a0, long a1) { return a0 < 0 ? 0.0 : (a1 - a0) * 1024.0 / static_cast<double>(f.devices); };
    std::printf(" rss_anon_kb=%ld->%ld rss_file_kb=%ld->%ld anon_bytes_per_device=%.0f file_bytes_per_device=%.0f\n",
                mem0.anon_kb, mem1.anon_kb, mem0.file_kb, mem1.file_kb, per(mem0.anon_kb, mem1.anon_kb),
                per(mem0.file_kb, mem1.file_kb));
    std::fflush(stdout);
    f.RunFor(f.seconds, [] {});
    // Again after SECONDS of silence: past the exchange lifetime (247 s) a server no longer holds
    // the duplicate-reply entries of the set-up requests, only what an idle device costs.
    const ProcessMemory mem2 = ReadProcessMemory(f.server_pid);
    std::printf("after_s=%.0f anon_kb_after=%ld file_kb_after=%ld anon_bytes_per_device_after=%.0f "
                "file_bytes_per_device_after=%.0f\n",
                f.seconds, mem2.anon_kb, mem2.file_kb, per(mem0.anon_kb, mem2.anon_kb), per(mem0.file_kb, mem2.file_kb));
    return 0;
  }

  // ---- load ----
  f.load_lo = f.reqs.size();
  // Start at a request number of device 0, so devices take turns from the first.
  while (f.load_lo % f.devices) f.reqs.push_back(Req{}), ++f.load_lo;
  const ServerCpu cpu0 = ReadServerCpu(f.server_pid);
  f.load_start_ns = uv_hrtime();
  f.load_stop_ns = f.load_start_ns + static_cast<uint64_t>(f.seconds * 1e9);
  f.load_kind = f.mode == Mode::kGet ? Kind::kGet : Kind::kPut;
  if (f.mode == Mode::kFanout) f.closed = 0;
  f.loading = true;
  uint64_t& sent = f.load_sent;
  auto pace = [&] {
    const uint64_t now = uv_hrtime();
    f.Retransmit(f.load_lo);
    if (now >= f.load_stop_ns) return;
    if (f.closed) return f.TopUp();
    const uint64_t due = (now - f.load_start_ns) * f.rate / 1'000'000'000ull;
    if (f.mode == Mode::kFanout) {
      while (sent < due) {
        f.fanout_sent_ns.push_back(now);
        f.fanout_count.push_back(0);
        const uint64_t n = f.load_lo + f.devices * sent;  // device 0, message ID = change number
        while (f.reqs.size() <= n) f.reqs.push_back(Req{});
        f.reqs[n].kind = Kind::kPut;
        f.SendNew(n);
        ++sent;
      }
      return;
    }
    while (sent < due) {
      f.SendNew(f.Add(f.load_kind));
      ++sent;
    }
  };
  f.RunFor(f.seconds + f.drain, pace);
  f.loading = false;
  const ServerCpu cpu1 = ReadServerCpu(f.server_pid);

  uint64_t ok = 0, shed = 0, err = 0, lost = 0, retried = 0;
  std::vector<uint32_t> all, good;
  for (uint64_t n = f.load_lo; n < f.reqs.size(); ++n) {
    const Req& r = f.reqs[n];
    if (!r.sent_ns) continue;
    retried += r.retransmits > 0;
    if (!r.code) {
      ++lost;
      continue;
    }
    all.push_back(r.latency_us);
    if (code::Cls(r.code) == 2) ++ok, good.push_back(r.latency_us);
    else if (r.code == code::kServiceUnavailable) ++shed;
    else ++err;
  }
  const double cpu_s = cpu1.total() - cpu0.total();
  std::printf(" closed=%llu offered=%llu seconds=%.1f sent=%llu ok=%llu shed=%llu err=%llu lost=%llu retried=%llu goodput=%.0f"
              " p50_ms=%.3f p99_ms=%.3f max_ms=%.3f ok_p99_ms=%.3f",
              static_cast<unsigned long long>(f.closed),
              static_cast<unsigned long long>(f.closed ? sent / f.seconds : f.rate), f.seconds,
              static_cast<unsigned long long>(sent),
              static_cast<unsigned long long>(ok), static_cast<unsigned long long>(shed),
              static_cast<unsigned long long>(err), static_cast<unsigned long long>(lost),
              static_cast<unsigned long long>(retried), static_cast<double>(ok) / f.seconds, Pct(all, 0.5),
              Pct(all, 0.99), all.empty() ? 0.0 : *std::max_element(all.begin(), all.end()) / 1000.0,
              Pct(good, 0.99));
  if (f.mode == Mode::kObserve || f.mode == Mode::kFanout) {
    std::printf(" notifications=%llu notif_p50_ms=%.3f notif_p99_ms=%.3f notif_max_ms=%.3f",
                static_cast<unsigned long long>(f.notif_us.size()), Pct(f.notif_us, 0.5), Pct(f.notif_us, 0.99),
                f.notif_us.empty() ? 0.0 : *std::max_element(f.notif_us.begin(), f.notif_us.end()) / 1000.0);
  }
  if (f.mode == Mode::kFanout) {
    const uint32_t fewest = f.fanout_count.empty() ? 0 : *std::min_element(f.fanout_count.begin(), f.fanout_count.end());
    std::printf(" changes=%zu fewest_notified=%u", f.fanout_count.size(), fewest);
  }
  if (f.server_pid > 0) {
    const uint64_t units = f.mode == Mode::kFanout ? f.notif_us.size() : ok;
    std::printf(" srv_cpu_s=%.2f loop_cpu_s=%.2f writer_cpu_s=%.2f other_cpu_s=%.2f cpu_us_per_%s=%.1f", cpu_s,
                cpu1.loop - cpu0.loop, cpu1.writer - cpu0.writer, cpu1.other - cpu0.other,
                f.mode == Mode::kFanout ? "notification" : "ok", units ? cpu_s * 1e6 / static_cast<double>(units) : 0.0);
  }
  std::printf(" empty_acks=%llu resets=%llu send_drops=%llu\n", static_cast<unsigned long long>(f.empty_acks),
              static_cast<unsigned long long>(f.resets), static_cast<unsigned long long>(f.net.send_drops()));
  return 0;
}
