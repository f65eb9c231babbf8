// Scale: 100k peers through the datagram seam (no sockets). Checks memory per
// idle peer (≤ 1 KB including its cached reply) and that idle state is
// evicted after EXCHANGE_LIFETIME.
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

#include <gtest/gtest.h>
#include <malloc.h>

#include <chrono>
#include <thread>

#include "device_proto/endpoint.h"
#include "tests/device_proto/udp_harness.h"

using namespace tether::coap;
using namespace tether::coap::test;

namespace {

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kMallocStatsUsable = false;  // ASan's allocator bypasses mallinfo2
#else
constexpr bool kMallocStatsUsable = true;
#endif

struct NullHandler : Handler {
  Endpoint* ep = nullptr;
  void OnRequest(const Request& r) override {
    static const uint8_t kNull[] = {0xF6};
    ep->Respond(r.id, Response{.payload = kNull});
  }
};

TEST(Scale, HundredThousandPeersStayUnderOneKilobyteEach) {
  constexpr uint32_t kPeers = 100000;
  uv_loop_t loop;
  uv_loop_init(&loop);
  NullHandler h;
  EndpointOptions o;
  o.exchange_lifetime_ms = 1500;
  {
    Endpoint ep(&loop, h, o);
    h.ep = &ep;
    size_t sent = 0;
    ep.set_transmit_hook([&](const Address&, std::span<const uint8_t>) { ++sent; });
    // A typical SDK data request: CON GET with Uri-Host, Uri-Path, Uri-Query and a 4-byte token.
    Build req{.mid = 256, .token = {1, 0x45, 0x8b, 0x6b}};
    req.Opt(opt::kUriHost, BytesOf("myapp.wilddogio.com")).Path("a").Opt(opt::kUriQuery, BytesOf(".cs=sHoRt123"));
    const Bytes wire = req.done();

    malloc_trim(0);
    const size_t before = mallinfo2().uordblks;
    const auto t0 = std::chrono::steady_clock::now();
    for (uint32_t i = 0; i < kPeers; ++i) {
      Address a;
      a.family = AF_INET;
      a.ip = {10, static_cast<uint8_t>(i >> 16), static_cast<uint8_t>(i >> 8), static_cast<uint8_t>(i)};
      a.port = static_cast<uint16_t>(40000 + i % 1000);
      ep.HandleDatagram(0, a, wire);
    }
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const size_t after = mallinfo2().uordblks;
    EXPECT_EQ(sent, kPeers);
    EXPECT_EQ(ep.counters().peers, kPeers);
    const double per_peer = (static_cast<double>(after) - static_cast<double>(before)) / kPeers;
    std::printf("peers=%u  %.0f bytes/peer (a GET: no reply kept once answered)  %.2f us/datagram\n", kPeers, per_peer,
                secs * 1e6 / kPeers);
    if (kMallocStatsUsable) {
      EXPECT_LT(per_peer, 1024.0);
    }

    // Everything is idle: after EXCHANGE_LIFETIME peers and cached replies are gone.
    std::this_thread::sleep_for(std::chrono::milliseconds(o.exchange_lifetime_ms + 100));
    for (int i = 0; i < 30 && ep.counters().peers > 0; ++i) {  // eviction is bounded per tick
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      uv_update_time(&loop);
      ep.RunTimers();
      uv_run(&loop, UV_RUN_NOWAIT);
    }
    EXPECT_EQ(ep.counters().dedup_entries, 0u);
    EXPECT_EQ(ep.counters().peers, 0u);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  EXPECT_EQ(uv_loop_close(&loop), 0);
}

}  // namespace
