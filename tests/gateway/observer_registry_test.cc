#include "gateway/device/observer_registry.h"

#include <gtest/gtest.h>

#include <map>

namespace tether {
namespace {

// Registrations of sessions named "s1", "s2", ...: the registry links each session's observers
// through its Session, so the sessions live beside the registry, as the session table's do.
class ObserverRegistryTest : public ::testing::Test {
 protected:
  Session& S(const std::string& name) {
    Session& s = sessions_[name];
    s.id = name;
    return s;
  }
  std::vector<coap::ObserverId> Add(coap::ObserverId id, const std::string& session, const std::string& path,
                                    const std::string& device_path = {}) {
    Observer o;
    o.id = id;
    o.session = &S(session);
    o.device_path = device_path.empty() ? path : device_path;
    return r.Add(std::move(o), path);
  }

  std::map<std::string, Session> sessions_;  // before r: outlives its observers
  ObserverRegistry r;
};

std::vector<std::string> Paths(const std::map<std::string, std::vector<coap::ObserverId>>& m) {
  std::vector<std::string> out;
  for (const auto& [p, ids] : m) out.push_back(p);
  return out;
}

TEST_F(ObserverRegistryTest, ChangeReachesAncestorsSelfAndDescendantsOnly) {
  Add(1, "s1", "");
  Add(2, "s1", "a");
  Add(3, "s2", "a/b");
  Add(4, "s2", "a/b/c/d");
  Add(5, "s3", "a/bc");  // sibling sharing a prefix: must not match a/b
  Add(6, "s3", "x");
  EXPECT_EQ(Paths(r.Affected("a/b")), (std::vector<std::string>{"", "a", "a/b", "a/b/c/d"}));
  EXPECT_EQ(Paths(r.Affected("x/y")), (std::vector<std::string>{"", "x"}));
  EXPECT_EQ(Paths(r.Affected("")).size(), 6u);
  EXPECT_EQ(Paths(r.Affected("q")), (std::vector<std::string>{""}));
}

TEST_F(ObserverRegistryTest, ManyObserversOfOnePathShareOneEntry) {
  for (coap::ObserverId i = 1; i <= 1000; ++i) Add(i, "s" + std::to_string(i), "room/light");
  auto a = r.Affected("room/light/level");
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a["room/light"].size(), 1000u);
}

TEST_F(ObserverRegistryTest, RemoveBySessionAndPath) {
  Add(1, "s1", "a");
  Add(2, "s1", "b");
  Add(3, "s2", "a");
  EXPECT_EQ(r.FindBySessionPath(S("s1"), "b")->id, 2u);
  EXPECT_EQ(r.FindBySessionPath(S("s2"), "b"), nullptr);
  EXPECT_EQ(r.OfSession(S("s1")).size(), 2u);
  r.Remove(1);
  r.Remove(1);  // idempotent
  EXPECT_EQ(r.Affected("a")["a"], std::vector<coap::ObserverId>{3});
  r.Remove(3);
  EXPECT_TRUE(r.Affected("a").empty());
  EXPECT_EQ(r.size(), 1u);
}

TEST(SnapshotDigest, DistinguishesSnapshots) {
  EXPECT_NE(SnapshotDigest("\xf6"), SnapshotDigest("\x01"));
  EXPECT_EQ(SnapshotDigest("abc"), SnapshotDigest("abc"));
}

TEST_F(ObserverRegistryTest, PathHookSeesTheFirstAndTheLastObserverOfAPath) {
  std::vector<std::string> events;
  util::Subscription hook = r.SetPathHook([&](const std::string& p, bool on) { events.push_back((on ? "+" : "-") + p); });
  Add(1, "s1", "a");
  Add(2, "s2", "a");
  Add(3, "s2", "b");
  Add(1, "s1", "a");  // the engine re-registers the same observer: no churn
  r.Remove(1);
  r.Remove(2);
  r.Remove(2);  // unknown now: nothing
  Add(3, "s2", "c");  // the same id moved to another path
  EXPECT_EQ(events, (std::vector<std::string>{"+a", "+b", "-a", "-b", "+c"}));
}

// RFC 7641 §4.1 keeps one entry per client and resource; the SDK re-observes with a new token
// (after re-authenticating) without deregistering, so the older registration has to go.
TEST_F(ObserverRegistryTest, ReObservingTheSamePathAndQueryReplacesTheOldRegistration) {
  EXPECT_TRUE(Add(1, "s1", "a").empty());
  const std::string query_path = "a?orderBy=\"$key\"";  // the same path with a query is another registration
  EXPECT_TRUE(Add(2, "s1", "a", query_path).empty());
  EXPECT_TRUE(Add(3, "s2", "a").empty()) << "another session's registration stays";
  EXPECT_EQ(Add(4, "s1", "a"), std::vector<coap::ObserverId>{1});
  EXPECT_EQ(r.Find(1), nullptr);
  EXPECT_EQ(r.FindBySessionPath(S("s1"), "a")->id, 4u);
  EXPECT_EQ(r.size(), 3u);
  EXPECT_EQ(r.Affected("a")["a"].size(), 3u) << "one notification per session and registration";
  EXPECT_EQ(Add(5, "s1", "a", query_path), std::vector<coap::ObserverId>{2});
  EXPECT_TRUE(Add(4, "s1", "a").empty()) << "the same id again is the same registration";
  EXPECT_EQ(r.size(), 3u);
}

// The per-session count the observation cap reads, through replacing, moving and removing.
TEST_F(ObserverRegistryTest, CountsEachSessionsRegistrations) {
  for (coap::ObserverId id = 1; id <= 100; ++id) Add(id, "s1", "p/" + std::to_string(id));
  Add(1000, "s2", "p/1");
  EXPECT_EQ(r.CountOfSession(S("s1")), 100u);
  EXPECT_EQ(r.CountOfSession(S("s2")), 1u);
  EXPECT_EQ(Add(101, "s1", "p/5"), std::vector<coap::ObserverId>{5}) << "re-observe replaces";
  EXPECT_EQ(r.CountOfSession(S("s1")), 100u);
  EXPECT_EQ(r.FindBySessionPath(S("s1"), "p/5")->id, 101u);
  r.Remove(5);  // already replaced: nothing, and the slot keeps its successor
  EXPECT_EQ(r.FindBySessionPath(S("s1"), "p/5")->id, 101u);
  Add(101, "s1", "q");  // the same id at another path: moves
  EXPECT_EQ(r.FindBySessionPath(S("s1"), "p/5"), nullptr);
  EXPECT_EQ(r.FindBySessionPath(S("s1"), "q")->id, 101u);
  EXPECT_EQ(r.CountOfSession(S("s1")), 100u);
  for (coap::ObserverId id : r.OfSession(S("s1"))) r.Remove(id);
  EXPECT_EQ(r.CountOfSession(S("s1")), 0u);
  EXPECT_TRUE(r.OfSession(S("s1")).empty());
  EXPECT_EQ(r.size(), 1u);
}

// A session's observers are listed through its Session in registration order; removing one
// anywhere in the list keeps the others' order, and nothing else's.
TEST_F(ObserverRegistryTest, ListsEachSessionsObserversInRegistrationOrder) {
  for (coap::ObserverId id = 1; id <= 5; ++id) Add(id, "s1", "p/" + std::to_string(id));
  Add(9, "s2", "p/1");
  r.Remove(1);  // the head
  r.Remove(3);  // the middle
  r.Remove(5);  // the tail
  EXPECT_EQ(r.OfSession(S("s1")), (std::vector<coap::ObserverId>{2, 4}));
  Add(6, "s1", "p/6");
  Add(7, "s1", "p/2");  // replaces 2 (re-observe): the new one goes last
  EXPECT_EQ(r.OfSession(S("s1")), (std::vector<coap::ObserverId>{4, 6, 7}));
  EXPECT_EQ(r.OfSession(S("s2")), std::vector<coap::ObserverId>{9});
  EXPECT_EQ(r.Find(7)->path(), "p/2");
  EXPECT_EQ(r.Find(7)->session, &S("s1"));
  for (coap::ObserverId id : r.OfSession(S("s1"))) r.Remove(id);
  EXPECT_EQ(S("s1").first_observer, 0u);
  EXPECT_EQ(r.Affected("p")["p/1"], std::vector<coap::ObserverId>{9});
}

}  // namespace
}  // namespace tether
