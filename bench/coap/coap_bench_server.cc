// The engine with a trivial resource set, for bench/coap/run.sh, run-dtls.sh and run-notify.sh.
//   coap_bench_server [ip] [port] [--dtls KEY [MAX_LIVE] | --observe HZ]    prints "PORT <n>"
// Any GET answers 2.05 with a short CBOR payload; PUT/POST/DELETE answer 2.04. A GET with Observe 0
// also registers an observer of its Uri-Path, and a PUT notifies that path's observers with its
// payload (bench/gateway/run-e2e.sh's engine-alone baseline). With --dtls the
// socket speaks DTLS-PSK (any identity, KEY; sessions sleep after 2 s idle; no per-source hello
// limit, since the whole fleet is one host). With --observe a GET with Observe 0 registers an
// observer, and HZ times a second every observer is notified of a new state: 8 bytes, the
// CLOCK_MONOTONIC nanoseconds (uv_hrtime) at which the state changed, so a client on the same
// host measures notification latency without a lookup.
#include <uv.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <unordered_map>
#include <vector>

#include "device_proto/endpoint.h"

using namespace tether::coap;

namespace {

class BenchServer : public Handler {
 public:
  explicit BenchServer(uv_loop_t* loop) : ep(loop, *this) {}
  void OnRequest(const Request& r) override {
    static const uint8_t kSnapshot[] = {0xA1, 0x61, 0x62, 0x61, 0x78};  // {"b": "x"}
    Response resp;
    if (r.method() == code::kGet && r.observe() == 0u && observing) {
      const uint64_t now = uv_hrtime();
      resp.payload = {reinterpret_cast<const uint8_t*>(&now), sizeof now};
      if (ObserverId id = ep.RespondObserve(r.id, resp)) observers.push_back(id);
      return;
    }
    if (r.method() == code::kGet) {
      resp.payload = kSnapshot;
      if (r.observe() == 0u) {
        if (ObserverId id = ep.RespondObserve(r.id, resp)) {
          const uint64_t key = PathKey(r);
          by_path[key].push_back(id);
          path_of[id] = key;
        }
        return;
      }
    } else {
      resp.code = code::kChanged;
    }
    ep.Respond(r.id, resp);
    if (r.method() == code::kPut && !by_path.empty()) {
      auto it = by_path.find(PathKey(r));
      if (it == by_path.end()) return;
      Response n;
      n.payload = r.payload;
      for (ObserverId id : it->second) ep.Notify(id, n);
    }
  }
  void OnObserverDropped(ObserverId id, DropReason) override {
    std::erase(observers, id);
    if (auto it = path_of.find(id); it != path_of.end()) {
      std::erase(by_path[it->second], id);
      path_of.erase(it);
    }
  }
  static uint64_t PathKey(const Request& r) {
    uint64_t h = 1469598103934665603ull;
    for (std::string_view seg : r.uri_path()) {
      for (char ch : seg) h = (h ^ static_cast<uint8_t>(ch)) * 1099511628211ull;
      h = (h ^ '/') * 1099511628211ull;
    }
    return h;
  }
  void NotifyAll() {  // one state change of the observed resource
    const uint64_t now = uv_hrtime();
    Response resp;
    resp.payload = {reinterpret_cast<const uint8_t*>(&now), sizeof now};
    for (size_t i = 0; i < observers.size(); ++i) ep.Notify(observers[i], resp);
  }
  Endpoint ep;
  bool observing = false;
  std::vector<ObserverId> observers;                                  // --observe HZ
  std::unordered_map<uint64_t, std::vector<ObserverId>> by_path;      // observers by Uri-Path
  std::unordered_map<ObserverId, uint64_t> path_of;
};

}  // namespace

int main(int argc, char** argv) {
  uv_loop_t* loop = uv_default_loop();
  BenchServer server(loop);
  const char* ip = argc > 1 ? argv[1] : "127.0.0.1";
  const auto port = static_cast<uint16_t>(argc > 2 ? std::atoi(argv[2]) : 0);
  int r = 0;
  if (argc > 4 && std::strcmp(argv[3], "--dtls") == 0) {
    DtlsOptions o;
    o.sleep_after_ms = 2000;
    o.hellos_per_second = 0;
    if (argc > 5) o.max_live = std::strtoul(argv[5], nullptr, 10);
    const std::string key = argv[4];
    r = server.ep.ListenDtls(ip, port, o, [key](std::string_view) { return std::optional<std::string>(key); });
  } else {
    r = server.ep.Listen(ip, port);
  }
  uv_timer_t ticks;
  uv_timer_init(loop, &ticks);
  if (argc > 4 && std::strcmp(argv[3], "--observe") == 0) {
    const double hz = std::atof(argv[4]);
    server.observing = true;
    ticks.data = &server;
    uv_timer_start(&ticks, [](uv_timer_t* t) { static_cast<BenchServer*>(t->data)->NotifyAll(); }, 1,
                   static_cast<uint64_t>(hz > 0 ? 1000.0 / hz : 1000.0));
    uv_unref(reinterpret_cast<uv_handle_t*>(&ticks));
  }
  if (r) {
    std::fprintf(stderr, "listen: %s\n", uv_strerror(r));
    return 1;
  }
  std::printf("PORT %u\n", server.ep.LocalPort());
  std::fflush(stdout);
  uv_signal_t sig;
  uv_signal_init(loop, &sig);
  uv_signal_start(&sig, [](uv_signal_t* s, int) { uv_stop(s->loop); }, SIGTERM);
  uv_run(loop, UV_RUN_DEFAULT);
  const Counters c = server.ep.counters();
  const DtlsCounters d = server.ep.dtls_counters();
  std::fprintf(stderr, "dtls handshakes=%llu failed=%llu slept=%llu woken=%llu\n",
               static_cast<unsigned long long>(d.handshakes_ok), static_cast<unsigned long long>(d.handshakes_failed),
               static_cast<unsigned long long>(d.sessions_slept), static_cast<unsigned long long>(d.sessions_woken));
  std::fprintf(stderr, "in=%llu out=%llu dup=%llu malformed=%llu peers=%llu retransmissions=%llu observers=%zu\n",
               static_cast<unsigned long long>(c.datagrams_in), static_cast<unsigned long long>(c.datagrams_out),
               static_cast<unsigned long long>(c.duplicates), static_cast<unsigned long long>(c.malformed),
               static_cast<unsigned long long>(c.peers), static_cast<unsigned long long>(c.retransmissions),
               server.observers.size());
  return 0;
}
