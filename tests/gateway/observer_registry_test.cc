#include "gateway/device/observer_registry.h"

#include <gtest/gtest.h>

namespace tether {
namespace {

Observer O(coap::ObserverId id, const std::string& session, const std::string& path) {
  Observer o;
  o.id = id;
  o.session_id = session;
  o.path = path;
  o.device_path = path;
  return o;
}

std::vector<std::string> Paths(const std::map<std::string, std::vector<coap::ObserverId>>& m) {
  std::vector<std::string> out;
  for (const auto& [p, ids] : m) out.push_back(p);
  return out;
}

TEST(ObserverRegistry, ChangeReachesAncestorsSelfAndDescendantsOnly) {
  ObserverRegistry r;
  r.Add(O(1, "s1", ""));
  r.Add(O(2, "s1", "a"));
  r.Add(O(3, "s2", "a/b"));
  r.Add(O(4, "s2", "a/b/c/d"));
  r.Add(O(5, "s3", "a/bc"));  // sibling sharing a prefix: must not match a/b
  r.Add(O(6, "s3", "x"));
  EXPECT_EQ(Paths(r.Affected("a/b")), (std::vector<std::string>{"", "a", "a/b", "a/b/c/d"}));
  EXPECT_EQ(Paths(r.Affected("x/y")), (std::vector<std::string>{"", "x"}));
  EXPECT_EQ(Paths(r.Affected("")).size(), 6u);
  EXPECT_EQ(Paths(r.Affected("q")), (std::vector<std::string>{""}));
}

TEST(ObserverRegistry, ManyObserversOfOnePathShareOneEntry) {
  ObserverRegistry r;
  for (coap::ObserverId i = 1; i <= 1000; ++i) r.Add(O(i, "s" + std::to_string(i), "room/light"));
  auto a = r.Affected("room/light/level");
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a["room/light"].size(), 1000u);
}

TEST(ObserverRegistry, RemoveBySessionAndPath) {
  ObserverRegistry r;
  r.Add(O(1, "s1", "a"));
  r.Add(O(2, "s1", "b"));
  r.Add(O(3, "s2", "a"));
  EXPECT_EQ(r.FindBySessionPath("s1", "b")->id, 2u);
  EXPECT_EQ(r.FindBySessionPath("s2", "b"), nullptr);
  EXPECT_EQ(r.OfSession("s1").size(), 2u);
  r.Remove(1);
  r.Remove(1);  // idempotent
  EXPECT_EQ(r.Affected("a")["a"], std::vector<coap::ObserverId>{3});
  r.Remove(3);
  EXPECT_TRUE(r.Affected("a").empty());
  EXPECT_EQ(r.size(), 1u);
}

TEST(ObserverRegistry, DigestDistinguishesSnapshots) {
  EXPECT_NE(SnapshotDigest("\xf6"), SnapshotDigest("\x01"));
  EXPECT_EQ(SnapshotDigest("abc"), SnapshotDigest("abc"));
}

TEST(ObserverRegistry, PathHookSeesTheFirstAndTheLastObserverOfAPath) {
  ObserverRegistry r;
  std::vector<std::string> events;
  util::Subscription hook = r.SetPathHook([&](const std::string& p, bool on) { events.push_back((on ? "+" : "-") + p); });
  r.Add(O(1, "s1", "a"));
  r.Add(O(2, "s2", "a"));
  r.Add(O(3, "s2", "b"));
  r.Add(O(1, "s1", "a"));  // the engine re-registers the same observer: no churn
  r.Remove(1);
  r.Remove(2);
  r.Remove(2);  // unknown now: nothing
  r.Add(O(3, "s2", "c"));  // the same id moved to another path
  EXPECT_EQ(events, (std::vector<std::string>{"+a", "+b", "-a", "-b", "+c"}));
}

// RFC 7641 §4.1 keeps one entry per client and resource; the SDK re-observes with a new token
// (after re-authenticating) without deregistering, so the older registration has to go.
TEST(ObserverRegistry, ReObservingTheSamePathAndQueryReplacesTheOldRegistration) {
  ObserverRegistry r;
  EXPECT_TRUE(r.Add(O(1, "s1", "a")).empty());
  Observer q = O(2, "s1", "a");
  q.device_path = "a?orderBy=\"$key\"";  // the same path with a query is another registration
  EXPECT_TRUE(r.Add(q).empty());
  EXPECT_TRUE(r.Add(O(3, "s2", "a")).empty()) << "another session's registration stays";
  EXPECT_EQ(r.Add(O(4, "s1", "a")), std::vector<coap::ObserverId>{1});
  EXPECT_EQ(r.Find(1), nullptr);
  EXPECT_EQ(r.FindBySessionPath("s1", "a")->id, 4u);
  EXPECT_EQ(r.size(), 3u);
  EXPECT_EQ(r.Affected("a")["a"].size(), 3u) << "one notification per session and registration";
  q.id = 5;
  EXPECT_EQ(r.Add(q), std::vector<coap::ObserverId>{2});
  EXPECT_TRUE(r.Add(O(4, "s1", "a")).empty()) << "the same id again is the same registration";
  EXPECT_EQ(r.size(), 3u);
}

// The per-session count the observation cap reads, through replacing, moving and removing.
TEST(ObserverRegistry, CountsEachSessionsRegistrations) {
  ObserverRegistry r;
  for (coap::ObserverId id = 1; id <= 100; ++id) r.Add(O(id, "s1", "p/" + std::to_string(id)));
  r.Add(O(1000, "s2", "p/1"));
  EXPECT_EQ(r.CountOfSession("s1"), 100u);
  EXPECT_EQ(r.CountOfSession("s2"), 1u);
  EXPECT_EQ(r.Add(O(101, "s1", "p/5")), std::vector<coap::ObserverId>{5}) << "re-observe replaces";
  EXPECT_EQ(r.CountOfSession("s1"), 100u);
  EXPECT_EQ(r.FindBySessionPath("s1", "p/5")->id, 101u);
  r.Remove(5);  // already replaced: nothing, and the slot keeps its successor
  EXPECT_EQ(r.FindBySessionPath("s1", "p/5")->id, 101u);
  r.Add(O(101, "s1", "q"));  // the same id at another path: moves
  EXPECT_EQ(r.FindBySessionPath("s1", "p/5"), nullptr);
  EXPECT_EQ(r.FindBySessionPath("s1", "q")->id, 101u);
  EXPECT_EQ(r.CountOfSession("s1"), 100u);
  for (coap::ObserverId id : r.OfSession("s1")) r.Remove(id);
  EXPECT_EQ(r.CountOfSession("s1"), 0u);
  EXPECT_TRUE(r.OfSession("s1").empty());
  EXPECT_EQ(r.size(), 1u);
}

}  // namespace
}  // namespace tether
