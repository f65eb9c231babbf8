// Drainer routes that change while it runs (reload) and route priorities, against fakecloud.
#include "upstream/drainer.h"

#include <gtest/gtest.h>

#include <chrono>
#include <functional>

#include "tests/upstream/fakecloud_process.h"
#include "tests/upstream/memory_outbox.h"
#include "tests/upstream/run_until.h"

namespace tether::upstream {
namespace {

using testing::RunUntil;

using testing::FakeCloud;
using testing::MemoryOutbox;
using K = OutboundOp::Kind;

class DrainerRoutes : public ::testing::Test {
 protected:
  void SetUp() override { uv_loop_init(&loop_); }
  void TearDown() override {
    drainer_.reset();
    http_.reset();
    uv_run(&loop_, UV_RUN_NOWAIT);
    uv_run(&loop_, UV_RUN_NOWAIT);
    EXPECT_EQ(uv_loop_close(&loop_), 0);
  }
  void Start(const FakeCloud& cloud, std::vector<RouteTarget> routes, DrainerOptions opt = {}) {
    http_ = std::make_unique<HttpClient>(&loop_);
    opt.base_url = cloud.url();
    opt.backoff_initial_ms = 50;
    opt.backoff_max_ms = 400;
    opt.poll_interval_ms = 10'000;  // only Notify() and set_route() wake routes here
    drainer_ = std::make_unique<Drainer>(&loop_, *http_, *creds_, outbox_, std::move(routes), opt);
    drainer_->Start();
  }
  // Paths of the logged data writes, in the order the cloud received them.
  static std::vector<std::string> WritePaths(const FakeCloud& cloud) {
    std::vector<std::string> out;
    for (auto& e : cloud.Control({{"op", "log"}})) out.push_back(e["path"].get<std::string>());
    return out;
  }

  uv_loop_t loop_;
  MemoryOutbox outbox_;
  std::unique_ptr<Credentials> creds_ = MakeNoCredentials();
  std::unique_ptr<HttpClient> http_;
  std::unique_ptr<Drainer> drainer_;
};

TEST_F(DrainerRoutes, ARouteAddedWhileRunningDrainsAtOnce) {
  FakeCloud cloud;
  Start(cloud, {{"a", "fleet/a"}});
  outbox_.Add({0, "new", K::Set, "x", "1", 0});
  drainer_->set_route({"new", "fleet/new"});
  ASSERT_TRUE(RunUntil(&loop_, [&] { return outbox_.pending() == 0; }, std::chrono::seconds(5)))
      << "the new route waited for a restart";
  EXPECT_EQ(cloud.Get("/fleet/new/x"), 1);
  EXPECT_EQ(drainer_->stats()["new"].uploaded_ops, 1u);
}

// Ops carry the root they are relative to; a route's target root only applies to ops without one,
// and one batch never mixes roots.
TEST_F(DrainerRoutes, OpRootsOverrideTheTargetRootAndSplitBatches) {
  FakeCloud cloud;
  OutboundOp old{0, "r", K::Set, "old/x", "1", 0};
  old.root = "";  // accepted under an earlier cloud pattern: absolute path
  outbox_.Add(old);
  OutboundOp cur{0, "r", K::Set, "y", "2", 0};
  cur.root = "v2";
  outbox_.Add(cur);
  outbox_.Add({0, "r", K::Set, "z", "3", 0});  // no root: the target's
  Start(cloud, {{"r", "target"}});
  ASSERT_TRUE(RunUntil(&loop_, [&] { return outbox_.pending() == 0; }));
  EXPECT_EQ(cloud.Get("/old/x"), 1);
  EXPECT_EQ(cloud.Get("/v2/y"), 2);
  EXPECT_EQ(cloud.Get("/target/z"), 3);
  EXPECT_EQ(WritePaths(cloud), (std::vector<std::string>{"/", "/v2", "/target"}));
}

// Both routes backlogged, one request slot: the high-priority route finishes first, while the
// low-priority one still gets every kPriorityShare-th slot.
TEST_F(DrainerRoutes, HigherPriorityDrainsFirstWithoutStarvingOthers) {
  FakeCloud cloud;
  constexpr int kBatches = 12, kOps = 10;
  for (int i = 0; i < kBatches * kOps; ++i) {
    outbox_.Add({0, "low", K::Set, "k" + std::to_string(i), std::to_string(i), 0});
    outbox_.Add({0, "high", K::Set, "k" + std::to_string(i), std::to_string(i), 0});
  }
  DrainerOptions opt;
  opt.max_parallel = 1;
  opt.limits.max_ops = kOps;
  Start(cloud, {{"low", "low", 0}, {"high", "high", 10}}, opt);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return outbox_.pending() == 0; }));
  std::vector<std::string> order = WritePaths(cloud);
  ASSERT_EQ(order.size(), 2u * kBatches);
  size_t last_high = 0, low_before = 0;
  for (size_t i = 0; i < order.size(); ++i) {
    if (order[i] == "/high") last_high = i;
  }
  for (size_t i = 0; i < last_high; ++i) low_before += order[i] == "/low";
  // 12 high batches with one low batch after every 3 high ones (the first slot is FIFO).
  EXPECT_LE(last_high, static_cast<size_t>(kBatches + kBatches / (Drainer::kPriorityShare - 1) + 1));
  EXPECT_GE(low_before, static_cast<size_t>(kBatches / Drainer::kPriorityShare)) << "low was starved";
  EXPECT_EQ(drainer_->stats()["low"].uploaded_ops, static_cast<uint64_t>(kBatches * kOps));

  // Equal priorities take turns again once the priority changes (set_route on a known route).
  drainer_->set_route({"high", "high", 0});
  cloud.Control({{"op", "reset"}});
  for (int i = 0; i < 4 * kOps; ++i) {
    outbox_.Add({0, "low", K::Set, "k" + std::to_string(i), "0", 0});
    outbox_.Add({0, "high", K::Set, "k" + std::to_string(i), "0", 0});
  }
  drainer_->Notify("low");
  drainer_->Notify("high");
  ASSERT_TRUE(RunUntil(&loop_, [&] { return outbox_.pending() == 0; }));
  order = WritePaths(cloud);
  ASSERT_EQ(order.size(), 8u);
  for (size_t i = 1; i < order.size(); ++i) EXPECT_NE(order[i], order[i - 1]) << "round-robin at " << i;
}

}  // namespace
}  // namespace tether::upstream
