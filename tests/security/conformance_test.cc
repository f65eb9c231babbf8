// Issue 16.11, small conformance items against the real tetherd: a CON with a message format
// error is rejected with RST (RFC 7252 §4.2), not answered 4.00; only GET reads /.ping (4.05 for
// the other methods); and the SDK's empty ACK that carries a token still acknowledges a CON.
#include <gtest/gtest.h>

#include <thread>

#include "tests/integration/sdk_client.h"
#include "tests/security/attack_gateway.h"

namespace tether::testing {
namespace {

using namespace std::chrono_literals;

TEST(Conformance, MalformedConfirmableMessagesAreRejectedWithReset) {
  AttackGateway gw;
  gw.Start();
  SdkClient raw(gw.port());
  const std::vector<std::string> malformed = {
      std::string("\x44\x01\x12\x34" "abcd" "\xb4" "a", 10),  // option length past the end
      std::string("\x44\x01\x12\x35" "abcd" "\xff", 9),       // payload marker, no payload
      std::string("\x44\x01\x12\x36" "abcd" "\xf1\x00", 10),  // option delta nibble 15
  };
  for (size_t i = 0; i < malformed.size(); ++i) {
    std::optional<CoapReply> r = raw.SendRaw(malformed[i], 1s);
    ASSERT_TRUE(r.has_value()) << i;
    EXPECT_EQ(r->type, 3) << "RST, not " << r->CodeString() << " (case " << i << ")";
    EXPECT_EQ(r->code, 0) << i;
    EXPECT_EQ(r->mid, 0x1234 + i) << i;
    EXPECT_TRUE(r->payload.empty()) << i;
  }
}

TEST(Conformance, OnlyGetPingsAndTheSdksTokenCarryingAckStillCounts) {
  AttackGateway gw;
  gw.Start();
  SdkClient dev(gw.port()), writer(gw.port());
  ASSERT_TRUE(dev.Open());
  ASSERT_TRUE(writer.Open());
  EXPECT_EQ(dev.Request(3, ".ping").CodeString(), "4.05");
  EXPECT_EQ(dev.Request(2, ".ping").CodeString(), "4.05");
  EXPECT_EQ(dev.Ping().CodeString(), "2.05");

  // Every 20th notification is a CON; the SDK acknowledges it with an empty ACK carrying the
  // token (SdkClient does). Acknowledged: it is not retransmitted, and the next ones flow.
  const CoapReply reg = dev.Observe("c");
  ASSERT_EQ(reg.CodeString(), "2.05");
  std::optional<CoapReply> con;
  for (int i = 1; i <= 25 && !con; ++i) {
    ASSERT_EQ(writer.Put("c", CborUint(static_cast<uint64_t>(i))).CodeString(), "2.05");
    while (auto n = dev.WaitNotification(200ms)) {
      if (n->type == 0) con = n;
    }
  }
  ASSERT_TRUE(con.has_value()) << "a CON notification";
  std::optional<CoapReply> again;
  for (auto end = std::chrono::steady_clock::now() + 3s; std::chrono::steady_clock::now() < end && !again;) {
    if (auto n = dev.WaitNotification(100ms); n && n->mid == con->mid) again = n;
  }
  EXPECT_FALSE(again.has_value()) << "retransmitted although acknowledged";
  ASSERT_EQ(writer.Put("c", CborUint(100)).CodeString(), "2.05");
  std::optional<CoapReply> next = dev.WaitNotification(1s);
  ASSERT_TRUE(next.has_value());
  EXPECT_EQ(next->payload, CborUint(100));
}

}  // namespace
}  // namespace tether::testing
