#include "gateway/device/session_table.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>

#include "gateway/device/session_index.h"

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
  s.tokens = SessionTokens("s" + id, "l" + id, "");
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


TEST(SessionTable, SessionsSharingAnAddressOrIdentityAreAllFound) {
  SessionTable t(30'000);
  Session a = Make("a", 1000, 0), b = Make("b", 1000, 0), c = Make("c", 1001, 0);
  a.app = b.app = c.app = "app";
  a.device = c.device = "dev";
  b.device = "other";
  c.anonymous = true;  // not in the identity index
  t.Add(a);
  t.Add(b);
  t.Add(c);
  EXPECT_EQ(t.ByAddress(Addr(1000)).size(), 2u);
  ASSERT_EQ(t.ByIdentity("app", "dev").size(), 1u);
  EXPECT_EQ(t.ByIdentity("app", "dev")[0]->id, "a");
  EXPECT_TRUE(t.ByIdentity("app2", "dev").empty());
  const std::vector<Session*>* touched = t.Touch(Addr(1000), 10);
  ASSERT_NE(touched, nullptr);
  EXPECT_EQ(touched->size(), 2u);
  EXPECT_EQ(t.Touch(Addr(999), 10), nullptr);
  t.Remove("a");
  ASSERT_EQ(t.ByAddress(Addr(1000)).size(), 1u);
  EXPECT_EQ(t.ByAddress(Addr(1000))[0]->id, "b");
  EXPECT_TRUE(t.ByIdentity("app", "dev").empty());
  EXPECT_TRUE(t.ShortTokenInUse("sb"));
  EXPECT_FALSE(t.ShortTokenInUse("sa"));
}

TEST(SessionTable, RemovedSessionLeavesNoDeadlineAndAReAddedOneIsReportedOnce) {
  SessionTable t(1000);
  t.Add(Make("a", 1000, 0));
  t.Add(Make("b", 1001, 0));
  t.Remove("a");
  EXPECT_EQ(t.Expired(1000), std::vector<std::string>{"b"});
  EXPECT_FALSE(t.MaybeDue(500'000)) << "b was reported: nothing left in the heap";
  // A session detached and added again (a failed open serves its predecessors again).
  t.Remove("b");
  t.Add(Make("b", 1001, 0));
  EXPECT_EQ(t.Expired(1000), std::vector<std::string>{"b"});
  EXPECT_TRUE(t.Expired(5000).empty()) << "reported once";
}

TEST(SessionTable, RemoveWithTheSessionsOwnIdAndDestroyWithSessionsLeft) {
  auto t = std::make_unique<SessionTable>(1000);
  for (int i = 0; i < 100; ++i) t->Add(Make(std::to_string(i), static_cast<uint16_t>(i), 0));
  for (int i = 0; i < 100; i += 3) t->Remove(t->ById(std::to_string(i))->id);  // the key dies with it
  EXPECT_EQ(t->size(), 66u);
  EXPECT_EQ(t->ById("3"), nullptr);
  EXPECT_EQ(t->ById("4")->tokens.short_token(), "s4");
  t.reset();  // frees the rest (ASan checks)
}

// The table against a model (std::multimap) through random adds, removes, rebinds, touches and
// expiries: every lookup and every expiry agrees.
TEST(SessionTable, AgreesWithAModelUnderRandomOperations) {
  std::mt19937 rng(7);
  SessionTable t(1000);
  struct M {
    uint16_t port;
    int64_t seen;
    bool reported = false;
  };
  std::map<std::string, M> model;
  int next = 0;
  int64_t now = 0;
  for (int step = 0; step < 20'000; ++step) {
    const int op = static_cast<int>(rng() % 10);
    if (op < 4 || model.empty()) {
      const std::string id = "i" + std::to_string(next++);
      const uint16_t port = static_cast<uint16_t>(rng() % 64);  // many share an address
      t.Add(Make(id, port, now));
      model[id] = {port, now};
    } else {
      auto it = model.begin();
      std::advance(it, static_cast<long>(rng() % model.size()));
      const std::string id = it->first;
      if (op < 6) {
        t.Remove(id);
        model.erase(it);
      } else if (op < 7) {
        const uint16_t port = static_cast<uint16_t>(rng() % 64);
        t.Rebind(*t.ById(id), Addr(port));
        it->second.port = port;
      } else if (op < 9) {
        const uint16_t port = it->second.port;
        t.Touch(Addr(port), now);
        for (auto& [k, m] : model) {
          if (m.port == port) m.seen = std::max(m.seen, now);
        }
      } else {
        std::set<std::string> want;
        for (auto& [k, m] : model) {
          if (!m.reported && m.seen + 1000 <= now) want.insert(k), m.reported = true;
        }
        const std::vector<std::string> got = t.Expired(now);
        EXPECT_EQ(std::set<std::string>(got.begin(), got.end()), want) << "step " << step;
        EXPECT_EQ(got.size(), want.size());
      }
    }
    now += static_cast<int64_t>(rng() % 20);
  }
  EXPECT_EQ(t.size(), model.size());
  for (uint16_t port = 0; port < 64; ++port) {
    std::set<std::string> want, got;
    for (const auto& [k, m] : model) {
      if (m.port == port) want.insert(k);
    }
    for (Session* s : t.ByAddress(Addr(port))) got.insert(s->id);
    EXPECT_EQ(got, want) << "port " << port;
  }
  for (const auto& [k, m] : model) {
    ASSERT_NE(t.ById(k), nullptr) << k;
    EXPECT_EQ(t.ByShortToken("s" + k)->id, k);
    EXPECT_EQ(t.ByLongToken("l" + k)->id, k);
  }
}

// Keys that all hash alike: one long cluster, erased from the middle (backward shift).
struct CollidingKey {
  using Key = std::string_view;
  static Key KeyOf(const Session& s) { return s.id; }
  static size_t Hash(Key k) { return k.empty() ? 0 : static_cast<size_t>(k[0]); }  // first char only
};

TEST(SessionIndex, ClustersSurviveErasureFromTheMiddle) {
  std::vector<std::unique_ptr<Session>> all;
  SessionIndex<CollidingKey> idx;
  for (int i = 0; i < 200; ++i) {
    all.push_back(std::make_unique<Session>());
    all.back()->id = std::string(1, static_cast<char>('a' + i % 3)) + std::to_string(i);
    idx.Insert(all.back().get());
  }
  EXPECT_EQ(idx.size(), 200u);
  for (int i = 0; i < 200; i += 2) EXPECT_TRUE(idx.Erase(all[static_cast<size_t>(i)].get()));
  EXPECT_FALSE(idx.Erase(all[0].get())) << "already gone";
  EXPECT_EQ(idx.size(), 100u);
  for (int i = 0; i < 200; ++i) {
    Session* found = idx.Find(all[static_cast<size_t>(i)]->id);
    EXPECT_EQ(found, i % 2 ? all[static_cast<size_t>(i)].get() : nullptr) << i;
  }
  size_t visited = 0;
  idx.ForEach([&](Session*) { ++visited; });
  EXPECT_EQ(visited, 100u);
}

TEST(SessionIndex, DuplicateKeysAreAllVisitedAndErasedOneByOne) {
  std::vector<std::unique_ptr<Session>> all;
  SessionIndex<CollidingKey> idx;
  idx.Reserve(1000);
  for (int i = 0; i < 5; ++i) {
    all.push_back(std::make_unique<Session>());
    all.back()->id = "same";
    idx.Insert(all.back().get());
  }
  auto count = [&] {
    size_t n = 0;
    idx.ForEachMatch("same", [&](Session*) { return ++n, true; });
    return n;
  };
  EXPECT_EQ(count(), 5u);
  EXPECT_TRUE(idx.Erase(all[2].get()));
  EXPECT_EQ(count(), 4u);
  idx.ForEachMatch("same", [&](Session* s) {
    EXPECT_NE(s, all[2].get());
    return true;
  });
}

// The three parts round-trip any bytes (a fingerprint is binary), copies are deep, a moved-from
// value is empty, and the default is three empty parts without a block.
TEST(SessionTokens, ThreePartsInOneValue) {
  std::string fingerprint(32, 'f');
  fingerprint[0] = '\0';
  fingerprint[1] = '\xff';
  SessionTokens t("abcdefgh", std::string(32, 'L'), fingerprint);
  EXPECT_EQ(t.short_token(), "abcdefgh");
  EXPECT_EQ(t.long_token(), std::string(32, 'L'));
  EXPECT_EQ(t.credential(), fingerprint);
  SessionTokens copy = t;
  EXPECT_NE(copy.short_token().data(), t.short_token().data());
  EXPECT_EQ(copy.long_token(), t.long_token());
  EXPECT_EQ(copy.credential(), fingerprint);
  SessionTokens moved = std::move(copy);
  EXPECT_EQ(moved.credential(), fingerprint);
  EXPECT_TRUE(copy.short_token().empty() && copy.long_token().empty() && copy.credential().empty());
  copy = moved;
  EXPECT_EQ(copy.short_token(), "abcdefgh");
  const SessionTokens none;
  EXPECT_TRUE(none.short_token().empty() && none.long_token().empty() && none.credential().empty());
  SessionTokens no_credential("s1", "l1", "");
  EXPECT_EQ(no_credential.long_token(), "l1");
  EXPECT_TRUE(no_credential.credential().empty());
  EXPECT_THROW(SessionTokens(std::string(70000, 'x'), "l", ""), std::length_error);
}

}  // namespace
}  // namespace tether
