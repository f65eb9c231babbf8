// The engine's sockets as the kernel sees them: datagrams dropped for want of room in a receive
// queue (the loop did not read them in time) are counted, the drop episode is reported while
// drops go on (looked at each second, at housekeeping), and it ends after a quiet pause.
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#include <gtest/gtest.h>

#include "tests/device_proto/udp_harness.h"

using namespace tether::coap;
using namespace tether::coap::test;

namespace {

struct Counting : Handler {
  std::vector<ExchangeId> requests;
  void OnRequest(const Request& r) override { requests.push_back(r.id); }
};

// Sends more bytes than the receive buffer the kernel granted while the loop does not run: the
// queue fills and the kernel drops the rest. Not CoAP (version 0): the engine discards what it reads.
void Overfill(UdpSocket& from, const Address& to, uint64_t buffer_bytes) {
  const Bytes junk(1200, 0);
  for (uint64_t sent = 0; sent < 2 * buffer_bytes + (1u << 20); sent += junk.size()) from.SendTo(to, junk);
}

TEST(ReceiveQueue, KernelDropsAreCountedAndReportedWhileTheyGoOn) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  Counting h;
  {
    Endpoint ep(&loop, h);
    ASSERT_EQ(ep.Listen("127.0.0.1", 0), 0);
    uint64_t t = uv_now(&loop);
    ep.SetClock([&] { return t; });
    Address server;
    server.family = AF_INET;
    server.ip[0] = 127, server.ip[3] = 1;
    server.port = ep.LocalPort();

    const Counters before = ep.counters();
    EXPECT_GT(before.receive_buffer_bytes, 0u) << "SO_MEMINFO reads the granted buffer";
    EXPECT_EQ(before.receive_dropped, 0u);
    EXPECT_FALSE(ep.receive_dropping_for_ms());

    UdpSocket flood;
    Overfill(flood, server, before.receive_buffer_bytes);
    const uint64_t dropped = ep.counters().receive_dropped;
    EXPECT_GT(dropped, 0u) << "the queue was full: the kernel dropped the rest";
    EXPECT_FALSE(ep.receive_dropping_for_ms()) << "not looked at before housekeeping";

    t += 1000;  // housekeeping notices the drops: an episode starts
    ep.RunTimers();
    ASSERT_TRUE(ep.receive_dropping_for_ms());
    EXPECT_EQ(*ep.receive_dropping_for_ms(), 0u);

    // The loop reads the queue empty; a device is answered as before.
    PumpFor(&loop, 300);
    UdpSocket device;
    device.SendTo(server, Build{.mid = 7}.Path("a").done());
    std::optional<std::pair<Bytes, Address>> reply;
    ASSERT_TRUE(PumpUntil(&loop, [&] { return h.requests.size() == 1; }, 2000));
    ASSERT_TRUE(ep.Respond(h.requests[0], Response{}));
    ASSERT_TRUE(PumpUntil(&loop, [&] { return (reply = device.TryRecv()).has_value(); }, 2000));
    EXPECT_TRUE(MakePacket(reply->first)->ok);

    // Drops a second later: the same episode, one second long.
    Overfill(flood, server, before.receive_buffer_bytes);
    EXPECT_GT(ep.counters().receive_dropped, dropped);
    t += 1000;
    ep.RunTimers();
    ASSERT_TRUE(ep.receive_dropping_for_ms());
    EXPECT_EQ(*ep.receive_dropping_for_ms(), 1000u);
    PumpFor(&loop, 300);

    // No new drops: the episode lasts through a pause of up to kReceiveDropPauseMs, then ends.
    t += Endpoint::kReceiveDropPauseMs;
    ep.RunTimers();
    ASSERT_TRUE(ep.receive_dropping_for_ms());
    EXPECT_EQ(*ep.receive_dropping_for_ms(), 1000u + Endpoint::kReceiveDropPauseMs);
    t += 1000;
    ep.RunTimers();
    EXPECT_FALSE(ep.receive_dropping_for_ms());
  }
  uv_run(&loop, UV_RUN_NOWAIT);
  EXPECT_EQ(uv_loop_close(&loop), 0);
}

}  // namespace
