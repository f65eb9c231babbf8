// SyncStream and RestGet against the fakecloud process.
#include "upstream/sync_stream.h"

#include <gtest/gtest.h>

#include <chrono>
#include <functional>

#include "tests/upstream/fakecloud_process.h"
#include "upstream/rest_get.h"
#include "tests/upstream/run_until.h"

namespace tether::upstream {
namespace {

using testing::RunUntil;

using testing::FakeCloud;

struct Seen {
  FirebaseEvent event;
  bool full;
};

class SyncStreamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    uv_loop_init(&loop_);
    http_ = std::make_unique<HttpClient>(&loop_);
    creds_ = MakeNoCredentials();
  }
  void TearDown() override {
    stream_.reset();
    http_.reset();
    uv_run(&loop_, UV_RUN_NOWAIT);
    EXPECT_EQ(uv_loop_close(&loop_), 0);
  }
  void Open(const FakeCloud& cloud, int64_t idle_ms = 60000) {
    SyncStreamOptions opt{cloud.url(), "cfg", idle_ms, 50, 200};
    stream_ = std::make_unique<SyncStream>(
        &loop_, *http_, *creds_, opt, [this](const FirebaseEvent& e, bool full) {
          seen_.push_back({e, full});
        }, [this](const std::string& why) { cancelled_ = why; });
    stream_->Start();
  }
  uv_loop_t loop_;
  std::unique_ptr<HttpClient> http_;
  std::unique_ptr<Credentials> creds_;
  std::unique_ptr<SyncStream> stream_;
  std::vector<Seen> seen_;
  std::string cancelled_;
};

TEST_F(SyncStreamTest, InitialPutThenPatchesThenResyncAfterCut) {
  FakeCloud cloud;
  cloud.Request("PUT", "/cfg.json", R"({"a":1})");
  Open(cloud);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return seen_.size() == 1; }));
  EXPECT_TRUE(seen_[0].full);
  EXPECT_EQ(seen_[0].event.path, "/");
  EXPECT_EQ(seen_[0].event.data["a"], 1);
  cloud.Request("PATCH", "/cfg.json", R"({"b/c":2})");
  ASSERT_TRUE(RunUntil(&loop_, [&] { return seen_.size() == 2; }));
  EXPECT_EQ(seen_[1].event.kind, FirebaseEvent::Kind::Patch);
  EXPECT_FALSE(seen_[1].full);
  EXPECT_EQ(seen_[1].event.data["b/c"], 2);
  cloud.Request("PUT", "/cfg/d.json", "3");
  ASSERT_TRUE(RunUntil(&loop_, [&] { return seen_.size() == 3; }));
  EXPECT_EQ(seen_[2].event.path, "/d");
  EXPECT_FALSE(seen_[2].full);
  cloud.Control({{"op", "cut_streams"}});  // half an event, then the connection closes
  ASSERT_TRUE(RunUntil(&loop_, [&] { return seen_.size() == 4; }));
  EXPECT_TRUE(seen_[3].full);
  EXPECT_EQ(seen_[3].event.data, nlohmann::json::parse(R"({"a":1,"b":{"c":2},"d":3})"));
  EXPECT_EQ(stream_->connects(), 2u);
}

TEST_F(SyncStreamTest, SilentStreamIsDetectedAndReopened) {
  FakeCloud cloud;
  Open(cloud, 1000);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return seen_.size() == 1; }));
  cloud.Control({{"op", "silence_streams"}, {"on", true}});
  cloud.Request("PUT", "/cfg/x.json", "1");  // not delivered: the stream is silent
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(RunUntil(&loop_, [&] { return stream_->connects() >= 2; }));
  EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(900));
  cloud.Control({{"op", "silence_streams"}, {"on", false}});
  ASSERT_TRUE(RunUntil(&loop_, [&] {
    return !seen_.empty() && seen_.back().full && seen_.back().event.data == nlohmann::json{{"x", 1}};
  }));
}

TEST_F(SyncStreamTest, KeepAlivesKeepTheStreamOpen) {
  FakeCloud cloud;
  cloud.Control({{"op", "keepalive"}, {"ms", 200}});
  Open(cloud, 1000);
  RunUntil(&loop_, [] { return false; }, std::chrono::milliseconds(2500));
  EXPECT_EQ(stream_->connects(), 1u);
  EXPECT_EQ(seen_.size(), 1u);  // keep-alives are not delivered
}

TEST_F(SyncStreamTest, AuthRevokedReconnectsAndCancelStops) {
  FakeCloud cloud;
  Open(cloud);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return seen_.size() == 1; }));
  cloud.Control({{"op", "stream_event"}, {"type", "auth_revoked"}, {"data", "credential expired"}});
  ASSERT_TRUE(RunUntil(&loop_, [&] { return stream_->connects() == 2 && seen_.size() == 2; }));
  EXPECT_TRUE(seen_[1].full);
  cloud.Control({{"op", "stream_event"}, {"type", "cancel"}, {"data", "permission denied"}});
  ASSERT_TRUE(RunUntil(&loop_, [&] { return !cancelled_.empty(); }));
  EXPECT_EQ(cancelled_, "permission denied");
  EXPECT_FALSE(stream_->open());
  RunUntil(&loop_, [] { return false; }, std::chrono::milliseconds(500));
  EXPECT_EQ(stream_->connects(), 2u);  // cancelled streams stay closed
}

int StreamGets(const FakeCloud& cloud, const std::string& path) {
  int n = 0;
  for (auto& a : cloud.Control({{"op", "attempts"}})) n += a["method"] == "GET" && a["path"] == path;
  return n;
}

// A server without streaming answers the stream request with the plain value (npm
// firebase-server): that is a read, delivered as the whole value, and asked again every poll
// interval, not a failure to reconnect from at once (which it was: ~3 requests a second).
TEST_F(SyncStreamTest, AServerWithoutStreamingIsReadPeriodically) {
  FakeCloud cloud;
  cloud.Request("PUT", "/cfg.json", R"({"a":1})");
  cloud.Control({{"op", "no_streaming"}, {"on", true}});
  SyncStreamOptions opt{cloud.url(), "cfg", 60000, 50, 200};
  opt.poll_interval_ms = 500;
  std::vector<std::string> said;
  opt.on_polling = [&](bool polling, const std::string& why) { said.push_back((polling ? "polling: " : "streaming: ") + why); };
  stream_ = std::make_unique<SyncStream>(&loop_, *http_, *creds_, opt, [this](const FirebaseEvent& e, bool full) {
    seen_.push_back({e, full});
  });
  stream_->Start();
  ASSERT_TRUE(RunUntil(&loop_, [&] { return seen_.size() == 1; }));
  EXPECT_TRUE(seen_[0].full);
  EXPECT_EQ(seen_[0].event.data, nlohmann::json::parse(R"({"a":1})"));
  EXPECT_TRUE(stream_->polling());
  EXPECT_FALSE(stream_->open());
  ASSERT_EQ(said.size(), 1u);
  EXPECT_EQ(said[0], "polling: the cloud answered application/json instead of text/event-stream");
  cloud.Request("PUT", "/cfg/b.json", "2");
  RunUntil(&loop_, [] { return false; }, std::chrono::milliseconds(2000));
  EXPECT_EQ(seen_.back().event.data, nlohmann::json::parse(R"({"a":1,"b":2})")) << "the next read brought it";
  int gets = StreamGets(cloud, "/cfg.json");
  EXPECT_GE(gets, 4);
  EXPECT_LE(gets, 6) << "one read per 500 ms";
  EXPECT_EQ(stream_->connects(), 0u) << "never counted as a stream";
  // The server streams again: so does the gateway, at its next read.
  cloud.Control({{"op", "no_streaming"}, {"on", false}});
  ASSERT_TRUE(RunUntil(&loop_, [&] { return stream_->open(); }, std::chrono::seconds(3)));
  EXPECT_FALSE(stream_->polling());
  EXPECT_EQ(stream_->connects(), 1u);
  EXPECT_EQ(said.back(), "streaming: the cloud streams again");
}

// 200 text/event-stream and then closed before a single event: not up, so the backoff is not
// reset, and reconnects slow down exponentially (with jitter) instead of repeating at once.
TEST_F(SyncStreamTest, AStreamIsUpOnlyOnceItDeliveredItsFirstEvent) {
  FakeCloud cloud;
  cloud.Control({{"op", "stream_empty"}, {"on", true}});
  SyncStreamOptions opt{cloud.url(), "cfg", 60000, 100, 1600};
  std::vector<bool> links;
  stream_ = std::make_unique<SyncStream>(
      &loop_, *http_, *creds_, opt, [this](const FirebaseEvent& e, bool full) { seen_.push_back({e, full}); }, nullptr,
      [&](bool up) { links.push_back(up); });
  stream_->Start();
  RunUntil(&loop_, [] { return false; }, std::chrono::milliseconds(2500));
  EXPECT_EQ(stream_->connects(), 0u);
  EXPECT_FALSE(stream_->open());
  // Delays drawn from [50,100], [100,200], [200,400], [400,800], [800,1600] ms.
  int gets = StreamGets(cloud, "/cfg.json");
  EXPECT_GE(gets, 4);
  EXPECT_LE(gets, 7) << "backing off, not reconnecting at once";
  EXPECT_FALSE(links.empty()) << "each answer still says the cloud is reachable";
  cloud.Control({{"op", "stream_empty"}, {"on", false}});
  ASSERT_TRUE(RunUntil(&loop_, [&] { return stream_->open(); }, std::chrono::seconds(5)));
  EXPECT_EQ(stream_->connects(), 1u);
}

TEST_F(SyncStreamTest, GetWithEtag) {
  FakeCloud cloud;
  cloud.Request("PUT", "/dev/1.json", R"({"on":true})");
  GetResult got;
  bool done = false;
  RestGet(*http_, *creds_, cloud.url(), "/dev/1", 5000, true, [&](GetResult r) {
    got = std::move(r);
    done = true;
  });
  ASSERT_TRUE(RunUntil(&loop_, [&] { return done; }));
  EXPECT_TRUE(got.ok);
  EXPECT_EQ(got.value["on"], true);
  EXPECT_FALSE(got.etag.empty());
  done = false;
  RestGet(*http_, *creds_, cloud.url(), "/missing", 5000, false, [&](GetResult r) {
    got = std::move(r);
    done = true;
  });
  ASSERT_TRUE(RunUntil(&loop_, [&] { return done; }));
  EXPECT_TRUE(got.ok);
  EXPECT_TRUE(got.value.is_null());
}

// A credential that is stale until refreshed: Query() never fixes itself, so only a refresh
// after a 401 can make requests pass.
class RotatingToken : public Credentials {
 public:
  std::string Query() override { return "access_token=tok" + std::to_string(generation_); }
  void Refresh(std::function<void(bool)> done) override {
    ++refreshes;
    ++generation_;
    done(true);
  }
  int refreshes = 0;

 private:
  int generation_ = 0;
};

TEST_F(SyncStreamTest, UnauthorizedStreamRefreshesTheCredentialThenConnects) {
  FakeCloud cloud;
  cloud.Control({{"op", "tokens"}, {"values", {"tok1"}}});  // tok0 is stale
  cloud.Request("PUT", "/cfg.json?access_token=tok1", R"({"a":1})");
  RotatingToken creds;
  SyncStreamOptions opt{cloud.url(), "cfg", 60000, 50, 200};
  stream_ = std::make_unique<SyncStream>(&loop_, *http_, creds, opt, [this](const FirebaseEvent& e, bool full) {
    seen_.push_back({e, full});
  });
  stream_->Start();
  ASSERT_TRUE(RunUntil(&loop_, [&] { return seen_.size() == 1; }));
  EXPECT_EQ(creds.refreshes, 1);
  EXPECT_TRUE(seen_[0].full);
  EXPECT_EQ(seen_[0].event.data["a"], 1);
}

TEST_F(SyncStreamTest, GetRefreshesTheCredentialOnceAfterA401) {
  FakeCloud cloud;
  cloud.Control({{"op", "tokens"}, {"values", {"tok1"}}});
  cloud.Request("PUT", "/dev.json?access_token=tok1", "5");
  RotatingToken creds;
  GetResult got;
  bool done = false;
  RestGet(*http_, creds, cloud.url(), "dev", 5000, false, [&](GetResult r) { got = std::move(r), done = true; });
  ASSERT_TRUE(RunUntil(&loop_, [&] { return done; }));
  EXPECT_TRUE(got.ok) << got.error;
  EXPECT_EQ(got.value, 5);
  EXPECT_EQ(creds.refreshes, 1);
  cloud.Control({{"op", "tokens"}, {"values", {"other"}}});  // no refresh helps now: one retry, then 401
  done = false;
  RestGet(*http_, creds, cloud.url(), "dev", 5000, false, [&](GetResult r) { got = std::move(r), done = true; });
  ASSERT_TRUE(RunUntil(&loop_, [&] { return done; }));
  EXPECT_FALSE(got.ok);
  EXPECT_EQ(got.status, 401);
  EXPECT_EQ(creds.refreshes, 2);
}

TEST_F(SyncStreamTest, RootsAndReadsWithKeysThatNeedPercentEncoding) {
  FakeCloud cloud;
  const std::string root = "a b/q?x&y/pct%41+/\xc3\xbc";
  cloud.Request("PUT", "/a%20b/q%3Fx%26y/pct%2541%2B/%C3%BC.json", R"({"v":1})");
  SyncStreamOptions opt{cloud.url(), root, 60000, 50, 200};
  stream_ = std::make_unique<SyncStream>(&loop_, *http_, *creds_, opt, [this](const FirebaseEvent& e, bool full) {
    seen_.push_back({e, full});
  });
  stream_->Start();
  ASSERT_TRUE(RunUntil(&loop_, [&] { return seen_.size() == 1; }));
  EXPECT_EQ(seen_[0].event.data, nlohmann::json::parse(R"({"v":1})"));
  cloud.Request("PUT", "/a%20b/q%3Fx%26y/pct%2541%2B/%C3%BC/w.json", "2");
  ASSERT_TRUE(RunUntil(&loop_, [&] { return seen_.size() == 2; }));
  EXPECT_EQ(seen_[1].event.path, "/w");
  GetResult got;
  bool done = false;
  RestGet(*http_, *creds_, cloud.url(), root + "/v", 5000, false, [&](GetResult r) { got = std::move(r), done = true; });
  ASSERT_TRUE(RunUntil(&loop_, [&] { return done; }));
  EXPECT_TRUE(got.ok) << got.error;
  EXPECT_EQ(got.value, 1);
}

}  // namespace
}  // namespace tether::upstream
