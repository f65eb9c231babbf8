// Replays the SDK's packets from traces/obs.log through the datagram seam and
// checks the engine answers byte-for-byte like the server the SDK accepted.
#include <gtest/gtest.h>

#include "device_proto/endpoint.h"
#include "tests/device_proto/udp_harness.h"

using namespace tether::coap;
using namespace tether::coap::test;

namespace {

Bytes Unhex(std::string_view s) {
  Bytes out;
  for (size_t i = 0; i + 1 < s.size(); i += 2) out.push_back(static_cast<uint8_t>(std::stoi(std::string(s.substr(i, 2)), nullptr, 16)));
  return out;
}

struct TraceHandler : Handler {
  Endpoint* ep = nullptr;
  ObserverId observer = 0;
  std::vector<DropReason> dropped;
  void OnRequest(const Request& r) override {
    static const Bytes kSession = Unhex(
        "a261736873486f5274313233616c78204c4c4c4c4c4c4c4c6f6e67746f6b656e30313233343536373839616263646566");
    static const Bytes kNull = {0xF6};
    auto path = r.uri_path();
    Response resp;
    if (path.at(0) == ".cs") resp.payload = kSession;
    if (path.at(0) == "a") resp.payload = kNull;
    if (r.observe() == 0u) {
      observer = ep->RespondObserve(r.id, resp);
    } else {
      ep->Respond(r.id, resp);
    }
  }
  void OnObserverDropped(ObserverId, DropReason why) override { dropped.push_back(why); }
};

TEST(TraceReplay, ObserveSessionMatchesTheWire) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  TraceHandler h;
  EndpointOptions o;
  o.con_notify_every = 1;  // the trace's notification is CON
  o.ack_timeout_ms = 50;
  o.ack_random_factor = 1.0;
  {
    Endpoint ep(&loop, h, o);
    h.ep = &ep;
    std::vector<Bytes> out;
    ep.set_transmit_hook([&](const Address&, std::span<const uint8_t> b) { out.emplace_back(b.begin(), b.end()); });
    Address sdk;
    sdk.family = AF_INET;
    sdk.ip = {192, 0, 2, 7};
    sdk.port = 38973;
    const std::pair<const char*, const char*> exchanges[] = {
        {"4402010001458b6b3d066d796170702e77696c64646f67696f2e636f6d832e637343763d32",
         "6445010001458b6bffa261736873486f5274313233616c78204c4c4c4c4c4c4c4c6f6e67746f6b656e30313233343536373839616263646566"},
        {"4401020002458b6b3d066d796170702e77696c64646f67696f2e636f6d310051614c2e63733d73486f5274313233",
         "6445020002458b6b6101fff6"},
        {"4401030003458b6b3d066d796170702e77696c64646f67696f2e636f6d852e70696e674c2e63733d73486f5274313233",
         "6445030003458b6b"},
    };
    for (auto [request, reply] : exchanges) {
      out.clear();
      ep.HandleDatagram(0, sdk, Unhex(request));
      ASSERT_EQ(out.size(), 1u);
      EXPECT_EQ(out[0], Unhex(reply));
    }
    // Notification: CON 2.05, Observe=2, payload "v0" (MID is ours to choose).
    out.clear();
    const Bytes v0 = {0x62, 0x76, 0x30};
    ASSERT_TRUE(ep.Notify(h.observer, Response{code::kContent, v0, {}, {}}));
    ASSERT_EQ(out.size(), 1u);
    Bytes expected = Unhex("44456e9602458b6b6102ff627630");
    expected[2] = out[0][2], expected[3] = out[0][3];
    EXPECT_EQ(out[0], expected);
    // The SDK's token-carrying empty ACK settles it: no retransmission follows.
    Bytes ack = Unhex("64006e9602458b6b");
    ack[2] = out[0][2], ack[3] = out[0][3];
    ep.HandleDatagram(0, sdk, ack);
    out.clear();
    PumpFor(&loop, 200);
    EXPECT_TRUE(out.empty());
    EXPECT_EQ(ep.counters().retransmissions, 0u);
    EXPECT_EQ(ep.counters().malformed, 0u);
    EXPECT_TRUE(h.dropped.empty());
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  EXPECT_EQ(uv_loop_close(&loop), 0);
}

}  // namespace
