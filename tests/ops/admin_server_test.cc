// AdminServer over real HTTP on 127.0.0.1: every endpoint, status codes, JSON errors, the loop
// hop (backend calls only on the loop thread) and the 503s of a stuck loop.
#include <gtest/gtest.h>
#include <httplib.h>

#include <nlohmann/json.hpp>

#include <future>

#include "gateway/metrics.h"
#include "tests/ops/fake_backend.h"

namespace tether::testing {
namespace {

using nlohmann::json;

class AdminServerTest : public ::testing::Test {
 protected:
  AdminServerTest() : client_("127.0.0.1", admin_.server->port()) {
    client_.set_connection_timeout(std::chrono::seconds(2));
    client_.set_read_timeout(std::chrono::seconds(5));
  }
  ~AdminServerTest() override { EXPECT_EQ(admin_.backend.off_loop_calls, 0) << "backend called off the loop"; }

  json GetJson(const std::string& path, int want_status = 200) {
    auto res = client_.Get(path.c_str());
    EXPECT_TRUE(res) << path;
    if (!res) return nullptr;
    EXPECT_EQ(res->status, want_status) << path << ": " << res->body;
    EXPECT_EQ(res->get_header_value("Content-Type"), "application/json") << path;
    return json::parse(res->body);
  }
  json PostJson(const std::string& path, const std::string& body, int want_status = 200) {
    auto res = client_.Post(path.c_str(), body, "application/json");
    EXPECT_TRUE(res) << path;
    if (!res) return nullptr;
    EXPECT_EQ(res->status, want_status) << path << ": " << res->body;
    return json::parse(res->body);
  }

  FakeAdmin admin_;
  httplib::Client client_;
};

TEST_F(AdminServerTest, BindsEphemeralPort) { EXPECT_GT(admin_.server->port(), 0); }

TEST_F(AdminServerTest, Metrics) {
  auto res = client_.Get("/metrics");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->get_header_value("Content-Type"), MetricsRegistry::kContentType);
  EXPECT_NE(res->body.find("tether_sessions{app=\"myapp\",state=\"active\"} 2\n"), std::string::npos) << res->body;
  EXPECT_NE(res->body.find("# TYPE tether_upstream_up gauge\n"), std::string::npos);
}

TEST_F(AdminServerTest, HealthAndReadiness) {
  auto h = client_.Get("/healthz");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 200);
  auto r = client_.Get("/readyz");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  admin_.backend.ready = false;
  r = client_.Get("/readyz");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
}

TEST_F(AdminServerTest, StuckLoopGives503) {
  admin_.loop.Block(4000);  // well past the health (500 ms) and call (2000 ms) timeouts together
  auto h = client_.Get("/healthz");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 503) << h->body;
  json s = GetJson("/api/v1/status", 503);
  EXPECT_NE(s["error"].get<std::string>().find("did not answer"), std::string::npos) << s;
  std::this_thread::sleep_for(std::chrono::milliseconds(1800));  // the block ends at 4 s
  h = client_.Get("/healthz");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 200) << "recovers once the loop runs again";
}

TEST_F(AdminServerTest, StatusQueueDeadLettersStore) {
  EXPECT_EQ(GetJson("/api/v1/status")["gateway_id"], "gw-test");
  EXPECT_EQ(GetJson("/api/v1/queue")["routes"][0]["entries"], 42);
  EXPECT_EQ(GetJson("/api/v1/deadletters")["dead_letters"][0]["id"], "17");
  EXPECT_EQ(GetJson("/api/v1/store/check")["ok"], true);
}

TEST_F(AdminServerTest, SessionsFilterByApp) {
  EXPECT_EQ(GetJson("/api/v1/sessions")["sessions"].size(), 2u);
  json one = GetJson("/api/v1/sessions?app=myapp");
  ASSERT_EQ(one["sessions"].size(), 1u);
  EXPECT_EQ(one["sessions"][0]["device"], "sensor-1");
}

TEST_F(AdminServerTest, Kick) {
  json ok = PostJson("/api/v1/sessions/sensor-1/kick", "");
  EXPECT_EQ(ok["ok"], true);
  EXPECT_EQ(ok["device"], "sensor-1");
  json missing = PostJson("/api/v1/sessions/nobody/kick", "", 404);
  EXPECT_EQ(missing["error"], "no session for device 'nobody'");
  PostJson("/api/v1/sessions/dev%2Fwith%20space/kick", "");
  EXPECT_EQ(admin_.backend.last_kicked, "dev/with space") << "device ids are percent-decoded";
}

TEST_F(AdminServerTest, DeadLetterRetryAndDrop) {
  EXPECT_EQ(PostJson("/api/v1/deadletters/retry", R"({"id":"17"})")["message"], "dead letter 17 requeued");
  EXPECT_EQ(PostJson("/api/v1/deadletters/retry", R"({"id":17})")["message"], "dead letter 17 requeued");
  EXPECT_EQ(PostJson("/api/v1/deadletters/drop", R"({"all":true})")["count"], 1);
  PostJson("/api/v1/deadletters/drop", R"({"id":"99"})", 404);
  for (const char* bad : {"", "not json", "{}", R"({"all":false})", R"({"id":""})", R"({"id":"1","all":true})"}) {
    json e = PostJson("/api/v1/deadletters/retry", bad, 400);
    EXPECT_TRUE(e.contains("error")) << bad;
  }
}

// The reply to a dead-letter change comes only once the backend reports it committed.
TEST_F(AdminServerTest, DeadLetterReplyWaitsForTheCommit) {
  admin_.backend.hold_commits = true;
  auto reply = std::async(std::launch::async, [this] {
    httplib::Client c("127.0.0.1", admin_.server->port());
    c.set_read_timeout(std::chrono::seconds(5));
    auto res = c.Post("/api/v1/deadletters/drop", R"({"id":"17"})", "application/json");
    return res ? res->status : -1;
  });
  EXPECT_EQ(reply.wait_for(std::chrono::milliseconds(400)), std::future_status::timeout) << "answered before the commit";
  admin_.loop.caller()->Post([this] { admin_.backend.CommitHeld(); });
  ASSERT_EQ(reply.wait_for(std::chrono::seconds(3)), std::future_status::ready);
  EXPECT_EQ(reply.get(), 200);
}

// A web page must not be able to drive the admin API through the operator's browser.
TEST_F(AdminServerTest, RefusesBrowserRequests) {
  auto plain = client_.Post("/api/v1/reload", "", "text/plain");  // a "simple" cross-origin POST
  ASSERT_TRUE(plain);
  EXPECT_EQ(plain->status, 415) << plain->body;
  auto form = client_.Post("/api/v1/sessions/sensor-1/kick", "a=b", "application/x-www-form-urlencoded");
  ASSERT_TRUE(form);
  EXPECT_EQ(form->status, 415);
  EXPECT_EQ(admin_.backend.last_kicked, "") << "the refused kick reached the backend";
  httplib::Headers origin = {{"Origin", "http://evil.example"}};
  auto json_post = client_.Post("/api/v1/reload", origin, "", "application/json");
  ASSERT_TRUE(json_post);
  EXPECT_EQ(json_post->status, 403) << json_post->body;
  auto get = client_.Get("/api/v1/status", origin);
  ASSERT_TRUE(get);
  EXPECT_EQ(get->status, 403);
  EXPECT_NE(json::parse(get->body)["error"].get<std::string>().find("Origin"), std::string::npos);
  auto metrics = client_.Get("/metrics", origin);  // read-only, no secrets: Prometheus UIs may embed it
  ASSERT_TRUE(metrics);
  EXPECT_EQ(metrics->status, 200);
  EXPECT_EQ(PostJson("/api/v1/reload", "")["ok"], true) << "tetherctl's JSON POST still works";
}

TEST_F(AdminServerTest, Reload) {
  EXPECT_EQ(PostJson("/api/v1/reload", "")["ok"], true);
  admin_.backend.reload_fails = true;
  json e = PostJson("/api/v1/reload", "", 400);
  EXPECT_NE(e["error"].get<std::string>().find("unknown key"), std::string::npos);
}

TEST_F(AdminServerTest, UnknownPathAndWrongMethod) {
  json e = GetJson("/api/v1/nope", 404);
  EXPECT_EQ(e["error"], "no such endpoint: GET /api/v1/nope");
  EXPECT_EQ(PostJson("/api/v1/status", "", 405)["error"], "use GET");
  EXPECT_EQ(GetJson("/api/v1/reload", 405)["error"], "use POST");
}

TEST(AdminServerBindTest, BindFailureNamesAddress) {
  FakeAdmin first;
  AdminServer::Options o;
  o.listen = {"127.0.0.1", first.server->port()};
  AdminServer second(o, &first.backend, first.loop.caller());
  try {
    second.Start();
    FAIL() << "second bind to the same port succeeded";
  } catch (const AdminBindError& e) {
    EXPECT_NE(std::string(e.what()).find("127.0.0.1:" + std::to_string(first.server->port())), std::string::npos)
        << e.what();
  }
}

TEST(LoopCallerTest, CallRunsOnLoopAndRethrows) {
  LoopThread loop;
  auto id = loop.caller()->Call([] { return std::this_thread::get_id(); }, std::chrono::seconds(2));
  ASSERT_TRUE(id);
  EXPECT_EQ(*id, loop.id());
  EXPECT_THROW(loop.caller()->Call([]() -> int { throw std::runtime_error("boom"); }, std::chrono::seconds(2)),
               std::runtime_error);
}

}  // namespace
}  // namespace tether::testing
