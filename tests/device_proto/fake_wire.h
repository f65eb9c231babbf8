// FakeWire: an Endpoint driven entirely by the test, for engine mechanics that depend on time
// and on many peers: datagrams go in through HandleDatagram from any address, everything the
// engine sends is recorded (no socket is read), and time is a fake clock advanced by the test
// (timers fire in Advance). Single-threaded; one per test.
#pragma once

#include <uv.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "device_proto/endpoint.h"
#include "tests/device_proto/udp_harness.h"

namespace tether::coap::test {

// 10.<a>.<b>.<c>:5683 for the n-th test peer.
inline Address PeerAddress(uint32_t n, uint16_t port = 5683) {
  Address a;
  a.family = AF_INET;
  a.ip = {10, static_cast<uint8_t>(n >> 16), static_cast<uint8_t>(n >> 8), static_cast<uint8_t>(n)};
  a.port = port;
  return a;
}

class FakeWire : public Handler {
 public:
  struct Sent {
    Address to;
    Bytes bytes;
    std::unique_ptr<Packet> packet() const { return MakePacket(bytes, to); }
  };

  explicit FakeWire(EndpointOptions o) : options(o) {
    uv_loop_init(&loop_);
    ep = std::make_unique<Endpoint>(&loop_, *this, o);
    ep->Listen("127.0.0.1", 0);  // socket 0 exists; the hook replaces its transmissions
    now_ms = uv_now(&loop_);
    ep->SetClock([this] { return now_ms; });
    ep->set_transmit_hook([this](const Address& to, std::span<const uint8_t> b) {
      sent.push_back({to, Bytes(b.begin(), b.end())});
    });
  }
  ~FakeWire() override {
    ep.reset();
    uv_run(&loop_, UV_RUN_DEFAULT);
    uv_loop_close(&loop_);
  }

  void Receive(const Address& from, const Bytes& datagram) { ep->HandleDatagram(0, from, datagram); }
  // The SDK's ACK of a CON (an empty ACK that carries the token).
  void Ack(const Address& from, uint16_t mid) {
    Receive(from, Build{.type = Type::kAck, .code = code::kEmpty, .mid = mid, .token = {}}.done());
  }
  void Advance(uint64_t ms) {
    now_ms += ms;
    ep->RunTimers();
  }
  // Datagrams sent to `to` since the start (or since Clear()).
  std::vector<const Sent*> To(const Address& to) const {
    std::vector<const Sent*> out;
    for (const Sent& s : sent)
      if (s.to == to) out.push_back(&s);
    return out;
  }

  // Handler: GETs with Observe 0 register (payload "v0"); other requests wait for the test.
  void OnRequest(const Request& r) override {
    if (r.observe() == 0u) {
      static const uint8_t kFirst[] = {'v', '0'};
      observers.push_back(ep->RespondObserve(r.id, Response{.payload = kFirst}));
      return;
    }
    requests.push_back(r.id);
    verified_requests.push_back(r.peer_verified);
    if (on_plain_request) on_plain_request(r);
  }
  void OnObserverDropped(ObserverId id, DropReason why) override { dropped.emplace_back(id, why); }

  // Registers an observation of "/x" from `peer` with token `token`; returns its id.
  ObserverId Observe(const Address& peer, uint8_t token, uint16_t mid = 1) {
    Receive(peer, Build{.mid = mid, .token = {token}}.OptUint(opt::kObserve, 0).Path("x").done());
    return observers.empty() ? 0 : observers.back();
  }
  bool Notify(ObserverId id, const std::string& body) {
    return ep->Notify(id, Response{.payload = {reinterpret_cast<const uint8_t*>(body.data()), body.size()}});
  }

  EndpointOptions options;
  uint64_t now_ms = 0;
  std::unique_ptr<Endpoint> ep;
  std::vector<Sent> sent;
  std::vector<ObserverId> observers;
  std::vector<ExchangeId> requests;
  std::vector<bool> verified_requests;
  std::vector<std::pair<ObserverId, DropReason>> dropped;
  std::function<void(const Request&)> on_plain_request;

 private:
  uv_loop_t loop_;
};

}  // namespace tether::coap::test
