// HttpClient's transport guarantees against real local peers (tests/upstream/http_peer.py):
// TLS certificates are verified, proxy environment variables are honoured, and every
// non-stream request has a timeout.
#include "upstream/http_client.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "tests/upstream/fakecloud_process.h"

namespace tether::upstream {
namespace {

// One http_peer.py process on 127.0.0.1; killed on destruction.
class HttpPeer {
 public:
  explicit HttpPeer(const std::vector<std::string>& args) {
    std::string cmd = "exec python3 " + testing::SourceDir() + "/tests/upstream/http_peer.py";
    for (const auto& a : args) cmd += " '" + a + "'";
    int fds[2];
    if (pipe(fds) != 0) throw std::runtime_error("pipe");
    pid_ = fork();
    if (pid_ == 0) {
      dup2(fds[1], 1);
      close(fds[0]);
      close(fds[1]);
      execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    close(fds[1]);
    FILE* out = fdopen(fds[0], "r");
    if (fscanf(out, "%d", &port_) != 1) throw std::runtime_error("http_peer.py did not start");
    fclose(out);
  }
  ~HttpPeer() {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  int port() const { return port_; }

 private:
  pid_t pid_ = -1;
  int port_ = 0;
};

class HttpClientTest : public ::testing::Test {
 protected:
  void SetUp() override { uv_loop_init(&loop_); }
  void TearDown() override {
    uv_run(&loop_, UV_RUN_NOWAIT);
    uv_loop_close(&loop_);
  }
  // Runs one request to completion (bounded) and returns its response.
  std::optional<HttpResponse> Fetch(HttpRequest req, std::chrono::seconds limit = std::chrono::seconds(15)) {
    std::optional<HttpResponse> got;
    {
      HttpClient http(&loop_);
      http.Start(std::move(req), [&](HttpResponse r) { got = std::move(r); });
      auto end = std::chrono::steady_clock::now() + limit;
      while (!got && std::chrono::steady_clock::now() < end) uv_run(&loop_, UV_RUN_ONCE);
    }
    return got;
  }
  uv_loop_t loop_;
};

TEST_F(HttpClientTest, UntrustedCertificateIsRefused) {
  char dir[] = "/tmp/tether-tls-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  std::string d = dir;
  std::string gen = "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 "
                    "-addext subjectAltName=IP:127.0.0.1 -keyout " + d + "/key.pem -out " + d +
                    "/cert.pem 2>/dev/null";
  ASSERT_EQ(std::system(gen.c_str()), 0) << "openssl missing?";
  HttpPeer peer({"tls", d + "/cert.pem", d + "/key.pem"});
  HttpRequest req;
  req.url = "https://127.0.0.1:" + std::to_string(peer.port()) + "/x.json";
  auto r = Fetch(req);
  std::system(("rm -rf " + d).c_str());
  ASSERT_TRUE(r) << "no completion";
  EXPECT_TRUE(r->transport_error);
  EXPECT_EQ(r->status, 0) << r->body;
  EXPECT_NE(r->error.find("certificate"), std::string::npos) << r->error;
}

TEST_F(HttpClientTest, ProxyEnvironmentIsHonoured) {
  HttpPeer proxy({"proxy"});
  std::string url = "http://127.0.0.1:" + std::to_string(proxy.port());
  // A name that cannot resolve: only a proxy can answer it.
  setenv("http_proxy", url.c_str(), 1);
  unsetenv("no_proxy");
  unsetenv("NO_PROXY");
  HttpRequest req;
  req.url = "http://cloud.tether.invalid/devices.json";
  auto r = Fetch(req);
  unsetenv("http_proxy");
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->transport_error) << r->error;
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "GET http://cloud.tether.invalid/devices.json HTTP/1.1") << "request went through the proxy";
}

TEST_F(HttpClientTest, RequestsTimeOutWhenTheServerNeverAnswers) {
  HttpPeer peer({"silent"});
  HttpRequest req;
  req.url = "http://127.0.0.1:" + std::to_string(peer.port()) + "/x.json";
  req.timeout_ms = 500;
  auto start = std::chrono::steady_clock::now();
  auto r = Fetch(req);
  auto took = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->transport_error);
  EXPECT_EQ(r->status, 0);
  EXPECT_GE(took, std::chrono::milliseconds(450));
  EXPECT_LT(took, std::chrono::seconds(5)) << "the timeout was not applied";
}

TEST_F(HttpClientTest, RequestsStartedFromAStreamCallbackRun) {
  // libcurl refuses multi calls from inside its callbacks; the client defers them.
  testing::FakeCloud cloud;
  cloud.Request("PUT", "/s.json", "1");
  HttpClient http(&loop_);
  std::optional<HttpResponse> nested;
  bool started = false;
  HttpRequest stream;
  stream.url = cloud.url() + "/s.json";
  stream.headers = {"Accept: text/event-stream"};
  stream.stream = true;
  stream.on_data = [&](std::string_view) {
    if (started) return;
    started = true;
    HttpRequest get;
    get.url = cloud.url() + "/s.json";
    http.Start(get, [&](HttpResponse r) { nested = std::move(r); });
  };
  auto id = http.Start(stream, [](HttpResponse) {});
  auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!nested && std::chrono::steady_clock::now() < end) uv_run(&loop_, UV_RUN_ONCE);
  http.Cancel(id);
  ASSERT_TRUE(nested) << "the request started inside on_data never completed";
  EXPECT_EQ(nested->status, 200);
  EXPECT_EQ(nested->body, "1");
}

}  // namespace
}  // namespace tether::upstream
