// Group commit: many batches in one transaction, each still atomic on its own.
#include <gtest/gtest.h>

#include "store/store.h"
#include "tests/store/store_test_util.h"

namespace tether::store {
namespace {

using testing::Entry;
using testing::TempDir;

class GroupCommitTest : public ::testing::Test {
 protected:
  void SetUp() override { uv_loop_init(&loop_); }
  void TearDown() override {
    store_.reset();
    uv_run(&loop_, UV_RUN_DEFAULT);
    EXPECT_EQ(uv_loop_close(&loop_), 0);
  }
  void Open(StoreOptions o) { store_ = Store::Open(dir_.Sub("db"), o, &loop_); }
  void ExpectHealthy() {
    CheckReport r = store_->Check();
    EXPECT_TRUE(r.ok) << (r.problems.empty() ? "" : r.problems.front());
  }

  TempDir dir_;
  uv_loop_t loop_;
  std::unique_ptr<Store> store_;
};

TEST_F(GroupCommitTest, FailingBatchesRollBackAloneInsideAGroup) {
  StoreOptions o;
  o.route_limits["limited"] = QueueLimits{50, 0, OverflowPolicy::kReject, 0};
  Open(o);
  std::vector<BatchResult> results(600);
  for (int i = 0; i < 600; ++i) {
    WriteBatch b;
    const std::string n = std::to_string(i);
    b.TreeSet("/g/" + n, i);
    b.Append(Entry("all", "/g/" + n, n));
    if (i % 3 == 1) b.TouchSession("missing", 1);             // fails: kNotFound, after 2 writes
    if (i % 3 == 2) b.Append(Entry("limited", "/g/" + n, n));  // fails once 50 are queued
    store_->Submit(std::move(b), [&results, i](const BatchResult& r) { results[i] = r; });
  }
  uv_run(&loop_, UV_RUN_DEFAULT);
  std::vector<std::string> expected_all;
  int limited_ok = 0;
  for (int i = 0; i < 600; ++i) {
    const std::string n = std::to_string(i);
    const bool ok = results[i].status.ok();
    if (i % 3 == 0) {
      ASSERT_TRUE(ok) << i << " " << results[i].status.ToString();
    }
    if (i % 3 == 1) {
      ASSERT_EQ(results[i].status.code, StatusCode::kNotFound);
    }
    if (i % 3 == 2) {
      ASSERT_EQ(ok, limited_ok < 50) << i;
      if (!ok) {
        ASSERT_EQ(results[i].status.code, StatusCode::kRejected);
      }
      limited_ok += ok;
    }
    // All or nothing: the tree leaf exists exactly when the batch succeeded.
    ASSERT_EQ(store_->tree().Get("/g/" + n).is_null(), !ok) << i;
    if (ok) expected_all.push_back(n);
  }
  auto all = store_->queue().Peek("all", 10000);
  ASSERT_EQ(all.size(), expected_all.size());
  for (size_t i = 0; i < all.size(); ++i) {
    ASSERT_EQ(all[i].payload, expected_all[i]);
    if (i) {
      ASSERT_GT(all[i].seq, all[i - 1].seq);
    }
  }
  EXPECT_EQ(store_->queue().Stats("limited")->depth, 50u);
  EXPECT_EQ(store_->queue().Stats("limited")->rejected, 150u);
  ExpectHealthy();
}

TEST_F(GroupCommitTest, MapFullInsideAGroupFailsOnlyWhatDoesNotFit) {
  StoreOptions o;
  o.map_size = 1 << 20;
  Open(o);
  const std::string payload(900, 'p');
  std::vector<BatchResult> results(2000);
  for (int i = 0; i < 2000; ++i) {
    WriteBatch b;
    b.Append(Entry("r", "/x", payload + std::to_string(i)));
    store_->Submit(std::move(b), [&results, i](const BatchResult& r) { results[i] = r; });
  }
  uv_run(&loop_, UV_RUN_DEFAULT);
  std::vector<uint64_t> acked;
  int full = 0;
  for (const BatchResult& r : results) {
    if (r.status.ok()) {
      acked.push_back(r.seqs[0]);
    } else {
      ASSERT_EQ(r.status.code, StatusCode::kFull) << r.status.ToString();
    }
    full += !r.status.ok();
  }
  EXPECT_GT(full, 0);
  EXPECT_GT(acked.size(), 100u);
  auto q = store_->queue().Peek("r", 10000);
  ASSERT_EQ(q.size(), acked.size());
  for (size_t i = 0; i < q.size(); ++i) ASSERT_EQ(q[i].seq, acked[i]);
  ExpectHealthy();
  // Recovers by itself once uploads are acknowledged.
  WriteBatch ack;
  ack.AckThrough("r", UINT64_MAX);
  bool acked_ok = false;
  store_->Submit(std::move(ack), [&](const BatchResult& r) { acked_ok = r.status.ok(); });
  uv_run(&loop_, UV_RUN_DEFAULT);
  ASSERT_TRUE(acked_ok);
  WriteBatch more;
  more.Append(Entry("r", "/x", payload));
  bool more_ok = false;
  store_->Submit(std::move(more), [&](const BatchResult& r) { more_ok = r.status.ok(); });
  uv_run(&loop_, UV_RUN_DEFAULT);
  EXPECT_TRUE(more_ok);
  ExpectHealthy();
}

TEST_F(GroupCommitTest, TtlTimerSweepsOnTheLoop) {
  StoreOptions o;
  o.route_limits["t"] = QueueLimits{0, 0, OverflowPolicy::kReject, 50};
  o.ttl_sweep_interval_ms = 20;
  Open(o);
  bool ok = false;
  WriteBatch b;
  b.Append(Entry("t", "/x", "1"));
  store_->Submit(std::move(b), [&](const BatchResult& r) { ok = r.status.ok(); });
  uv_run(&loop_, UV_RUN_DEFAULT);
  ASSERT_TRUE(ok);
  // Keep the loop alive ~300 ms so the (unref'd) sweep timer can fire.
  uv_timer_t keepalive;
  uv_timer_init(&loop_, &keepalive);
  uv_timer_start(&keepalive, [](uv_timer_t*) {}, 300, 0);
  uv_run(&loop_, UV_RUN_DEFAULT);
  uv_close(reinterpret_cast<uv_handle_t*>(&keepalive), nullptr);
  uv_run(&loop_, UV_RUN_DEFAULT);
  EXPECT_EQ(store_->queue().Stats("t")->depth, 0u);
  EXPECT_EQ(store_->queue().Stats("t")->expired, 1u);
  ExpectHealthy();
}

// A committed group's callbacks run a slice per loop iteration, in order, so the loop gets back to
// its sockets between slices: run at once, 4,096 of them kept it from reading for ≈ 30 ms, and a
// few groups in a row long enough under load for the kernel to drop datagrams.
TEST_F(GroupCommitTest, ALargeGroupsCallbacksRunASliceAPerLoopIterationInOrder) {
  Open(StoreOptions{});
  constexpr int kBatches = 1000;  // one group: all submitted in one iteration, under max_group_batches
  std::vector<int> order;
  for (int i = 0; i < kBatches; ++i) {
    WriteBatch b;
    b.TreeSet("/slices/" + std::to_string(i), i);
    store_->Submit(std::move(b), [&order, i](const BatchResult& r) {
      EXPECT_TRUE(r.status.ok()) << r.status.ToString();
      order.push_back(i);
    });
  }
  // After each iteration's I/O (uv_check): how many callbacks have run by then.
  struct Iterations {
    const std::vector<int>* order;
    std::vector<size_t> ran;
  } seen{&order, {}};
  uv_check_t check;
  uv_check_init(&loop_, &check);
  check.data = &seen;
  uv_check_start(&check, [](uv_check_t* h) {
    auto* it = static_cast<Iterations*>(h->data);
    it->ran.push_back(it->order->size());
  });
  uv_unref(reinterpret_cast<uv_handle_t*>(&check));
  uv_run(&loop_, UV_RUN_DEFAULT);
  uv_close(reinterpret_cast<uv_handle_t*>(&check), nullptr);
  uv_run(&loop_, UV_RUN_DEFAULT);

  ASSERT_EQ(order.size(), static_cast<size_t>(kBatches));
  for (int i = 0; i < kBatches; ++i) ASSERT_EQ(order[i], i) << "in submission order";
  size_t most = 0, slices = 0;
  for (size_t k = 1; k < seen.ran.size(); ++k) {
    const size_t ran = seen.ran[k] - seen.ran[k - 1];
    most = std::max(most, ran);
    slices += ran > 0;
  }
  most = std::max(most, seen.ran.empty() ? size_t{0} : seen.ran[0]);
  EXPECT_LE(most, 256u) << "callbacks run in one loop iteration";
  EXPECT_GE(slices, static_cast<size_t>(kBatches / 256)) << "iterations that ran callbacks";
  ExpectHealthy();
}

}  // namespace
}  // namespace tether::store
