// AdminServer over real HTTP on 127.0.0.1: every endpoint, status codes, JSON errors, the loop
// hop (backend calls only on the loop thread) and the 503s of a stuck loop.
#include <gtest/gtest.h>
#include <httplib.h>

#include <nlohmann/json.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <future>

#include "gateway/admin/metrics.h"
#include "tests/ops/fake_backend.h"

namespace tether::testing {
namespace {

using nlohmann::json;

class AdminServerTest : public ::testing::Test {
 protected:
  AdminServerTest() : client_("127.0.0.1", admin_.server->port()) {
    client_.set_connection_timeout(std::chrono::seconds(2));
    client_.set_read_timeout(std::chrono::seconds(5));
    client_.set_bearer_token_auth(admin_.token);
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
    c.set_bearer_token_auth(admin_.token);
    auto res = c.Post("/api/v1/deadletters/drop", R"({"id":"17"})", "application/json");
    return res ? res->status : -1;
  });
  EXPECT_EQ(reply.wait_for(std::chrono::milliseconds(400)), std::future_status::timeout) << "answered before the commit";
  admin_.loop.Caller()->Post([this] { admin_.backend.CommitHeld(); });
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

// /api/ needs the admin token; the Prometheus and probe endpoints do not.
TEST_F(AdminServerTest, ApiNeedsTheAdminToken) {
  httplib::Client anonymous("127.0.0.1", admin_.server->port());
  for (const char* path : {"/api/v1/status", "/api/v1/sessions", "/api/v1/queue", "/api/v1/deadletters",
                           "/api/v1/store/check", "/api/v1/nope"}) {
    auto res = anonymous.Get(path);
    ASSERT_TRUE(res) << path;
    EXPECT_EQ(res->status, 401) << path << ": " << res->body;
    EXPECT_EQ(res->get_header_value("WWW-Authenticate"), "Bearer realm=\"tetherd\"");
  }
  auto kick = anonymous.Post("/api/v1/sessions/sensor-1/kick", "", "application/json");
  ASSERT_TRUE(kick);
  EXPECT_EQ(kick->status, 401);
  EXPECT_NE(json::parse(kick->body)["error"].get<std::string>().find("/run/tether/admin.token"), std::string::npos)
      << "the answer says where the token is";
  httplib::Client wrong("127.0.0.1", admin_.server->port());
  wrong.set_bearer_token_auth("test-admin-token-0123456788");  // one character off
  for (const char* path : {"/api/v1/reload", "/api/v1/deadletters/drop"}) {
    auto res = wrong.Post(path, R"({"all":true})", "application/json");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 401) << path;
  }
  EXPECT_EQ(admin_.backend.last_kicked, "") << "a refused kick reached the backend";
  for (const char* path : {"/metrics", "/healthz", "/readyz"}) {
    auto res = anonymous.Get(path);
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200) << path;
  }
  EXPECT_EQ(admin_.server->counters().unauthorized, 9u);
  EXPECT_EQ(GetJson("/api/v1/status")["gateway_id"], "gw-test") << "with the token";
}

// DNS rebinding: a page on attacker.example that resolves to 127.0.0.1 reaches this port, but
// its requests say Host: attacker.example.
TEST_F(AdminServerTest, HostMustNameThisServer) {
  const std::string port = std::to_string(admin_.server->port());
  const std::vector<std::string> others = {"attacker.example:" + port, "attacker.example", "127.0.0.1:1", "localhost.:1"};
  for (const std::string& host : others) {
    for (const char* path : {"/api/v1/sessions", "/metrics", "/healthz"}) {
      auto res = client_.Get(path, {{"Host", host}});
      ASSERT_TRUE(res);
      EXPECT_EQ(res->status, 421) << host << path << ": " << res->body;
      EXPECT_EQ(res->body.find("sensor-1"), std::string::npos);
    }
  }
  const std::vector<std::string> ours = {"127.0.0.1:" + port, "127.0.0.1", "localhost:" + port, "LOCALHOST.:" + port};
  for (const std::string& host : ours) {
    auto res = client_.Get("/api/v1/sessions", {{"Host", host}});
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200) << host;
  }
  EXPECT_EQ(admin_.server->counters().wrong_host, 12u);
}

// Idle and half-sent connections wait in the acceptor, not in a worker: /healthz answers at once
// while hundreds of them are open, and they are closed after the request timeout (2 s).
TEST_F(AdminServerTest, SlowClientsDoNotHoldTheWorkers) {
  std::vector<int> idle;
  auto connect_one = [&] {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(admin_.server->port());
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    return fd;
  };
  for (int i = 0; i < 200; ++i) idle.push_back(connect_one());
  for (int i = 0; i < 40; ++i) {  // slowloris: a head that never ends, and a body that never comes
    int fd = connect_one();
    std::string part = i % 2 ? "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                             : "POST /api/v1/reload HTTP/1.1\r\nContent-Type: application/json\r\n"
                               "Content-Length: 100\r\n\r\n{";
    ASSERT_GT(send(fd, part.data(), part.size(), 0), 0);
    idle.push_back(fd);
  }
  auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 5; ++i) {
    auto h = client_.Get("/healthz");
    ASSERT_TRUE(h);
    EXPECT_EQ(h->status, 200);
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(1000));
  // After the request timeout the acceptor closes them with a 408.
  char buf[256];
  timeval tv{5, 0};
  setsockopt(idle[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ssize_t n = recv(idle[0], buf, sizeof buf - 1, 0);
  ASSERT_GT(n, 0);
  EXPECT_EQ(std::string(buf, static_cast<size_t>(n)).rfind("HTTP/1.1 408", 0), 0u);
  for (int fd : idle) close(fd);
  EXPECT_TRUE(admin_.server->counters().timed_out > 0);
}

TEST(AdminServerBindTest, BindFailureNamesAddress) {
  FakeAdmin first;
  AdminServer::Options o;
  o.listen = {"127.0.0.1", first.server->port()};
  AdminServer second(o, &first.backend, first.loop.Caller());
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
  auto id = loop.Caller()->Call([] { return std::this_thread::get_id(); }, std::chrono::seconds(2));
  ASSERT_TRUE(id);
  EXPECT_EQ(*id, loop.id());
  EXPECT_THROW(loop.Caller()->Call([]() -> int { throw std::runtime_error("boom"); }, std::chrono::seconds(2)),
               std::runtime_error);
}

}  // namespace
}  // namespace tether::testing
