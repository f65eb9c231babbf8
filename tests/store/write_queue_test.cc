#include <sys/stat.h>

#include <chrono>

#include <gtest/gtest.h>

#include "store/pending_index.h"
#include "store/store.h"
#include "store/store_error.h"
#include "tests/store/store_test_util.h"

namespace tether::store {
namespace {

using testing::Entry;
using testing::TempDir;

BatchResult AppendOne(Store& s, const std::string& route, const std::string& payload,
                      const std::string& path = "/devices/d1/x") {
  WriteBatch b;
  b.Append(Entry(route, path, payload));
  return s.CommitBlocking(std::move(b));
}

void ExpectHealthy(const Store& s) {
  CheckReport r = s.Check();
  EXPECT_TRUE(r.ok) << (r.problems.empty() ? "" : r.problems.front());
}

TEST(WriteQueueTest, AppendAssignsIncreasingSeqsAndPeekIsPerRouteInOrder) {
  TempDir dir;
  auto s = Store::Open(dir.Sub("db"), StoreOptions{}, nullptr);
  std::vector<uint64_t> a_seqs;
  for (int i = 0; i < 5; ++i) {
    BatchResult ra = AppendOne(*s, "a", "\"a" + std::to_string(i) + "\"");
    ASSERT_TRUE(ra.status.ok()) << ra.status.ToString();
    ASSERT_EQ(ra.seqs.size(), 1u);
    a_seqs.push_back(ra.seqs[0]);
    ASSERT_TRUE(AppendOne(*s, "b", "\"b\"").status.ok());
  }
  auto a = s->queue().Peek("a", 100);
  ASSERT_EQ(a.size(), 5u);
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(a[i].seq, a_seqs[i]);
    EXPECT_EQ(a[i].payload, "\"a" + std::to_string(i) + "\"");
    EXPECT_EQ(a[i].route, "a");
    EXPECT_EQ(a[i].boot_id, BootId());
    if (i) {
      EXPECT_GT(a[i].seq, a[i - 1].seq);
    }
  }
  EXPECT_EQ(s->queue().Peek("b", 100).size(), 5u);
  EXPECT_EQ(s->queue().Peek("a", 2).size(), 2u);
  EXPECT_EQ(s->queue().Peek("a", 100, a_seqs[2]).size(), 2u);
  EXPECT_TRUE(s->queue().Peek("nope", 10).empty());
  auto st = s->queue().Stats("a");
  ASSERT_TRUE(st);
  EXPECT_EQ(st->depth, 5u);
  EXPECT_GT(st->bytes, 0u);
  ASSERT_TRUE(st->oldest_wall_ms);
  EXPECT_EQ(s->queue().Totals().entries, 10u);
  ExpectHealthy(*s);
}

TEST(WriteQueueTest, AllFieldsRoundTrip) {
  TempDir dir;
  auto s = Store::Open(dir.Sub("db"), StoreOptions{}, nullptr);
  QueueEntry e = Entry("r", "/p/q", "{\"x\":1}", 1234);
  e.kind = OpKind::kIncrementUpdate;
  e.device_id = "devZ";
  e.boottime_ms = 777;
  e.cloud_offset_ms = -42;
  WriteBatch b;
  b.Append(e);
  ASSERT_TRUE(s->CommitBlocking(std::move(b)).status.ok());
  auto got = s->queue().Peek("r", 1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].kind, OpKind::kIncrementUpdate);
  EXPECT_EQ(got[0].device_id, "devZ");
  EXPECT_EQ(got[0].path, "/p/q");
  EXPECT_EQ(got[0].payload, "{\"x\":1}");
  EXPECT_EQ(got[0].wall_ms, 1234);
  EXPECT_EQ(got[0].boottime_ms, 777);
  EXPECT_EQ(got[0].cloud_offset_ms, std::optional<int64_t>(-42));
}

TEST(WriteQueueTest, AckThroughAndAckListDeleteOnlyNamedEntries) {
  TempDir dir;
  auto s = Store::Open(dir.Sub("db"), StoreOptions{}, nullptr);
  std::vector<uint64_t> seqs;
  for (int i = 0; i < 6; ++i) seqs.push_back(AppendOne(*s, "a", "1").seqs[0]);
  AppendOne(*s, "b", "1");
  WriteBatch b;
  b.AckThrough("a", seqs[2]);
  ASSERT_TRUE(s->CommitBlocking(std::move(b)).status.ok());
  auto left = s->queue().Peek("a", 10);
  ASSERT_EQ(left.size(), 3u);
  EXPECT_EQ(left[0].seq, seqs[3]);
  WriteBatch b2;
  b2.Ack("a", {seqs[4], 999999});
  ASSERT_TRUE(s->CommitBlocking(std::move(b2)).status.ok());
  left = s->queue().Peek("a", 10);
  ASSERT_EQ(left.size(), 2u);
  EXPECT_EQ(left[1].seq, seqs[5]);
  EXPECT_EQ(s->queue().Peek("b", 10).size(), 1u);
  EXPECT_EQ(s->queue().Stats("a")->depth, 2u);
  ExpectHealthy(*s);
}

TEST(WriteQueueTest, SeqsAndCountersSurviveReopen) {
  TempDir dir;
  uint64_t last = 0;
  {
    auto s = Store::Open(dir.Sub("db"), StoreOptions{}, nullptr);
    for (int i = 0; i < 3; ++i) last = AppendOne(*s, "a", "1").seqs[0];
    WriteBatch b;
    b.AckThrough("a", last);
    s->CommitBlocking(std::move(b));
  }
  auto s = Store::Open(dir.Sub("db"), StoreOptions{}, nullptr);
  EXPECT_EQ(s->queue().Stats("a")->depth, 0u);
  EXPECT_GT(AppendOne(*s, "a", "1").seqs[0], last);  // never reused, even after draining
  ExpectHealthy(*s);
}

TEST(WriteQueueTest, RejectPolicyFailsTheWholeBatchDistinguishably) {
  TempDir dir;
  StoreOptions o;
  o.route_limits["a"] = QueueLimits{2, 0, OverflowPolicy::kReject, 0};
  auto s = Store::Open(dir.Sub("db"), o, nullptr);
  ASSERT_TRUE(AppendOne(*s, "a", "1").status.ok());
  ASSERT_TRUE(AppendOne(*s, "a", "2").status.ok());
  WriteBatch b;
  b.TreeSet("/x", 1);
  b.Append(Entry("a", "/x", "3"));
  BatchResult r = s->CommitBlocking(std::move(b));
  EXPECT_EQ(r.status.code, StatusCode::kRejected);
  EXPECT_TRUE(r.seqs.empty());
  EXPECT_TRUE(s->tree().Get("/x").is_null());  // atomic: the tree write was rolled back too
  EXPECT_EQ(s->queue().Stats("a")->depth, 2u);
  EXPECT_EQ(s->queue().Stats("a")->rejected, 1u);
  EXPECT_TRUE(AppendOne(*s, "b", "1").status.ok());  // other routes unaffected
  ExpectHealthy(*s);
}

TEST(WriteQueueTest, DropOldestKeepsNewestAndCounts) {
  TempDir dir;
  StoreOptions o;
  o.route_limits["a"] = QueueLimits{3, 0, OverflowPolicy::kDropOldest, 0};
  auto s = Store::Open(dir.Sub("db"), o, nullptr);
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(AppendOne(*s, "a", std::to_string(i)).status.ok());
  auto left = s->queue().Peek("a", 10);
  ASSERT_EQ(left.size(), 3u);
  EXPECT_EQ(left[0].payload, "7");
  EXPECT_EQ(left[2].payload, "9");
  EXPECT_EQ(s->queue().Stats("a")->dropped_oldest, 7u);
  ExpectHealthy(*s);
}

TEST(WriteQueueTest, ByteLimitsAndGlobalLimits) {
  TempDir dir;
  StoreOptions o;
  o.default_route_limits = QueueLimits{0, 1000, OverflowPolicy::kReject, 0};
  o.global_max_entries = 4;
  auto s = Store::Open(dir.Sub("db"), o, nullptr);
  EXPECT_EQ(AppendOne(*s, "a", std::string(2000, 'x')).status.code, StatusCode::kInvalidArgument);
  int ok = 0;
  StatusCode last = StatusCode::kOk;
  for (int i = 0; i < 20; ++i) {
    BatchResult r = AppendOne(*s, "a", std::string(200, 'x'));
    if (r.status.ok()) ok++;
    last = r.status.code;
  }
  EXPECT_EQ(last, StatusCode::kRejected);
  EXPECT_LE(s->queue().Stats("a")->bytes, 1000u);
  EXPECT_GE(ok, 3);
  // Global entry bound across routes.
  for (int i = 0; i < 5; ++i) AppendOne(*s, "b", "1");
  EXPECT_EQ(s->queue().Totals().entries, 4u);
  ExpectHealthy(*s);
}

TEST(WriteQueueTest, TtlSweepDropsExpiredAndCounts) {
  TempDir dir;
  StoreOptions o;
  o.route_limits["t"] = QueueLimits{0, 0, OverflowPolicy::kReject, 1000};
  auto s = Store::Open(dir.Sub("db"), o, nullptr);
  const ClockReading t0{1'750'000'000'000, 50'000, "boot-a"};
  auto at = [&](int64_t after_ms) { return ClockReading{t0.wall_ms + after_ms, t0.boottime_ms + after_ms, t0.boot_id}; };
  WriteBatch b;
  b.Append(testing::EntryAt("t", "old", at(0)));
  b.Append(testing::EntryAt("t", "old2", at(500)));
  b.Append(testing::EntryAt("t", "new", at(10'000)));
  b.Append(testing::EntryAt("keep", "old", at(0)));  // no TTL on this route
  ASSERT_TRUE(s->CommitBlocking(std::move(b)).status.ok());
  WriteBatch sweep;
  sweep.SweepExpired(at(10'100));
  ASSERT_TRUE(s->CommitBlocking(std::move(sweep)).status.ok());
  auto left = s->queue().Peek("t", 10);
  ASSERT_EQ(left.size(), 1u);
  EXPECT_EQ(left[0].payload, "new");
  EXPECT_EQ(s->queue().Stats("t")->expired, 2u);
  EXPECT_EQ(s->queue().Peek("keep", 10).size(), 1u);
  ExpectHealthy(*s);
}

// A reload hands new limits to the running store: bounds, policy and TTL apply to the next batch.
TEST(WriteQueueTest, SetQueueLimitsAppliesToLaterBatches) {
  TempDir dir;
  StoreOptions o;
  o.route_limits["a"] = QueueLimits{2, 0, OverflowPolicy::kReject, 0};
  auto s = Store::Open(dir.Sub("db"), o, nullptr);
  ASSERT_TRUE(AppendOne(*s, "a", "1").status.ok());
  ASSERT_TRUE(AppendOne(*s, "a", "2").status.ok());
  EXPECT_EQ(AppendOne(*s, "a", "3").status.code, StatusCode::kRejected);
  // Raised bound and drop-oldest policy for "a"; a bound for the new route "n".
  s->SetQueueLimits({{"a", QueueLimits{3, 0, OverflowPolicy::kDropOldest, 0}},
                     {"n", QueueLimits{1, 0, OverflowPolicy::kReject, 1000}}});
  for (int i = 3; i <= 6; ++i) ASSERT_TRUE(AppendOne(*s, "a", std::to_string(i)).status.ok());
  auto left = s->queue().Peek("a", 10);
  ASSERT_EQ(left.size(), 3u);
  EXPECT_EQ(left[0].payload, "4");
  EXPECT_EQ(s->queue().Stats("a")->dropped_oldest, 3u);
  const ClockReading t0{1'750'000'000'000, 50'000, "boot-a"};
  WriteBatch old;
  old.Append(testing::EntryAt("n", "old", t0));
  ASSERT_TRUE(s->CommitBlocking(std::move(old)).status.ok());
  EXPECT_EQ(AppendOne(*s, "n", "2").status.code, StatusCode::kRejected);
  WriteBatch sweep;
  sweep.SweepExpired(ClockReading{t0.wall_ms + 10'000, t0.boottime_ms + 10'000, t0.boot_id});  // the new TTL applies
  ASSERT_TRUE(s->CommitBlocking(std::move(sweep)).status.ok());
  EXPECT_EQ(s->queue().Stats("n")->expired, 1u);
  EXPECT_EQ(s->queue().Stats("n")->depth, 0u);
  // Routes no longer listed fall back to the default limits (unlimited here).
  s->SetQueueLimits({});
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(AppendOne(*s, "n", "x").status.ok());
  ExpectHealthy(*s);
}

// A store opened without any TTL starts sweeping once new limits bring one.
TEST(WriteQueueTest, SetQueueLimitsWithATtlStartsTheSweepTimer) {
  TempDir dir;
  uv_loop_t loop;
  uv_loop_init(&loop);
  StoreOptions o;
  o.ttl_sweep_interval_ms = 20;
  auto s = Store::Open(dir.Sub("db"), o, &loop);
  int committed = 0;
  WriteBatch b;
  b.Append(Entry("t", "/x", "old", 10'000));
  s->Submit(std::move(b), [&](const BatchResult& r) { committed += r.status.ok(); });
  uv_run(&loop, UV_RUN_DEFAULT);
  ASSERT_EQ(committed, 1);
  s->SetQueueLimits({{"t", QueueLimits{0, 0, OverflowPolicy::kReject, 1000}}});
  uv_timer_t tick;  // the sweep timer does not keep a loop alive: this one does, while we wait
  uv_timer_init(&loop, &tick);
  uv_timer_start(&tick, [](uv_timer_t*) {}, 5, 5);
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (s->queue().Stats("t")->depth > 0 && std::chrono::steady_clock::now() < until) uv_run(&loop, UV_RUN_ONCE);
  uv_close(reinterpret_cast<uv_handle_t*>(&tick), nullptr);
  EXPECT_EQ(s->queue().Stats("t")->expired, 1u);
  s->Close();
  uv_run(&loop, UV_RUN_DEFAULT);
  EXPECT_EQ(uv_loop_close(&loop), 0);
}

TEST(WriteQueueTest, DeadLettersMoveListRetryDrop) {
  TempDir dir;
  auto s = Store::Open(dir.Sub("db"), StoreOptions{}, nullptr);
  uint64_t s1 = AppendOne(*s, "a", "1").seqs[0];
  uint64_t s2 = AppendOne(*s, "a", "2").seqs[0];
  uint64_t s3 = AppendOne(*s, "a", "3").seqs[0];
  WriteBatch b;
  b.MoveToDeadLetters("a", s1, "permission denied", 401, 5);
  b.MoveToDeadLetters("a", s2, "bad value", 400, 6);
  ASSERT_TRUE(s->CommitBlocking(std::move(b)).status.ok());
  WriteBatch missing;
  missing.MoveToDeadLetters("a", 424242, "x", 400, 0);
  EXPECT_EQ(s->CommitBlocking(std::move(missing)).status.code, StatusCode::kNotFound);
  auto dead = s->queue().DeadLetters(10);
  ASSERT_EQ(dead.size(), 2u);
  EXPECT_EQ(dead[0].entry.seq, s1);
  EXPECT_EQ(dead[0].reason, "permission denied");
  EXPECT_EQ(dead[0].http_status, 401);
  EXPECT_EQ(s->queue().Stats("a")->dead_lettered, 2u);
  EXPECT_EQ(s->queue().Stats("a")->depth, 1u);
  WriteBatch retry;
  retry.RetryDeadLetter(s1);
  BatchResult rr = s->CommitBlocking(std::move(retry));
  ASSERT_TRUE(rr.status.ok());
  ASSERT_EQ(rr.seqs.size(), 1u);
  EXPECT_GT(rr.seqs[0], s3);  // back at the tail with a new seq
  auto q = s->queue().Peek("a", 10);
  ASSERT_EQ(q.size(), 2u);
  EXPECT_EQ(q[1].payload, "1");
  WriteBatch drop;
  drop.DropDeadLetter(s2);
  ASSERT_TRUE(s->CommitBlocking(std::move(drop)).status.ok());
  EXPECT_TRUE(s->queue().DeadLetters(10).empty());
  EXPECT_EQ(s->queue().Totals().dead_entries, 0u);
  ExpectHealthy(*s);
}

uint64_t FileSize(const std::string& dir) {
  struct stat st;
  return stat((dir + "/data.mdb").c_str(), &st) == 0 ? st.st_size : 0;
}

TEST(WriteQueueTest, SpaceIsReusedAcrossFillDrainCycles) {
  TempDir dir;
  auto s = Store::Open(dir.Sub("db"), StoreOptions{}, nullptr);
  const std::string payload(300, 'p');
  uint64_t after_first = 0;
  for (int cycle = 0; cycle < 8; ++cycle) {
    for (int g = 0; g < 20; ++g) {
      WriteBatch b;
      for (int i = 0; i < 100; ++i) b.Append(Entry("a", "/x", payload));
      ASSERT_TRUE(s->CommitBlocking(std::move(b)).status.ok());
    }
    WriteBatch drain;
    drain.AckThrough("a", UINT64_MAX);
    ASSERT_TRUE(s->CommitBlocking(std::move(drain)).status.ok());
    if (cycle == 1) after_first = FileSize(dir.Sub("db"));
  }
  EXPECT_GT(after_first, 0u);
  EXPECT_LE(FileSize(dir.Sub("db")), after_first * 3 / 2) << "freed pages are not being reused";
  ExpectHealthy(*s);
}

TEST(WriteQueueTest, MapFullRejectsWithFullThenRecoversAfterAck) {
  TempDir dir;
  StoreOptions o;
  o.map_size = 1 << 20;  // 1 MiB, no growth
  auto s = Store::Open(dir.Sub("db"), o, nullptr);
  const std::string payload(1000, 'p');
  std::vector<uint64_t> acked;
  StatusCode last = StatusCode::kOk;
  for (int i = 0; i < 5000 && last == StatusCode::kOk; ++i) {
    BatchResult r = AppendOne(*s, "a", payload);
    last = r.status.code;
    if (r.status.ok()) acked.push_back(r.seqs[0]);
  }
  ASSERT_EQ(last, StatusCode::kFull);
  ASSERT_GT(acked.size(), 100u);
  // Nothing acknowledged was lost and reads still work.
  auto q = s->queue().Peek("a", acked.size() + 10);
  ASSERT_EQ(q.size(), acked.size());
  EXPECT_EQ(q.back().seq, acked.back());
  EXPECT_EQ(AppendOne(*s, "a", payload).status.code, StatusCode::kFull);
  // Upload confirmed -> ack frees pages -> writes work again.
  WriteBatch ack;
  ack.AckThrough("a", acked[acked.size() / 2]);
  ASSERT_TRUE(s->CommitBlocking(std::move(ack)).status.ok());
  BatchResult again = AppendOne(*s, "a", payload);
  EXPECT_TRUE(again.status.ok()) << again.status.ToString();
  ExpectHealthy(*s);
}

// A map filled with many small entries drains in the uploader's acknowledgements (2,000 at a
// time): near the end of the space they commit in pieces, and each commit leaves the pages the
// next needs (LMDB reuses freed pages two commits later). Past the pending index's mark, so
// deletes from both of its parts are in it.
TEST(WriteQueueTest, MapFullOfSmallEntriesDrainsInUploaderSizedAcks) {
  TempDir dir;
  StoreOptions o;
  o.map_size = 4 << 20;  // no growth
  auto s = Store::Open(dir.Sub("db"), o, nullptr);
  uint64_t last = 0;
  StatusCode code = StatusCode::kOk;
  for (int n = 0; n < 1000 && code == StatusCode::kOk; ++n) {
    WriteBatch b;
    for (int i = 0; i < 200; ++i) b.Append(Entry("a", "/d" + std::to_string(i % 64) + "/v", "1"));
    BatchResult r = s->CommitBlocking(std::move(b));
    code = r.status.code;
    if (r.status.ok()) last = r.seqs.back();
  }
  ASSERT_EQ(code, StatusCode::kFull);
  ASSERT_GT(last, 2 * PendingIndex::kPersistAt);  // written out at least once before filling up
  // As the uploader confirms them: a batch of at most 2,000 at a time (tetherd's default).
  BatchResult r;
  for (uint64_t through = 2000; through < last / 2; through += 2000) {
    WriteBatch ack;
    ack.AckThrough("a", through);
    r = s->CommitBlocking(std::move(ack));
    ASSERT_TRUE(r.status.ok()) << "through " << through << ": " << r.status.ToString();
  }
  WriteBatch more;
  more.Append(Entry("a", "/d1/v", "2"));
  r = s->CommitBlocking(std::move(more));
  EXPECT_TRUE(r.status.ok()) << r.status.ToString();
  WriteBatch rest;
  rest.AckThrough("a", UINT64_MAX);
  ASSERT_TRUE(s->CommitBlocking(std::move(rest)).status.ok());
  CheckReport check = s->Check();
  EXPECT_TRUE(check.ok) << (check.problems.empty() ? "" : check.problems.front());
  EXPECT_EQ(s->queue().Totals().entries, 0u);
}

TEST(WriteQueueTest, MapGrowsUpToConfiguredMax) {
  TempDir dir;
  StoreOptions o;
  o.map_size = 1 << 20;
  o.map_max = 8 << 20;
  auto s = Store::Open(dir.Sub("db"), o, nullptr);
  const std::string payload(1000, 'p');
  int ok = 0;
  StatusCode last = StatusCode::kOk;
  for (int i = 0; i < 20000 && last == StatusCode::kOk; ++i) {
    WriteBatch b;
    for (int j = 0; j < 10; ++j) b.Append(Entry("a", "/x", payload));
    last = s->CommitBlocking(std::move(b)).status.code;
    if (last == StatusCode::kOk) ok += 10;
  }
  EXPECT_EQ(last, StatusCode::kFull);
  EXPECT_EQ(s->map_size(), 8u << 20);
  EXPECT_GT(ok, 2000);  // a 1 MiB map holds < 900 such entries
  EXPECT_EQ(s->queue().Totals().entries, static_cast<uint64_t>(ok));
  ExpectHealthy(*s);
}

}  // namespace
}  // namespace tether::store
