// Retransmission and duplicate detection across an in-process UDP shim that
// drops, duplicates and reorders datagrams in both directions.
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

#include <gtest/gtest.h>

#include <map>
#include <random>

#include "device_proto/endpoint.h"
#include "tests/device_proto/udp_harness.h"

using namespace tether::coap;
using namespace tether::coap::test;

namespace {

// client <-> [front | shim | back] <-> server. Forwards with faults.
class LossyShim {
 public:
  LossyShim(Address server, uint32_t seed) : server_(server), rng_(seed) {}
  Address front() const { return front_.address(); }

  void Step() {
    while (auto d = front_.TryRecv()) {
      client_ = d->second;
      Forward(back_, server_, std::move(d->first), held_up_);
    }
    while (auto d = back_.TryRecv()) {
      if (client_.port) Forward(front_, client_, std::move(d->first), held_down_);
    }
  }
  int dropped = 0, duplicated = 0, reordered = 0;

 private:
  void Forward(UdpSocket& via, const Address& to, Bytes b, std::optional<Bytes>& held) {
    const unsigned roll = rng_() % 100;
    if (roll < 25) {
      ++dropped;
      return;
    }
    if (roll < 45 && !held) {  // hold it back until the next datagram has passed
      ++reordered;
      held = std::move(b);
      return;
    }
    via.SendTo(to, b);
    if (roll < 60) {
      ++duplicated;
      via.SendTo(to, b);
    }
    if (held) {
      via.SendTo(to, *held);
      held.reset();
    }
  }

  UdpSocket front_, back_;
  Address server_, client_;
  std::mt19937 rng_;
  std::optional<Bytes> held_up_, held_down_;
};

class CountingHandler : public Handler {
 public:
  Endpoint* ep = nullptr;
  std::map<Bytes, int> seen;  // token -> upcalls
  ObserverId observer = 0;
  void OnRequest(const Request& r) override {
    auto t = r.message.token.view();
    int& n = seen[Bytes(t.begin(), t.end())];
    ++n;
    Response resp;
    resp.payload = r.payload;
    if (r.observe() == 0u) {
      observer = ep->RespondObserve(r.id, resp);
    } else if (r.payload.size() % 2 == 0) {
      ep->Respond(r.id, resp);  // piggybacked
    } else {
      pending.push_back(r.id);  // answered later: empty ACK + CON response
    }
  }
  std::vector<ExchangeId> pending;
  std::vector<DropReason> dropped;
  void OnObserverDropped(ObserverId, DropReason why) override { dropped.push_back(why); }
};

TEST(LossyLink, RetransmissionAndDedupDeliverEveryRequestOnce) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  CountingHandler h;
  EndpointOptions o;
  o.ack_timeout_ms = 30;
  o.ack_random_factor = 1.0;
  o.max_retransmit = 8;
  o.separate_ack_after_ms = 20;
  o.con_notify_every = 1;
  {
    Endpoint ep(&loop, h, o);
    h.ep = &ep;
    ASSERT_EQ(ep.Listen("127.0.0.1", 0), 0);
    Address server;
    server.family = AF_INET;
    server.ip[0] = 127, server.ip[3] = 1;
    server.port = ep.LocalPort();
    LossyShim shim(server, 1234);
    UdpSocket client;

    constexpr int kRequests = 40;
    int answered = 0;
    for (int i = 0; i < kRequests; ++i) {
      const Bytes token = {0x70, static_cast<uint8_t>(i)};
      Build req{.code = code::kPut, .mid = static_cast<uint16_t>(1000 + i), .token = token};
      req.Path("k");
      req.payload = Bytes(static_cast<size_t>(i % 3 + 1), 'p');  // odd sizes are answered late
      const Bytes wire = req.done();
      bool got = false;
      auto next_send = std::chrono::steady_clock::now();
      PumpUntil(&loop, [&] {
        shim.Step();
        if (std::chrono::steady_clock::now() >= next_send) {  // client-side CON retransmission
          client.SendTo(shim.front(), wire);
          next_send = std::chrono::steady_clock::now() + std::chrono::milliseconds(40);
        }
        for (ExchangeId id : h.pending) ep.Respond(id, Response{.payload = req.payload});
        h.pending.clear();
        while (auto d = client.TryRecv()) {
          auto p = MakePacket(std::move(d->first));
          EXPECT_TRUE(p->ok);
          EXPECT_LE(p->bytes.size(), o.max_datagram);
          if (p->m.type == Type::kCon) {  // separate response: acknowledge every copy
            client.SendTo(shim.front(), Build{.type = Type::kAck, .code = 0, .mid = p->m.mid, .token = {}}.done());
          }
          if (p->m.code != code::kEmpty && p->m.token == MakePacket(wire)->m.token) got = true;
        }
        return got;
      }, 5000);
      EXPECT_TRUE(got) << "request " << i;
      answered += got;
    }
    EXPECT_EQ(answered, kRequests);
    for (auto& [token, n] : h.seen) EXPECT_EQ(n, 1) << "token " << int(token[1]) << " handled " << n << " times";
    EXPECT_EQ(h.seen.size(), static_cast<size_t>(kRequests));
    EXPECT_GT(shim.dropped, 5);
    EXPECT_GT(shim.duplicated, 5);
    EXPECT_GT(shim.reordered, 5);
    EXPECT_GT(ep.counters().duplicates, 0u);
    EXPECT_GT(ep.counters().retransmissions, 0u);

    // Observe through the same link: every notification is CON; the newest one reaches the client.
    const Bytes otoken = {0x0B, 0x5E};
    const Bytes reg = Build{.mid = 2000, .token = otoken}.OptUint(opt::kObserve, 0).Path("obs").done();
    uint32_t best = 0;
    std::string last_payload;
    auto next_send = std::chrono::steady_clock::now();
    int notified = 0;
    PumpUntil(&loop, [&] {
      shim.Step();
      if (!h.observer && std::chrono::steady_clock::now() >= next_send) {
        client.SendTo(shim.front(), reg);
        next_send = std::chrono::steady_clock::now() + std::chrono::milliseconds(40);
      }
      if (h.observer && notified < 10) {
        const std::string v = "n" + std::to_string(++notified);
        ep.Notify(h.observer, Response{.payload = {reinterpret_cast<const uint8_t*>(v.data()), v.size()}});
      }
      while (auto d = client.TryRecv()) {
        auto p = MakePacket(std::move(d->first));
        if (p->m.type == Type::kCon)
          client.SendTo(shim.front(), Build{.type = Type::kAck, .code = 0, .mid = p->m.mid, .token = {}}.done());
        if (auto seq = p->m.UintOption(opt::kObserve); seq && *seq > best) {
          best = *seq;
          last_payload = p->payload();
        }
      }
      return last_payload == "n10";
    }, 10000);
    EXPECT_EQ(last_payload, "n10");
    // A duplicated registration that arrives after its answer is a re-registration (a GET keeps
    // no reply: RFC 7252 §4.5): the observer is replaced, never lost to a timeout or reset.
    for (DropReason why : h.dropped) EXPECT_EQ(why, DropReason::kReplaced);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  EXPECT_EQ(uv_loop_close(&loop), 0);
}

}  // namespace
