// Issue 16.1: peer-table exhaustion. 200,500 spoofed 4-byte datagrams in 2.9 s filled the
// engine's 200,000-entry peer table and every new source was then ignored for ~4 minutes: new
// devices' POST /.cs, a DTLS device after its handshake, a known device after a port change.
// Here: spoofed sources at 40,000/s until the table is full (~5 s), then, while the flood goes
// on, each of those must be answered within a second. Labelled slow: the flood is too much for the sanitizer build.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdio>
#include <thread>

#include "tests/integration/sdk_client.h"
#include "tests/integration/spoofed_udp.h"
#include "tests/security/attack_gateway.h"

namespace tether::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

const std::string kEmptyCon("\x40\x00\x12\x34", 4);  // a CoAP ping: 4 bytes, answered with RST

// Sends an empty CON from `count` distinct spoofed sources starting at `first`, `per_ms` a
// millisecond (the daemon's socket buffer must not overflow: each source has to reach it).
void Flood(uint16_t port, uint32_t first, uint32_t count, int per_ms, const std::atomic<bool>* stop = nullptr) {
  SpoofedUdp spoof;
  const auto start = Clock::now();
  for (uint32_t i = 0; i < count && !(stop && *stop); ++i) {
    spoof.Send(SpoofedUdp::LoopbackSource(first + i), 40000, "127.0.0.1", port, kEmptyCon);
    if (i % static_cast<uint32_t>(per_ms) == 0) std::this_thread::sleep_until(start + std::chrono::milliseconds(i / per_ms));
  }
}

TEST(PeerFlood, NewDevicesAreAnsweredWithinASecondWhileSpoofedSourcesFillThePeerTable) {
  AttackGateway gw;
  gw.Start("", "", /*dtls=*/true, "sensor-1: key-one-secret\n");
  SdkClient known(gw.port());
  ASSERT_TRUE(known.Open());
  ASSERT_EQ(known.Ping().CodeString(), "2.05");

  // More sources than the table holds (200,000), until it is full (as far as /metrics tells).
  uint32_t sent = 0;
  while (sent < 400000 && gw.Metric("tether_coap_peers{state=\"unverified\"}") < 199000) {
    Flood(gw.port(), sent, 20000, 40);
    sent += 20000;
  }
  Background more;  // and it goes on
  more.Run([&, sent] { Flood(gw.port(), sent, 2000000, 20, &more.stop); });

  // A new device opens a session.
  SdkClient fresh(gw.port());
  fresh.set_timeout(1s);
  auto t0 = Clock::now();
  EXPECT_TRUE(fresh.Open()) << "a new device during the flood";
  EXPECT_LT(Clock::now() - t0, 1s);
  EXPECT_EQ(fresh.Ping().CodeString(), "2.05");
  // A known device after a port change (the SDK's new socket, then /.rst).
  known.set_timeout(1s);
  known.NewSourcePort();
  t0 = Clock::now();
  EXPECT_EQ(known.Rebind().CodeString(), "2.05") << "a known device from a new port";
  EXPECT_EQ(known.Ping().CodeString(), "2.05");
  EXPECT_LT(Clock::now() - t0, 1s);
  // A DTLS device: handshake, then its first request.
  UdpDtlsClient dtls("127.0.0.1", gw.dtls_port(), "sensor-1", "key-one-secret", 1000ms);
  ASSERT_TRUE(dtls.Handshake());
  ASSERT_TRUE(dtls.Write(CoapRequest(2, 0x0101, "dtls", {".cs"})));
  const std::optional<std::string> reply = dtls.Read();
  ASSERT_TRUE(reply.has_value()) << "a DTLS device after its handshake";
  ASSERT_GE(reply->size(), 4u);
  EXPECT_EQ(static_cast<uint8_t>((*reply)[1]), 0x45) << "2.05";

  more.stop = true;
  std::printf("peer table: %.0f unverified, %.0f verified, %.0f evicted, %.0f refused\n",
              gw.Metric("tether_coap_peers{state=\"unverified\"}"), gw.Metric("tether_coap_peers{state=\"verified\"}"),
              gw.Metric("tether_coap_peers_dropped_total{reason=\"evicted\"}"),
              gw.Metric("tether_coap_peers_dropped_total{reason=\"refused\"}"));
  EXPECT_GT(gw.Metric("tether_coap_peers_dropped_total{reason=\"evicted\"}"), 0) << "the table was full";
  EXPECT_GE(gw.Metric("tether_coap_peers{state=\"verified\"}"), 3) << "the devices, the DTLS peer";
}

}  // namespace
}  // namespace tether::testing
