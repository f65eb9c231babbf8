// WatchSet against fakecloud: streams up to the cap, polling beyond it, promotion when a stream
// slot frees up, streams closed when a path is no longer watched.
#include "upstream/watch_set.h"

#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <vector>

#include "tests/upstream/fakecloud_process.h"
#include "tests/upstream/run_until.h"

namespace tether::upstream {
namespace {

using testing::RunUntil;

using testing::FakeCloud;
using nlohmann::json;

struct Delivered {
  std::string path;
  json value;
  bool patch;
};

class WatchSetTest : public ::testing::Test {
 protected:
  void SetUp() override { uv_loop_init(&loop_); }
  void TearDown() override {
    watches_.reset();
    http_.reset();
    uv_run(&loop_, UV_RUN_NOWAIT);
    uv_run(&loop_, UV_RUN_NOWAIT);
    EXPECT_EQ(uv_loop_close(&loop_), 0);
  }
  void Start(const FakeCloud& cloud, size_t max_streams, int64_t poll_ms) {
    http_ = std::make_unique<HttpClient>(&loop_);
    creds_ = MakeNoCredentials();
    WatchSetOptions o;
    o.base_url = cloud.url();
    o.max_streams = max_streams;
    o.poll_interval_ms = poll_ms;
    watches_ = std::make_unique<WatchSet>(&loop_, *http_, *creds_, o,
                                          [this](const std::string& p, const json& v, bool patch) {
                                            got_.push_back({p, v, patch});
                                          });
  }
  // The latest value delivered for exactly `path` equals `want`.
  bool Holds(const std::string& path, const json& want) const {
    for (auto it = got_.rbegin(); it != got_.rend(); ++it) {
      if (it->path == path && !it->patch) return it->value == want;
    }
    return false;
  }
  size_t Count(const std::string& path) const {
    size_t n = 0;
    for (const auto& d : got_) n += d.path == path;
    return n;
  }
  uv_loop_t loop_;
  std::unique_ptr<HttpClient> http_;
  std::unique_ptr<Credentials> creds_;
  std::unique_ptr<WatchSet> watches_;
  std::vector<Delivered> got_;
};

TEST_F(WatchSetTest, StreamsUpToTheCapPollsBeyondAndPromotesWhenASlotFrees) {
  FakeCloud cloud;
  cloud.Control({{"op", "keepalive"}, {"ms", 100}});  // a closed stream is noticed by the server
  cloud.Request("PUT", "/w.json", R"({"a":1,"b":2,"c":3})");
  Start(cloud, 2, 300);
  watches_->Watch("w/a");
  watches_->Watch("/w/b/");
  watches_->Watch("w/c");
  watches_->Watch("w/a");  // idempotent
  EXPECT_EQ(watches_->streams(), 2u);
  EXPECT_EQ(watches_->polled(), 1u);
  EXPECT_FALSE(watches_->Streamed("w/c"));
  ASSERT_TRUE(RunUntil(&loop_, [&] { return Holds("w/a", 1) && Holds("w/b", 2) && Holds("w/c", 3); }));
  ASSERT_TRUE(RunUntil(&loop_, [&] {
    return cloud.Control({{"op", "streams"}}) == json::parse(R"({"/w/a":1,"/w/b":1})");
  }));
  // Streamed: a change arrives as an event. Polled: at the next read.
  cloud.Request("PUT", "/w/a/x.json", "10");
  ASSERT_TRUE(RunUntil(&loop_, [&] { return Holds("w/a/x", 10); }));
  cloud.Request("PUT", "/w/c.json", "30");
  ASSERT_TRUE(RunUntil(&loop_, [&] { return Holds("w/c", 30); }, std::chrono::seconds(3)));
  // An unchanged polled value is delivered once, however often it is read.
  size_t c_before = Count("w/c");
  RunUntil(&loop_, [] { return false; }, std::chrono::milliseconds(1000));
  EXPECT_EQ(Count("w/c"), c_before);
  // The last observer of w/a leaves: its stream closes and w/c gets the slot.
  watches_->Unwatch("w/a");
  EXPECT_TRUE(watches_->Streamed("w/c"));
  EXPECT_EQ(watches_->polled(), 0u);
  ASSERT_TRUE(RunUntil(&loop_, [&] {
    return cloud.Control({{"op", "streams"}}) == json::parse(R"({"/w/b":1,"/w/c":1})");
  }));
  size_t a_before = Count("w/a") + Count("w/a/x");
  cloud.Request("PUT", "/w/a/x.json", "11");
  cloud.Request("PUT", "/w/c.json", "31");
  ASSERT_TRUE(RunUntil(&loop_, [&] { return Holds("w/c", 31); }, std::chrono::seconds(3)));
  EXPECT_EQ(Count("w/a") + Count("w/a/x"), a_before) << "an unwatched path is not followed";
  watches_->Stop();
  ASSERT_TRUE(RunUntil(&loop_, [&] { return cloud.Control({{"op", "streams"}}).empty(); }));
}

TEST_F(WatchSetTest, AStreamTheCloudCancelsFallsBackToPolling) {
  FakeCloud cloud;
  cloud.Request("PUT", "/p.json", "1");
  Start(cloud, 4, 200);
  watches_->Watch("p");
  ASSERT_TRUE(RunUntil(&loop_, [&] { return Holds("p", 1) && watches_->Streamed("p"); }));
  cloud.Control({{"op", "stream_event"}, {"type", "cancel"}, {"data", "permission denied"}});
  ASSERT_TRUE(RunUntil(&loop_, [&] { return watches_->polled() == 1; }));
  EXPECT_EQ(watches_->streams(), 0u);
  cloud.Request("PUT", "/p.json", "2");
  ASSERT_TRUE(RunUntil(&loop_, [&] { return Holds("p", 2); }, std::chrono::seconds(3)))
      << cloud.Control({{"op", "attempts"}}).dump() << got_.size();
}

}  // namespace
}  // namespace tether::upstream
