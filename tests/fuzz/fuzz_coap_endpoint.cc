// Drives the endpoint's datagram dispatcher without sockets, on a fake clock
// (Endpoint::SetClock) so time-driven paths run: separate ACKs, CON
// retransmission and give-up, exchange expiry, duplicate/peer housekeeping.
// Input framing:
//   op < 0xF0: datagram from peer (op & 3), 2-byte big-endian length, bytes
//   0xF0 answer the oldest pending exchange   0xF1 notify every observer
//   0xF2 fire due timers                      0xF3 cancel the oldest observer
//   0xF4 t: advance the clock by t*37 ms and fire due timers
//   0xF5 p: move the oldest observer to peer (p & 3)
//   0xF6 the oldest pending exchange opens a new binding
//   0xF7 toggle whether new exchanges may start Block2 unasked
//   0xF8 re-create the oldest observer from its state (RestoreObserver)
// Invariants: no crash or sanitizer report; every datagram the engine emits
// is at most max_datagram bytes and parses (the SDK's quirks are inputs only).
#include <uv.h>

#include <cstdlib>
#include <deque>
#include <string>

#include "device_proto/endpoint.h"

using namespace tether::coap;

namespace {

Address peer_address(uint8_t n) {
  Address a;
  a.family = AF_INET;
  a.ip = {10, 0, 0, static_cast<uint8_t>(n & 3)};
  a.port = 5683;
  return a;
}

struct FuzzHandler : Handler {
  Endpoint* ep = nullptr;
  bool unasked_blocks = true;
  std::deque<ExchangeId> pending;
  std::deque<ObserverId> observers;
  void OnRequest(const Request& r) override {
    const size_t mode = r.payload.size() % 4;
    Response resp;
    resp.payload = r.payload;
    if (unasked_blocks) ep->AllowUnaskedBlocks(r.id);
    if (r.observe() == 0u) {
      if (ObserverId id = ep->RespondObserve(r.id, resp)) observers.push_back(id);
    } else if (mode == 0) {
      ep->Respond(r.id, resp);
    } else {
      pending.push_back(r.id);
    }
  }
  void OnObserverDropped(ObserverId, DropReason) override {}
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static uv_loop_t* loop = [] {
    auto* l = new uv_loop_t;
    uv_loop_init(l);
    return l;
  }();
  EndpointOptions opts;
  opts.max_datagram = 300;  // small, so block-wise paths run often
  opts.max_block1_body = 2000;
  FuzzHandler h;
  uint64_t now_ms = uv_now(loop);  // the engine scheduled housekeeping on uv_now()
  {
    Endpoint ep(loop, h, opts);
    h.ep = &ep;
    ep.SetClock([&] { return now_ms; });
    ep.set_transmit_hook([&](const Address&, std::span<const uint8_t> out) {
      Message m;
      if (out.size() > opts.max_datagram || !Parse(out, m).ok()) std::abort();
    });
    std::string big(1000, 'b');
    size_t i = 0;
    while (i < size) {
      const uint8_t op = data[i++];
      if (op < 0xF0) {
        if (i + 2 > size) break;
        size_t len = size_t{data[i]} << 8 | data[i + 1];
        i += 2;
        len = std::min(len, size - i);
        ep.HandleDatagram(0, peer_address(op), {data + i, len});
        i += len;
      } else if (op == 0xF0 && !h.pending.empty()) {
        Response r;
        r.payload = {reinterpret_cast<const uint8_t*>(big.data()), h.pending.size() * 97 % big.size()};
        ep.Respond(h.pending.front(), r);
        h.pending.pop_front();
      } else if (op == 0xF1) {
        for (ObserverId id : h.observers) {
          Response r;
          r.payload = {reinterpret_cast<const uint8_t*>(big.data()), id * 131 % big.size()};
            ep.Notify(id, r);
        }
      } else if (op == 0xF2) {
        ep.RunTimers();
      } else if (op == 0xF3 && !h.observers.empty()) {
        ep.CancelObserver(h.observers.front());
        h.observers.pop_front();
      } else if (op == 0xF4 && i < size) {
        now_ms += uint64_t{data[i++]} * 37;
        ep.RunTimers();
      } else if (op == 0xF5 && i < size) {
        const uint8_t p = data[i++];
        if (!h.observers.empty()) ep.MoveObserver(h.observers.front(), peer_address(p));
      } else if (op == 0xF6 && !h.pending.empty()) {
        ep.NewBinding(h.pending.front());
      } else if (op == 0xF7) {
        h.unasked_blocks = !h.unasked_blocks;
      } else if (op == 0xF8 && !h.observers.empty()) {
        if (auto st = ep.ObserverStateOf(h.observers.front())) {
          h.observers.pop_front();
          st->seq += 1u << 22;
          h.observers.push_back(ep.RestoreObserver(*st));
        }
      }
    }
  }
  uv_run(loop, UV_RUN_NOWAIT);  // releases the closed handles
  return 0;
}
