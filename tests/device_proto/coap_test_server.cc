// A CoAP server on the engine for interop tests and benchmarks.
//   coap_test_server [ip] [port] [notify_ms]     prints "PORT <n>" once bound.
// Resources: /echo (PUT stores, GET returns; Block1 for large PUTs),
// /counter (observable, ticks every notify_ms), /large (3000 bytes, Block2),
// /slow (answered after 1.5 s: empty ACK + separate response).
#include <uv.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <unordered_map>

#include "device_proto/endpoint.h"

using namespace tether::coap;

namespace {

std::span<const uint8_t> AsBytes(const std::string& s) { return {reinterpret_cast<const uint8_t*>(s.data()), s.size()}; }

class TestServer : public Handler {
 public:
  explicit TestServer(uv_loop_t* loop) : ep_(loop, *this) {
    for (int i = 0; i < 3000; ++i) large_.push_back(static_cast<char>('A' + i % 26));
  }
  Endpoint& endpoint() { return ep_; }

  void OnRequest(const Request& r) override {
    std::string path;
    for (auto seg : r.uri_path()) path += "/" + std::string(seg);
    ep_.AllowUnaskedBlocks(r.id);  // libcoap and node-coap reassemble server-chosen Block2
    Response resp;
    if (path == "/echo") {
      if (r.method() == code::kPut || r.method() == code::kPost) {
        echo_.assign(r.payload.begin(), r.payload.end());
        resp.code = code::kChanged;
      } else {
        resp.payload = AsBytes(echo_);
      }
    } else if (path == "/counter" && r.method() == code::kGet) {
      counter_text_ = std::to_string(counter_);
      resp.payload = AsBytes(counter_text_);
      if (r.observe() == 0u) {
        observers_[ep_.RespondObserve(r.id, resp)] = true;
        return;
      }
    } else if (path == "/large") {
      resp.payload = AsBytes(large_);
    } else if (path == "/slow") {
      slow_.push_back(r.id);
      return;
    } else {
      resp.code = code::kNotFound;
    }
    ep_.Respond(r.id, resp);
  }

  void OnObserverDropped(ObserverId id, DropReason) override { observers_.erase(id); }

  void Tick() {
    ++counter_;
    counter_text_ = std::to_string(counter_);
    Response resp;
    resp.payload = AsBytes(counter_text_);
    for (auto& [id, _] : observers_) ep_.Notify(id, resp);
  }

  void AnswerSlow() {
    static const std::string kSlow = "slow done";
    Response resp;
    resp.payload = AsBytes(kSlow);
    for (ExchangeId id : slow_) ep_.Respond(id, resp);
    slow_.clear();
  }

 private:
  Endpoint ep_;
  std::string echo_ = "initial";
  std::string large_;
  std::string counter_text_;
  uint64_t counter_ = 0;
  std::unordered_map<ObserverId, bool> observers_;
  std::vector<ExchangeId> slow_;
};

}  // namespace

int main(int argc, char** argv) {
  const char* ip = argc > 1 ? argv[1] : "127.0.0.1";
  const int port = argc > 2 ? std::atoi(argv[2]) : 0;
  const uint64_t notify_ms = argc > 3 ? std::strtoull(argv[3], nullptr, 10) : 200;
  uv_loop_t* loop = uv_default_loop();
  TestServer server(loop);
  if (int r = server.endpoint().Listen(ip, static_cast<uint16_t>(port)); r != 0) {
    std::fprintf(stderr, "listen %s:%d: %s\n", ip, port, uv_strerror(r));
    return 1;
  }
  std::printf("PORT %u\n", server.endpoint().LocalPort());
  std::fflush(stdout);

  uv_timer_t ticker, slow;
  uv_timer_init(loop, &ticker);
  ticker.data = &server;
  uv_timer_start(&ticker, [](uv_timer_t* t) { static_cast<TestServer*>(t->data)->Tick(); }, notify_ms, notify_ms);
  uv_timer_init(loop, &slow);
  slow.data = &server;
  uv_timer_start(&slow, [](uv_timer_t* t) { static_cast<TestServer*>(t->data)->AnswerSlow(); }, 1500, 1500);
  uv_signal_t sigterm, sigint;
  for (auto [sig, h] : {std::pair{SIGTERM, &sigterm}, std::pair{SIGINT, &sigint}}) {
    uv_signal_init(loop, h);
    uv_signal_start(h, [](uv_signal_t* s, int) { uv_stop(s->loop); }, sig);
  }
  uv_run(loop, UV_RUN_DEFAULT);
  return 0;
}
