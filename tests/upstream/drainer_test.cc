// Drainer against the real fakecloud process: order, auth pause, dead letters, backoff, outage.
#include "upstream/drainer.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <functional>
#include <iterator>

#include "tests/upstream/fakecloud_process.h"
#include "tests/upstream/memory_outbox.h"
#include "tests/upstream/run_until.h"
#include "tests/upstream/token_file_credentials.h"

namespace tether::upstream {
namespace {

using testing::RunUntil;

// Push ops arrive with the key already in the path (the gateway mints it); any unique,
// ordered key serves the test.
std::string PushKey(int i) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "-K%018d", i);
  return buf;
}

using testing::FakeCloud;
using testing::MemoryOutbox;
using K = OutboundOp::Kind;

// Runs the loop until `done()` or `limit`; returns done().

class DrainerTest : public ::testing::Test {
 protected:
  void SetUp() override { uv_loop_init(&loop_); }
  void TearDown() override {
    drainer_.reset();
    http_.reset();
    uv_run(&loop_, UV_RUN_NOWAIT);
    uv_run(&loop_, UV_RUN_NOWAIT);
    EXPECT_EQ(uv_loop_close(&loop_), 0);
  }
  void Start(const FakeCloud& cloud, Credentials& creds, std::vector<RouteTarget> routes,
             DrainerOptions opt = {}) {
    http_ = std::make_unique<HttpClient>(&loop_);
    opt.base_url = cloud.url();
    if (opt.backoff_initial_ms == DrainerOptions{}.backoff_initial_ms) opt.backoff_initial_ms = 50;
    if (opt.backoff_max_ms == DrainerOptions{}.backoff_max_ms) opt.backoff_max_ms = 400;
    opt.poll_interval_ms = 50;
    drainer_ = std::make_unique<Drainer>(&loop_, *http_, creds, outbox_, std::move(routes), opt);
    drainer_->Start();
  }
  // Adds n writes to route r: sets of "k<i%keys>" = i, each `push_every`-th a push under log/.
  void AddWrites(const std::string& route, int n, int keys = 50) {
    for (int i = 0; i < n; ++i) {
      if (i % 7 == 3) {
        outbox_.Add({0, route, K::Push, "log/" + PushKey(i), std::to_string(i), 0});
      } else {
        outbox_.Add({0, route, K::Set, "k" + std::to_string(i % keys), std::to_string(i), 0});
      }
    }
  }
  // Every value 0..n-1 written to `root` appears exactly once across the logged PATCHes, in order.
  static void ExpectOnceInOrder(const FakeCloud& cloud, const std::string& root, int n) {
    auto log = cloud.Control({{"op", "log"}});
    std::vector<int> seen;
    for (auto& e : log) {
      if (e["path"] != root) continue;
      EXPECT_EQ(e["method"], "PATCH");
      std::vector<std::pair<std::string, int>> kv;
      for (auto& [k, v] : e["body"].items()) kv.push_back({k, v.get<int>()});
      std::vector<int> vals;
      for (auto& [k, v] : kv) vals.push_back(v);
      std::sort(vals.begin(), vals.end());  // a PATCH body's key order is not the op order
      seen.insert(seen.end(), vals.begin(), vals.end());
    }
    ASSERT_EQ(seen.size(), static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) ASSERT_EQ(seen[i], i) << "at " << i;
  }

  uv_loop_t loop_;
  MemoryOutbox outbox_;
  std::unique_ptr<HttpClient> http_;
  std::unique_ptr<Drainer> drainer_;
};

TEST_F(DrainerTest, WritesOfTheRouteRootReplaceItWithAPut) {
  FakeCloud cloud;
  auto creds = MakeNoCredentials();
  outbox_.Add({0, "r", K::Set, "old", "1", 0});
  outbox_.Add({0, "r", K::Set, "", R"({"fresh":{"v":2}})", 0});
  outbox_.Add({0, "r", K::Set, "later", "3", 0});
  outbox_.Add({0, "other", K::Set, "keep", "4", 0});
  Start(cloud, *creds, {{"r", "fleet/r"}, {"other", "fleet/other"}});
  ASSERT_TRUE(RunUntil(&loop_, [&] { return outbox_.pending() == 0; }));
  EXPECT_EQ(cloud.Get("/fleet/r"), nlohmann::json::parse(R"({"fresh":{"v":2},"later":3})"));
  EXPECT_EQ(cloud.Get("/fleet/other/keep"), 4) << "a root write replaces only its own route";
  std::vector<std::string> methods;
  for (auto& e : cloud.Control({{"op", "log"}})) {
    if (e["path"] == "/fleet/r") methods.push_back(e["method"]);
  }
  EXPECT_EQ(methods, (std::vector<std::string>{"PATCH", "PUT", "PATCH"}));
  outbox_.Add({0, "r", K::Remove, "", "null", 0});
  drainer_->Notify("r");
  ASSERT_TRUE(RunUntil(&loop_, [&] { return outbox_.pending() == 0; }));
  EXPECT_TRUE(cloud.Get("/fleet/r").is_null());
}

TEST_F(DrainerTest, EverythingArrivesOnceInOrderAcrossRoutes) {
  FakeCloud cloud("--secret s3cret");
  auto creds = MakeDatabaseSecret("s3cret");
  AddWrites("a", 3000);
  AddWrites("b", 500, 3);  // few keys: many small batches
  Start(cloud, *creds, {{"a", "fleet/a"}, {"b", "fleet/b"}});
  ASSERT_TRUE(RunUntil(&loop_, [&] { return outbox_.pending() == 0; }));
  ExpectOnceInOrder(cloud, "/fleet/a", 3000);
  ExpectOnceInOrder(cloud, "/fleet/b", 500);
  auto data = cloud.Control({{"op", "dump"}})["fleet"]["b"];
  EXPECT_EQ(data["k0"], 498);
  EXPECT_EQ(data["k1"], 499);
  auto st = drainer_->stats();
  EXPECT_EQ(st["a"].uploaded_ops, 3000u);
  std::string query = cloud.Control({{"op", "log"}})[0]["query"];
  EXPECT_NE(query.find("print=silent"), std::string::npos);
  EXPECT_NE(query.find("auth=s3cret"), std::string::npos);
  EXPECT_EQ(query.find("auth_variable_override"), std::string::npos) << "ops without an override";
  EXPECT_GT(st["b"].batches, 100u);
}

TEST_F(DrainerTest, ServerTimestampResolvedToEventTime) {
  FakeCloud cloud;
  auto creds = MakeNoCredentials();
  outbox_.Add({0, "a", K::Set, "x", R"({"t":{".sv":"timestamp"}})", 42});
  outbox_.Add({0, "a", K::Update, "y", R"({"u":1,"v":{"w":2}})", 0});
  outbox_.Add({0, "a", K::Remove, "x", "", 0});
  Start(cloud, *creds, {{"a", ""}});
  ASSERT_TRUE(RunUntil(&loop_, [&] { return outbox_.pending() == 0; }));
  auto log = cloud.Control({{"op", "log"}});
  ASSERT_EQ(log.size(), 2u);  // x then y,remove-x: the remove overlaps x and starts batch 2
  EXPECT_EQ(log[0]["body"]["x"]["t"], 42);
  EXPECT_EQ(cloud.Control({{"op", "dump"}}), nlohmann::json::parse(R"({"y":{"u":1,"v":{"w":2}}})"));
}

TEST_F(DrainerTest, RetryableErrorsBackOffThenSucceed) {
  FakeCloud cloud;
  auto creds = MakeNoCredentials();
  cloud.Control({{"op", "fail"}, {"status", 503}, {"count", 3}});
  cloud.Control({{"op", "fail"}, {"status", 429}, {"count", 2}});
  AddWrites("a", 200);
  Start(cloud, *creds, {{"a", "r"}});
  ASSERT_TRUE(RunUntil(&loop_, [&] { return outbox_.pending() == 0; }));
  ExpectOnceInOrder(cloud, "/r", 200);
  EXPECT_EQ(drainer_->stats()["a"].retryable_errors, 5u);
}

TEST_F(DrainerTest, UnauthorizedPausesUntilCredentialRefreshed) {
  FakeCloud cloud;
  cloud.Control({{"op", "tokens"}, {"values", {"good"}}});
  std::string path = ::testing::TempDir() + "/token_" + std::to_string(getpid());
  std::ofstream(path) << "stale\n";
  auto creds = testing::TestTokenFile(path);
  AddWrites("a", 100);
  Start(cloud, *creds, {{"a", "r"}});
  ASSERT_TRUE(RunUntil(&loop_, [&] { return drainer_->stats()["a"].auth_errors >= 2; }));
  EXPECT_EQ(outbox_.pending(), 100u);  // nothing dropped while unauthorized
  EXPECT_EQ(outbox_.dead.size(), 0u);
  usleep(10000);  // a distinct mtime
  std::ofstream(path) << "good\n";
  ASSERT_TRUE(RunUntil(&loop_, [&] { return outbox_.pending() == 0; }));
  ExpectOnceInOrder(cloud, "/r", 100);
  unlink(path.c_str());
}

TEST_F(DrainerTest, RejectedOpIsDeadLetteredAndOthersContinue) {
  FakeCloud cloud;
  auto creds = MakeNoCredentials();
  cloud.Control({{"op", "reject"}, {"status", 400}, {"contains", "poison"}});
  for (int i = 0; i < 40; ++i)
    outbox_.Add({0, "a", K::Set, "k" + std::to_string(i),
                 i == 17 ? R"("poison")" : std::to_string(i), 0});
  Start(cloud, *creds, {{"a", "r"}});
  ASSERT_TRUE(RunUntil(&loop_, [&] { return outbox_.pending() == 0; }));
  ASSERT_EQ(outbox_.dead.size(), 1u);
  EXPECT_EQ(outbox_.dead[0].first.path, "k17");
  EXPECT_EQ(outbox_.dead[0].second, 400);
  auto data = cloud.Get("/r");
  EXPECT_EQ(data.size(), 39u);
  EXPECT_FALSE(data.contains("k17"));
  EXPECT_EQ(drainer_->stats()["a"].dead_letters, 1u);
}

TEST_F(DrainerTest, NetworkOutageThenEverythingArrivesOnce) {
  FakeCloud cloud;
  auto creds = MakeNoCredentials();
  AddWrites("a", 100);
  Start(cloud, *creds, {{"a", "r"}});
  ASSERT_TRUE(RunUntil(&loop_, [&] { return outbox_.pending() == 0; }));
  cloud.Control({{"op", "down"}, {"ms", 2000}});
  usleep(100000);
  AddWrites("a", 100);  // values 0..99 again, but the log check below only counts the second half
  drainer_->Notify("a");
  ASSERT_TRUE(RunUntil(&loop_, [&] { return drainer_->stats()["a"].network_errors >= 1; }));
  EXPECT_GT(outbox_.pending(), 0u);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return outbox_.pending() == 0; }));
  auto log = cloud.Control({{"op", "log"}});
  size_t ops = 0;
  for (auto& e : log) ops += e["body"].size();
  EXPECT_EQ(ops, 200u);  // every op exactly once
}

// Routes backing off because the cloud did not answer go as soon as any request on the link
// is answered (LinkUp); a route backing off from an answer (429) keeps its backoff.
TEST_F(DrainerTest, AnAnsweredRequestWakesRoutesWaitingForTheLink) {
  FakeCloud cloud;
  auto creds = MakeNoCredentials();
  DrainerOptions opt;
  opt.backoff_initial_ms = 20000;  // without a wake-up, the retry is 10-20 s away
  opt.backoff_max_ms = 20000;
  cloud.Control({{"op", "fail"}, {"status", 429}, {"count", 1}, {"path", "/s.json"}});
  cloud.Control({{"op", "down"}, {"ms", 1000}});
  AddWrites("a", 10);
  Start(cloud, *creds, {{"a", "r"}, {"b", "s"}}, opt);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return drainer_->stats()["a"].network_errors >= 1; }));
  EXPECT_EQ(drainer_->stats()["a"].state, RouteUploadStats::State::Backoff);
  outbox_.Add({0, "b", K::Set, "x", "1", 0});
  usleep(1100000);  // the cloud is back
  drainer_->Notify("b");
  ASSERT_TRUE(RunUntil(&loop_, [&] { return drainer_->stats()["b"].retryable_errors == 1; }, std::chrono::seconds(3)));
  EXPECT_EQ(drainer_->stats()["b"].state, RouteUploadStats::State::Backoff) << "429: the cloud answered, asking to wait";
  auto t0 = std::chrono::steady_clock::now();
  drainer_->LinkUp();  // e.g. the presence write or a stream got an answer
  ASSERT_TRUE(RunUntil(&loop_, [&] { return outbox_.Pending("a") == 0; }, std::chrono::seconds(3)));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(1000));
  EXPECT_TRUE(drainer_->stats()["a"].last_error.empty()) << "the outage's error is not the route's state any more";
  EXPECT_EQ(drainer_->stats()["b"].state, RouteUploadStats::State::Backoff) << "a rate limit is not woken";
  EXPECT_EQ(outbox_.Pending("b"), 1u);
}

TEST_F(DrainerTest, BacklogOnOneRouteDoesNotStarveLiveWrites) {
  FakeCloud cloud;
  auto creds = MakeNoCredentials();
  cloud.Control({{"op", "slow"}, {"ms", 100}});
  AddWrites("bulk", 20000, 20000);
  DrainerOptions opt;
  opt.max_parallel = 1;  // one request slot: the routes must take turns
  opt.limits.max_ops = 500;
  Start(cloud, *creds, {{"bulk", "bulk"}, {"live", "live"}}, opt);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return drainer_->stats()["bulk"].batches >= 1; }));
  outbox_.Add({0, "live", K::Set, "door", "\"open\"", 0});
  drainer_->Notify("live");
  ASSERT_TRUE(RunUntil(&loop_, [&] { return drainer_->stats()["live"].uploaded_ops == 1; }));
  EXPECT_LE(drainer_->stats()["bulk"].batches, 3u);  // waited for at most one bulk batch
  ASSERT_TRUE(RunUntil(&loop_, [&] { return outbox_.pending() == 0; }));  // backlog keeps draining
  ExpectOnceInOrder(cloud, "/bulk", 20000);
}

TEST_F(DrainerTest, ConditionalOpsUseIfMatchAndReportConflicts) {
  FakeCloud cloud;
  cloud.Request("PUT", "/cas/a.json", "1");
  cloud.Request("PUT", "/cas/b.json", "\"theirs\"");
  auto creds = MakeNoCredentials();
  outbox_.Add({0, "r", K::Set, "x", "5", 0});
  outbox_.Add({0, "r", K::Conditional, "a", R"({"expect":1,"value":2})", 0});       // holds: applied
  outbox_.Add({0, "r", K::Conditional, "b", R"({"expect":"mine","value":"new"})", 0});  // conflict
  outbox_.Add({0, "r", K::Conditional, "c", R"({"value":{"n":1}})", 0});  // expects nothing there
  outbox_.Add({0, "r", K::Set, "y", "6", 0});
  Start(cloud, *creds, {{"r", "cas"}});
  ASSERT_TRUE(RunUntil(&loop_, [&] { return outbox_.pending() == 0; }));
  EXPECT_EQ(cloud.Get("/cas"), nlohmann::json::parse(R"({"a":2,"b":"theirs","c":{"n":1},"x":5,"y":6})"));
  ASSERT_EQ(outbox_.conflicts.size(), 1u);
  EXPECT_EQ(outbox_.conflicts[0].first.path, "b");
  EXPECT_EQ(outbox_.conflicts[0].second, "\"theirs\"");
  EXPECT_EQ(drainer_->stats()["r"].conflicts, 1u);
  std::vector<std::string> methods;
  for (auto& e : cloud.Control({{"op", "log"}})) methods.push_back(e["method"].get<std::string>() + " " + e["path"].get<std::string>());
  // Setup, then the set, two conditional PUTs (b is never written), and the last set.
  EXPECT_EQ(methods, (std::vector<std::string>{"PUT /cas/a", "PUT /cas/b", "PATCH /cas", "PUT /cas/a", "PUT /cas/c",
                                               "PATCH /cas"}));
}

// The auth_variable_override parameter of a logged request's query, decoded ("" when absent).
std::string OverrideOf(const std::string& query) {
  size_t at = query.find("auth_variable_override=");
  if (at == std::string::npos) return "";
  std::string enc = query.substr(at + 23, query.find('&', at) - at - 23), out;
  for (size_t i = 0; i < enc.size(); ++i) {
    if (enc[i] == '%' && i + 2 < enc.size()) {
      out.push_back(static_cast<char>(std::stoi(enc.substr(i + 1, 2), nullptr, 16)));
      i += 2;
    } else {
      out.push_back(enc[i]);
    }
  }
  return out;
}

TEST_F(DrainerTest, EachRequestIsEvaluatedAsTheDeviceThatMadeItsWrites) {
  FakeCloud cloud("--secret s3cret");
  auto creds = MakeDatabaseSecret("s3cret");
  auto as = [](const std::string& d) { return R"({"uid":")" + d + R"("})"; };
  const char* owner[] = {"d1", "d1", "d2", "d2", "d1"};
  for (int i = 0; i < 5; ++i) {
    OutboundOp op{0, "r", K::Set, "k" + std::to_string(i), std::to_string(i), 0};
    op.auth_override = as(owner[i]);
    outbox_.Add(op);
  }
  OutboundOp cas{0, "r", K::Conditional, "c", R"({"value":7})", 0};
  cas.auth_override = as("d3");
  outbox_.Add(cas);
  OutboundOp anonymous{0, "r", K::Set, "k9", "9", 0};
  anonymous.auth_override = "null";  // no device id: evaluated as an unauthenticated client
  outbox_.Add(anonymous);
  Start(cloud, *creds, {{"r", "fleet"}});
  ASSERT_TRUE(RunUntil(&loop_, [&] { return outbox_.pending() == 0; }));
  std::vector<std::string> got;
  for (auto& e : cloud.Control({{"op", "log"}})) {
    std::string keys;
    if (e["method"] == "PATCH") {
      for (auto& [k, v] : e["body"].items()) keys += k + ",";
    }
    got.push_back(e["method"].get<std::string>() + " " + e["path"].get<std::string>() + " " + keys + " " +
                  OverrideOf(e["query"]));
    EXPECT_NE(e["query"].get<std::string>().find("auth=s3cret"), std::string::npos) << "the gateway's credential too";
  }
  EXPECT_EQ(got, (std::vector<std::string>{"PATCH /fleet k0,k1, " + as("d1"), "PATCH /fleet k2,k3, " + as("d2"),
                                           "PATCH /fleet k4, " + as("d1"), "PUT /fleet/c  " + as("d3"),
                                           "PATCH /fleet k9, null"}));
  // The read before the conditional write is the gateway's own (it implements the compare).
  auto reads = cloud.Control({{"op", "reads"}});
  ASSERT_EQ(reads.size(), 1u);
  EXPECT_EQ(reads[0]["path"], "/fleet/c");
  EXPECT_EQ(OverrideOf(reads[0]["query"]), "");
  EXPECT_EQ(cloud.Control({{"op", "dump"}})["fleet"]["c"], 7);
}

TEST_F(DrainerTest, BackoffDelaysGrowExponentiallyWithJitterWithinBounds) {
  FakeCloud cloud;
  auto creds = MakeNoCredentials();
  constexpr int kFailures = 6;
  cloud.Control({{"op", "fail"}, {"status", 503}, {"count", kFailures}});
  outbox_.Add({0, "a", K::Set, "x", "1", 0});
  DrainerOptions opt;
  opt.backoff_initial_ms = 100;
  opt.backoff_max_ms = 800;
  opt.poll_interval_ms = 60000;  // only the backoff timer may send the retries
  Start(cloud, *creds, {{"a", "r"}}, opt);
  ASSERT_TRUE(RunUntil(&loop_, [&] { return outbox_.pending() == 0; }));
  std::vector<int64_t> at;
  for (auto& a : cloud.Control({{"op", "attempts"}})) {
    if (a["path"] == "/r.json") at.push_back(a["t_ms"].get<int64_t>());
  }
  ASSERT_EQ(at.size(), static_cast<size_t>(kFailures + 1));
  std::vector<int64_t> gaps;
  for (size_t i = 1; i < at.size(); ++i) gaps.push_back(at[i] - at[i - 1]);
  // Retry i waits a uniform delay in [cap/2, cap], cap = min(max, initial * 2^i); the request
  // itself adds a few ms on a loaded machine.
  bool all_at_an_edge = true;
  for (size_t i = 0; i < gaps.size(); ++i) {
    int64_t cap = std::min<int64_t>(800, int64_t{100} << i);
    EXPECT_GE(gaps[i], cap / 2 - 2) << "retry " << i;
    EXPECT_LE(gaps[i], cap + 150) << "retry " << i;
    if (i > 0 && i < 4) {
      EXPECT_GE(gaps[i], gaps[i - 1] - 5) << "delays grow until the cap";
    }
    all_at_an_edge = all_at_an_edge && (std::llabs(gaps[i] - cap / 2) < 3 || std::llabs(gaps[i] - cap) < 3);
  }
  EXPECT_FALSE(all_at_an_edge) << "jittered delays are spread over [cap/2, cap]";
  EXPECT_EQ(drainer_->stats()["a"].retryable_errors, static_cast<uint64_t>(kFailures));
}

TEST_F(DrainerTest, KeysThatNeedPercentEncodingReachTheirPaths) {
  FakeCloud cloud;
  auto creds = MakeNoCredentials();
  const std::string root = "odd root/\xc3\xbc+%";
  outbox_.Add({0, "r", K::Set, "a b", "1", 0});
  outbox_.Add({0, "r", K::Update, "q?x", R"({"amp&y":2})", 0});
  outbox_.Add({0, "r", K::Conditional, "pct%41", R"({"value":3})", 0});
  outbox_.Add({0, "r", K::Set, "\xe6\x97\xa5", "4", 0});
  Start(cloud, *creds, {{"r", root}});
  ASSERT_TRUE(RunUntil(&loop_, [&] { return outbox_.pending() == 0; }));
  EXPECT_EQ(cloud.Control({{"op", "dump"}}),
            nlohmann::json::parse("{\"odd root\":{\"\xc3\xbc+%\":{\"a b\":1,\"q?x\":{\"amp&y\":2},\"pct%41\":3,"
                                  "\"\xe6\x97\xa5\":4}}}"));
  EXPECT_TRUE(outbox_.dead.empty());
}

}  // namespace
}  // namespace tether::upstream
