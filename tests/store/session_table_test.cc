#include <gtest/gtest.h>

#include "store/record_codec.h"
#include "store/store.h"
#include "tests/store/store_test_util.h"

namespace tether::store {
namespace {

using testing::Entry;
using testing::TempDir;

SessionRecord Session(const std::string& id, const std::string& shortt, const std::string& longt) {
  SessionRecord r;
  r.session_id = id;
  r.app_id = "app";
  r.device_id = "dev-" + id;
  r.short_token = shortt;
  r.long_token = longt;
  r.bound_address = "10.0.0.1:5683";
  r.created_ms = 100;
  r.heartbeat_timeout_ms = 30'000;
  r.last_seen_ms = 100;
  return r;
}

OnDisconnectOp Op(OnDisconnectOp::Kind kind, const std::string& path, const std::string& payload) {
  OnDisconnectOp op;
  op.kind = kind;
  op.path = path;
  op.payload = payload;
  return op;
}

class SessionTableTest : public ::testing::Test {
 protected:
  void SetUp() override { store_ = Store::Open(dir_.Sub("db"), StoreOptions{}, nullptr); }
  Status Commit(WriteBatch b) { return store_->CommitBlocking(std::move(b)).status; }
  void ExpectHealthy() {
    CheckReport r = store_->Check();
    EXPECT_TRUE(r.ok) << (r.problems.empty() ? "" : r.problems.front());
  }
  TempDir dir_;
  std::unique_ptr<Store> store_;
};

TEST_F(SessionTableTest, PutGetAndTokenLookups) {
  WriteBatch b;
  b.PutSession(Session("s1", "AAAAAAAA", std::string(32, 'a')));
  b.PutSession(Session("s2", "BBBBBBBB", std::string(32, 'b')));
  ASSERT_TRUE(Commit(std::move(b)).ok());
  const SessionTable& t = store_->sessions();
  EXPECT_EQ(t.Get("s1")->device_id, "dev-s1");
  EXPECT_EQ(t.FindByShortToken("BBBBBBBB")->session_id, "s2");
  EXPECT_EQ(t.FindByLongToken(std::string(32, 'a'))->session_id, "s1");
  EXPECT_FALSE(t.FindByShortToken("CCCCCCCC"));
  EXPECT_EQ(t.Count(), 2u);
  EXPECT_EQ(t.ListAll().size(), 2u);
  ExpectHealthy();
}

TEST_F(SessionTableTest, ReplaceMovesTokensAndConflictsAreRefused) {
  WriteBatch b;
  b.PutSession(Session("s1", "AAAAAAAA", std::string(32, 'a')));
  b.PutSession(Session("s2", "BBBBBBBB", std::string(32, 'b')));
  ASSERT_TRUE(Commit(std::move(b)).ok());
  WriteBatch replace;
  replace.PutSession(Session("s1", "ZZZZZZZZ", std::string(32, 'a')));
  ASSERT_TRUE(Commit(std::move(replace)).ok());
  EXPECT_FALSE(store_->sessions().FindByShortToken("AAAAAAAA"));
  EXPECT_EQ(store_->sessions().FindByShortToken("ZZZZZZZZ")->session_id, "s1");
  WriteBatch clash;
  clash.PutSession(Session("s3", "BBBBBBBB", std::string(32, 'c')));
  EXPECT_EQ(Commit(std::move(clash)).code, StatusCode::kConflict);
  WriteBatch touch;
  touch.TouchSession("s2", 999);
  ASSERT_TRUE(Commit(std::move(touch)).ok());
  EXPECT_EQ(store_->sessions().Get("s2")->last_seen_ms, 999);
  ExpectHealthy();
}

TEST_F(SessionTableTest, ObserversTravelWithTheSessionRecord) {
  SessionRecord r = Session("s1", "AAAAAAAA", std::string(32, 'a'));
  r.observers = std::string("[{\"p\":\"room\"}]\0binary", 22);
  WriteBatch b;
  b.PutSession(r);
  ASSERT_TRUE(Commit(std::move(b)).ok());
  EXPECT_EQ(store_->sessions().Get("s1")->observers, r.observers);
  WriteBatch touch;  // a checkpoint of last_seen keeps them
  touch.TouchSession("s1", 555);
  ASSERT_TRUE(Commit(std::move(touch)).ok());
  EXPECT_EQ(store_->sessions().Get("s1")->observers, r.observers);
  EXPECT_EQ(store_->sessions().ListAll().at(0).observers, r.observers);
  // A record written before observers were persisted (no trailing field) reads back with none.
  r.observers.clear();
  constexpr size_t kCheckpointFields = 8 + 4 + 8;  // boottime, empty boot id, last ping
  std::string old = EncodeSession(r);
  old.resize(old.size() - kCheckpointFields - 4);  // and drop the empty observers' length prefix
  SessionRecord back;
  back.observers = "stale";
  ASSERT_TRUE(DecodeSession(old, &back));
  EXPECT_EQ(back.session_id, "s1");
  EXPECT_EQ(back.last_seen_ms, 100);
  EXPECT_TRUE(back.observers.empty());
  EXPECT_FALSE(DecodeSession(old.substr(0, old.size() - 1), &back)) << "truncated records stay corrupt";
  ExpectHealthy();
}

// A device's new session takes over the operations of the one it continues; registering again at
// a path replaces only those carried over (orders up to a bound), not its own.
TEST_F(SessionTableTest, CancelUpToAnOrderKeepsNewerOperations) {
  WriteBatch b;
  b.PutSession(Session("s1", "AAAAAAAA", std::string(32, 'a')));
  b.AddOnDisconnect("s1", OnDisconnectOp{OnDisconnectOp::Kind::kSet, "pres/d1", "\"gone\"", 0});
  b.AddOnDisconnect("s1", OnDisconnectOp{OnDisconnectOp::Kind::kSet, "other", "1", 0});
  ASSERT_TRUE(Commit(std::move(b)).ok());
  const uint64_t carried = store_->sessions().OnDisconnectOps("s1").back().order;
  WriteBatch again;
  again.CancelOnDisconnect("s1", "pres/d1", carried);
  again.AddOnDisconnect("s1", OnDisconnectOp{OnDisconnectOp::Kind::kSet, "pres/d1", "\"gone2\"", 0});
  ASSERT_TRUE(Commit(std::move(again)).ok());
  auto ops = store_->sessions().OnDisconnectOps("s1");
  ASSERT_EQ(ops.size(), 2u);
  EXPECT_EQ(ops[0].path, "other");
  EXPECT_EQ(ops[1].payload, "\"gone2\"");
  WriteBatch twice;  // the same bound again: the newer registration stays
  twice.CancelOnDisconnect("s1", "pres/d1", carried);
  ASSERT_TRUE(Commit(std::move(twice)).ok());
  EXPECT_EQ(store_->sessions().OnDisconnectOps("s1").size(), 2u);
  ExpectHealthy();
}

TEST_F(SessionTableTest, LivenessCheckpointTravelsWithTheRecord) {
  SessionRecord r = Session("s1", "AAAAAAAA", std::string(32, 'a'));
  r.observers = "obs";
  WriteBatch b;
  b.PutSession(r);
  ASSERT_TRUE(Commit(std::move(b)).ok());
  WriteBatch touch;
  touch.TouchSession("s1", 1'800'000'000'000, 123'456, "boot-1", 1'799'999'990'000);
  ASSERT_TRUE(Commit(std::move(touch)).ok());
  std::optional<SessionRecord> back = store_->sessions().Get("s1");
  ASSERT_TRUE(back);
  EXPECT_EQ(back->last_seen_ms, 1'800'000'000'000);
  EXPECT_EQ(back->last_seen_boottime_ms, 123'456);
  EXPECT_EQ(back->boot_id, "boot-1");
  EXPECT_EQ(back->last_ping_ms, 1'799'999'990'000);
  EXPECT_EQ(back->observers, "obs") << "a checkpoint keeps the observations";
  // A record of the version before the checkpoint fields reads back with them unset.
  std::string old = EncodeSession(*back);
  old.resize(old.size() - (8 + 4 + 6 + 8));
  SessionRecord older;
  ASSERT_TRUE(DecodeSession(old, &older));
  EXPECT_EQ(older.observers, "obs");
  EXPECT_EQ(older.last_seen_boottime_ms, 0);
  EXPECT_TRUE(older.boot_id.empty());
  EXPECT_EQ(older.last_ping_ms, 0);
  ExpectHealthy();
}

TEST_F(SessionTableTest, OnDisconnectOrderCancelAndFireExactlyOnce) {
  WriteBatch b;
  b.PutSession(Session("s1", "AAAAAAAA", std::string(32, 'a')));
  b.AddOnDisconnect("s1", Op(OnDisconnectOp::Kind::kSet, "/presence/d1", "false"));
  b.AddOnDisconnect("s1", Op(OnDisconnectOp::Kind::kUpdate, "/status/d1", "{\"x\":1}"));
  b.AddOnDisconnect("s1", Op(OnDisconnectOp::Kind::kRemove, "/status/d1/tmp", ""));
  b.AddOnDisconnect("s1", Op(OnDisconnectOp::Kind::kPush, "/log", "\"bye\""));
  ASSERT_TRUE(Commit(std::move(b)).ok());
  WriteBatch bad;
  bad.AddOnDisconnect("nobody", Op(OnDisconnectOp::Kind::kSet, "/x", "1"));
  EXPECT_EQ(Commit(std::move(bad)).code, StatusCode::kNotFound);

  auto ops = store_->sessions().OnDisconnectOps("s1");
  ASSERT_EQ(ops.size(), 4u);
  EXPECT_EQ(ops[0].path, "/presence/d1");
  EXPECT_EQ(ops[3].kind, OnDisconnectOp::Kind::kPush);
  for (size_t i = 1; i < ops.size(); ++i) EXPECT_GT(ops[i].order, ops[i - 1].order);

  WriteBatch cancel;
  cancel.CancelOnDisconnect("s1", "/status");  // removes /status/d1 and /status/d1/tmp
  ASSERT_TRUE(Commit(std::move(cancel)).ok());
  ops = store_->sessions().OnDisconnectOps("s1");
  ASSERT_EQ(ops.size(), 2u);
  EXPECT_EQ(ops[1].path, "/log");

  // Firing: one batch removes the session (+ ops) and applies/queues their effects.
  auto fire = [&] {
    WriteBatch f;
    auto fired = store_->sessions().OnDisconnectOps("s1");
    f.RemoveSession("s1", /*must_exist=*/true, fired.empty() ? 0 : fired.back().order);
    for (const auto& op : fired) {
      f.TreeSet(op.path, nlohmann::json::parse(op.payload));
      f.Append(Entry("r", op.path, op.payload));
    }
    return store_->CommitBlocking(std::move(f));
  };
  // An op registered after the read makes the firing batch fail instead of silently dropping it.
  {
    auto read = store_->sessions().OnDisconnectOps("s1");
    WriteBatch late;
    late.AddOnDisconnect("s1", Op(OnDisconnectOp::Kind::kSet, "/late", "1"));
    ASSERT_TRUE(Commit(std::move(late)).ok());
    WriteBatch stale;
    stale.RemoveSession("s1", true, read.back().order);
    EXPECT_EQ(Commit(std::move(stale)).code, StatusCode::kConflict);
    WriteBatch cancel_late;
    cancel_late.CancelOnDisconnect("s1", "/late");
    ASSERT_TRUE(Commit(std::move(cancel_late)).ok());
  }
  BatchResult first = fire();
  ASSERT_TRUE(first.status.ok()) << first.status.ToString();
  EXPECT_EQ(first.seqs.size(), 2u);
  EXPECT_EQ(fire().status.code, StatusCode::kNotFound);  // second firing is refused
  EXPECT_EQ(store_->queue().Peek("r", 10).size(), 2u);
  EXPECT_FALSE(store_->sessions().Get("s1"));
  EXPECT_FALSE(store_->sessions().FindByLongToken(std::string(32, 'a')));
  EXPECT_TRUE(store_->sessions().OnDisconnectOps("s1").empty());
  EXPECT_EQ(store_->tree().Get("/presence/d1"), false);
  ExpectHealthy();
}

}  // namespace
}  // namespace tether::store
