// Per-session caps (issue 16.6) against the real tetherd: one session registered 4,000 observations
// and 20,000 onDisconnect operations of 500 B, all accepted. Required: the defaults refuse beyond
// 256 observations and 256 operations (and a configured byte total) with 4.03 and a diagnostic
// naming the key, counted in /metrics; re-registering what the session has, or freeing a place,
// keeps working; other sessions are not affected.
#include <gtest/gtest.h>

#include <string>

#include "tests/integration/sdk_client.h"
#include "tests/security/attack_gateway.h"

namespace tether::testing {
namespace {

std::string CborBytes(size_t n) {  // a byte string of n bytes (n < 65536)
  std::string s = {static_cast<char>(0x59), static_cast<char>(n >> 8), static_cast<char>(n & 0xff)};
  return s + std::string(n, 'x');
}

// The SDK's tokens count up in their first byte, so it never holds more than 256 observations with
// distinct tokens: the default cap is exactly that.
TEST(SessionCaps, ObservationsPerSessionAreCappedByDefault) {
  AttackGateway gw;
  gw.Start();
  SdkClient dev(gw.port());
  ASSERT_TRUE(dev.Open());
  for (int i = 0; i < 256; ++i) ASSERT_EQ(dev.Observe("o/" + std::to_string(i)).CodeString(), "2.05") << i;
  const CoapReply over = dev.Observe("o/256");
  EXPECT_EQ(over.CodeString(), "4.03");
  EXPECT_NE(over.payload.find("device.max_observers_per_session"), std::string::npos) << over.payload;
  EXPECT_FALSE(over.observe) << "nothing registered";
  EXPECT_EQ(gw.Metric("tether_session_limit_refused_total{limit=\"observers\"}"), 1);
}

// (A cap below 256 here: the test client's tokens, like the SDK's, repeat after 256 requests.)
TEST(SessionCaps, AtTheObservationCapReplacingAndFreeingStillWork) {
  AttackGateway gw;
  gw.Start("  max_observers_per_session: 16\n");
  SdkClient dev(gw.port()), other(gw.port());
  ASSERT_TRUE(dev.Open());
  ASSERT_TRUE(other.Open());
  for (int i = 0; i < 16; ++i) ASSERT_EQ(dev.Observe("o/" + std::to_string(i)).CodeString(), "2.05") << i;
  EXPECT_EQ(dev.Observe("o/16").CodeString(), "4.03");
  EXPECT_EQ(dev.Request(1, "o/16", "", {"orderBy=$key"}, 0u).CodeString(), "4.03") << "queries count too";
  EXPECT_EQ(dev.Observe("o/7").CodeString(), "2.05") << "observing a path again replaces, it does not add";
  EXPECT_EQ(dev.Unobserve("o/0").CodeString(), "2.05");
  EXPECT_EQ(dev.Observe("o/16").CodeString(), "2.05") << "a place was freed";
  EXPECT_EQ(dev.Observe("o/17").CodeString(), "4.03");
  EXPECT_EQ(other.Observe("o/1").CodeString(), "2.05") << "the cap is per session";
  EXPECT_EQ(dev.Get("o/300").CodeString(), "2.05") << "plain reads are not capped";
  EXPECT_EQ(gw.Metric("tether_session_limit_refused_total{limit=\"observers\"}"), 3);
}

TEST(SessionCaps, OnDisconnectOperationsPerSessionAreCappedByDefault) {
  AttackGateway gw;
  gw.Start();
  SdkClient dev(gw.port());
  ASSERT_TRUE(dev.Open());
  for (int i = 0; i < 256; ++i) {
    ASSERT_EQ(dev.Request(3, "p/" + std::to_string(i), CborUint(1), {".dis=add"}).CodeString(), "2.05") << i;
  }
  const CoapReply over = dev.Request(3, "p/256", CborUint(1), {".dis=add"});
  EXPECT_EQ(over.CodeString(), "4.03");
  EXPECT_NE(over.payload.find("device.max_ondisconnect_per_session"), std::string::npos) << over.payload;
  EXPECT_EQ(dev.Request(4, "p/0", "", {".dis=rm"}).CodeString(), "2.05");
  EXPECT_EQ(dev.Request(3, "p/256", CborUint(1), {".dis=add"}).CodeString(), "2.05") << "a place was freed";
  EXPECT_EQ(gw.Metric("tether_session_limit_refused_total{limit=\"ondisconnect_count\"}"), 1);
}

// 500-byte operations (~506 bytes with path and encoding) against a 4 KiB total: eight fit, the
// ninth is refused.
TEST(SessionCaps, OnDisconnectBytesPerSessionAreCapped) {
  AttackGateway gw;
  gw.Start("  max_ondisconnect_bytes_per_session: 4KiB\n");
  SdkClient dev(gw.port());
  ASSERT_TRUE(dev.Open());
  int accepted = 0;
  CoapReply last;
  for (int i = 0; i < 20; ++i) {
    last = dev.Request(3, "b/" + std::to_string(i), CborBytes(500), {".dis=add"});
    if (last.CodeString() != "2.05") break;
    ++accepted;
  }
  EXPECT_EQ(accepted, 8) << "8 x ~506 bytes fit 4096";
  EXPECT_EQ(last.CodeString(), "4.03");
  EXPECT_NE(last.payload.find("device.max_ondisconnect_bytes_per_session"), std::string::npos) << last.payload;
  EXPECT_EQ(gw.Metric("tether_session_limit_refused_total{limit=\"ondisconnect_bytes\"}"), 1);
}

}  // namespace
}  // namespace tether::testing
