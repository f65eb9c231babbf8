#include "gateway/device/session_table.h"

#include <gtest/gtest.h>

namespace tether {
namespace {

coap::Address Addr(uint16_t port) {
  coap::Address a;
  a.family = AF_INET;
  a.ip[0] = 127;
  a.ip[3] = 1;
  a.port = port;
  return a;
}

Session Make(const std::string& id, uint16_t port, int64_t now) {
  Session s;
  s.id = id;
  s.short_token = "s" + id;
  s.long_token = "l" + id;
  s.addr = Addr(port);
  s.last_seen_ms = now;
  return s;
}

TEST(SessionTable, IndexesByTokensAndAddress) {
  SessionTable t(30'000);
  t.Add(Make("a", 1000, 0));
  t.Add(Make("b", 1001, 0));
  EXPECT_EQ(t.ByShortToken("sa")->id, "a");
  EXPECT_EQ(t.ByLongToken("lb")->id, "b");
  EXPECT_EQ(t.ByShortToken("nope"), nullptr);
  t.Remove("a");
  EXPECT_EQ(t.ByShortToken("sa"), nullptr);
  EXPECT_EQ(t.ByLongToken("la"), nullptr);
  EXPECT_EQ(t.size(), 1u);
}

TEST(SessionTable, SilentSessionExpiresExactlyOnceAtTimeout) {
  SessionTable t(30'000);
  t.Add(Make("a", 1000, 0));
  EXPECT_TRUE(t.Expired(29'999).empty());
  EXPECT_EQ(t.Expired(30'000), std::vector<std::string>{"a"});
  EXPECT_TRUE(t.Expired(60'000).empty()) << "reported once";
}

TEST(SessionTable, AnyDatagramFromTheBoundAddressKeepsItAlive) {
  SessionTable t(30'000);
  t.Add(Make("a", 1000, 0));
  t.Add(Make("b", 1001, 0));
  t.Touch(Addr(1000), 20'000);
  t.Touch(Addr(4242), 20'000);  // unknown address: no effect
  EXPECT_EQ(t.Expired(30'000), std::vector<std::string>{"b"});
  EXPECT_TRUE(t.Expired(49'999).empty());
  EXPECT_EQ(t.Expired(50'000), std::vector<std::string>{"a"});
}

TEST(SessionTable, RebindMovesLivenessToTheNewAddress) {
  SessionTable t(30'000);
  Session& s = t.Add(Make("a", 1000, 0));
  t.Rebind(s, Addr(2000));
  t.Touch(Addr(1000), 25'000);  // old port: no longer counts
  EXPECT_EQ(t.Expired(30'000), std::vector<std::string>{"a"});
  SessionTable u(30'000);
  Session& r = u.Add(Make("a", 1000, 0));
  u.Rebind(r, Addr(2000));
  u.Touch(Addr(2000), 25'000);
  EXPECT_TRUE(u.Expired(30'000).empty());
}

TEST(SessionTable, ManySessionsShareOneHeap) {
  SessionTable t(1000);
  for (int i = 0; i < 10000; ++i) t.Add(Make(std::to_string(i), static_cast<uint16_t>(i), i % 500));
  for (int i = 0; i < 10000; i += 2) t.Touch(Addr(static_cast<uint16_t>(i)), 900);
  EXPECT_EQ(t.Expired(1499).size(), 5000u);  // odd ones: last seen < 500
  EXPECT_TRUE(t.Expired(1899).empty());
  EXPECT_EQ(t.Expired(1900).size(), 5000u);
}

}  // namespace
}  // namespace tether
