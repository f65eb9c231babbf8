// The engine with a trivial resource set, for bench/coap/run.sh.
//   coap_bench_server [ip] [port]    prints "PORT <n>"
// Any GET answers 2.05 with a short CBOR payload; PUT/POST/DELETE answer 2.04.
#include <uv.h>

#include <cstdio>
#include <cstdlib>

#include "device_proto/endpoint.h"

using namespace tether::coap;

namespace {

class BenchServer : public Handler {
 public:
  explicit BenchServer(uv_loop_t* loop) : ep(loop, *this) {}
  void on_request(const Request& r) override {
    static const uint8_t kSnapshot[] = {0xA1, 0x61, 0x62, 0x61, 0x78};  // {"b": "x"}
    Response resp;
    if (r.method() == code::kGet) {
      resp.payload = kSnapshot;
    } else {
      resp.code = code::kChanged;
    }
    ep.respond(r.id, resp);
  }
  Endpoint ep;
};

}  // namespace

int main(int argc, char** argv) {
  uv_loop_t* loop = uv_default_loop();
  BenchServer server(loop);
  if (int r = server.ep.listen(argc > 1 ? argv[1] : "127.0.0.1", static_cast<uint16_t>(argc > 2 ? std::atoi(argv[2]) : 0)); r) {
    std::fprintf(stderr, "listen: %s\n", uv_strerror(r));
    return 1;
  }
  std::printf("PORT %u\n", server.ep.local_port());
  std::fflush(stdout);
  uv_signal_t sig;
  uv_signal_init(loop, &sig);
  uv_signal_start(&sig, [](uv_signal_t* s, int) { uv_stop(s->loop); }, SIGTERM);
  uv_run(loop, UV_RUN_DEFAULT);
  const Counters c = server.ep.counters();
  std::fprintf(stderr, "in=%llu out=%llu dup=%llu malformed=%llu peers=%llu\n",
               static_cast<unsigned long long>(c.datagrams_in), static_cast<unsigned long long>(c.datagrams_out),
               static_cast<unsigned long long>(c.duplicates), static_cast<unsigned long long>(c.malformed),
               static_cast<unsigned long long>(c.peers));
  return 0;
}
