// CloudLink and CloudBridge registrations last as long as their owner: the local copy's cloud
// reader goes with the link, and a store commit arriving after the bridge is gone does nothing
// (under ASan a use after free would fail the test). The cloud is a closed port: nothing here
// needs an answer.
#include "gateway/cloud/cloud_link.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "tests/store/store_test_util.h"

namespace tether {
namespace {

constexpr const char* kConfig =
    "upstream:\n  url: http://127.0.0.1:9\n"
    "routes:\n  - { name: r, match: \"r/**\" }\n";

class NullListener : public CloudLinkListener {
 public:
  void SetCloudLink(bool connected, std::optional<int64_t>) override { links += connected ? 1 : 0; }
  void OnTransactionConflict() override {}
  int links = 0;
};

class CloudLinkLifetime : public ::testing::Test {
 protected:
  void SetUp() override {
    uv_loop_init(&loop_);
    store_ = store::Store::Open(dir_.Sub("db"), store::StoreOptions{}, &loop_);
    local_ = std::make_unique<LocalCopy>(&loop_, *store_);
  }
  void TearDown() override {
    local_.reset();
    store_->Close();
    uv_run(&loop_, UV_RUN_DEFAULT);
    store_.reset();
    uv_run(&loop_, UV_RUN_DEFAULT);
    EXPECT_EQ(uv_loop_close(&loop_), 0);
  }
  // Queues one write of route r and returns its seq.
  uint64_t QueueOne() {
    store::WriteBatch b;
    b.Append(store::testing::Entry("r", "r/a", "1"));
    uint64_t seq = 0;
    bool done = false;
    store_->Submit(std::move(b), [&](const store::BatchResult& res) {
      EXPECT_TRUE(res.status.ok());
      seq = res.seqs.at(0);
      done = true;
    });
    while (!done) uv_run(&loop_, UV_RUN_ONCE);
    return seq;
  }
  void RunUntilCommitted() {  // one more batch through the writer: every earlier one committed
    bool done = false;
    store_->Submit(store::WriteBatch{}, [&](const store::BatchResult&) { done = true; });
    while (!done) uv_run(&loop_, UV_RUN_ONCE);
  }

  uv_loop_t loop_;
  store::testing::TempDir dir_;
  std::unique_ptr<store::Store> store_;
  std::unique_ptr<LocalCopy> local_;
  NullListener listener_;
  Config config_ = Config::Parse(kConfig, "t.yaml");
};

TEST_F(CloudLinkLifetime, TheLocalCopyReadsTheCloudOnlyWhileTheLinkExists) {
  EXPECT_FALSE(local_->has_cloud());
  {
    CloudLink link(&loop_, config_, {}, *store_, *local_, listener_);
    EXPECT_TRUE(local_->has_cloud());
    link.Stop();
  }
  EXPECT_FALSE(local_->has_cloud()) << "the link's reader registration ends with it";
  uv_run(&loop_, UV_RUN_NOWAIT);  // close the link's timers
}

TEST_F(CloudLinkLifetime, ASettleCommittedWhileTheBridgeLivesWakesTheRoute) {
  uint64_t seq = QueueOne();
  auto routes = std::make_shared<const RouteTable>(config_);
  CloudBridge bridge(*store_, *local_, routes, listener_);
  std::vector<std::string> settled;
  util::Subscription hook = bridge.SetSettledHook([&](const std::string& route) { settled.push_back(route); });
  ASSERT_EQ(bridge.Peek("r", 10).size(), 1u);
  bridge.Confirmed("r", seq);
  EXPECT_TRUE(bridge.Peek("r", 10).empty()) << "the route waits for its confirmation to commit";
  RunUntilCommitted();
  EXPECT_EQ(settled, std::vector<std::string>{"r"});
  EXPECT_EQ(store_->queue().Totals().entries, 0u);
}

TEST_F(CloudLinkLifetime, ASettleCommittedAfterTheBridgeIsGoneDoesNothing) {
  uint64_t seq = QueueOne();
  auto routes = std::make_shared<const RouteTable>(config_);
  int settled = 0;
  util::Subscription hook;  // outlives the bridge: inert once the bridge (and its hook) is gone
  {
    auto bridge = std::make_unique<CloudBridge>(*store_, *local_, routes, listener_);
    hook = bridge->SetSettledHook([&](const std::string&) { ++settled; });
    ASSERT_EQ(bridge->Peek("r", 10).size(), 1u);
    bridge->Confirmed("r", seq);  // its commit callback runs after the bridge is destroyed
  }
  RunUntilCommitted();
  EXPECT_EQ(settled, 0);
  EXPECT_EQ(store_->queue().Totals().entries, 0u) << "the acknowledgement itself still commits";
  hook.Reset();
}

}  // namespace
}  // namespace tether
