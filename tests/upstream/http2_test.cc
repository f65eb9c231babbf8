// HTTP/2 over TLS against nghttpd (Debian's nghttp2-server): the client negotiates h2 by ALPN,
// verifies the server's certificate against a CA it is given, and refuses it without that CA.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>

#include "tests/integration/tetherd_process.h"
#include "tests/support/eventually.h"
#include "tests/upstream/run_until.h"
#include "upstream/credentials.h"
#include "upstream/http_client.h"
#include "upstream/rest_get.h"

namespace tether::upstream {
namespace {

using testing::RunUntil;

bool Listening(int port) {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  close(s);
  return ok;
}

class Http2 : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* nghttpd = "/usr/sbin/nghttpd";
    ASSERT_TRUE(std::filesystem::exists(nghttpd)) << "nghttpd missing: scripts/install-deps.sh installs nghttp2-server";
    dir_ = ::testing::TempDir() + "/h2_" + std::to_string(getpid());
    std::filesystem::create_directories(dir_ + "/www");
    std::ofstream(dir_ + "/www/probe.json") << R"({"over":"h2"})";
    std::ofstream(dir_ + "/san.cnf") << "subjectAltName=IP:127.0.0.1,DNS:localhost\n";
    // A private CA and a server certificate it signs for 127.0.0.1.
    std::string d = dir_;
    std::string cmd = "cd " + d + " && openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt "
                      "-days 2 -subj /CN=tether-test-ca 2>/dev/null && "
                      "openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1 "
                      "2>/dev/null && openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial "
                      "-out server.crt -days 2 -extfile san.cnf 2>/dev/null";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << "openssl failed";
    port_ = ::tether::testing::FreePort(false);
    pid_ = fork();
    if (pid_ == 0) {
      std::string p = std::to_string(port_), www = "--htdocs=" + d + "/www", key = d + "/server.key",
                  crt = d + "/server.crt";
      execl(nghttpd, nghttpd, "--address=127.0.0.1", www.c_str(), p.c_str(), key.c_str(), crt.c_str(),
            static_cast<char*>(nullptr));
      _exit(127);
    }
    tether::testing::Eventually([&] { return Listening(port_); }, std::chrono::seconds(5), std::chrono::milliseconds(50));
    ASSERT_TRUE(Listening(port_)) << "nghttpd did not start";
    uv_loop_init(&loop_);
  }
  void TearDown() override {
    uv_run(&loop_, UV_RUN_NOWAIT);
    EXPECT_EQ(uv_loop_close(&loop_), 0);
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    std::filesystem::remove_all(dir_);
  }
  HttpResponse Get(HttpClient& http, const std::string& url) {
    HttpResponse got;
    bool done = false;
    HttpRequest req;
    req.url = url;
    http.Start(req, [&](HttpResponse r) { got = std::move(r), done = true; });
    EXPECT_TRUE(RunUntil(&loop_, [&] { return done; }));
    return got;
  }
  std::string dir_;
  int port_ = 0;
  pid_t pid_ = -1;
  uv_loop_t loop_;
};

TEST_F(Http2, RequestsGoOverH2WithTheCertificateVerifiedAgainstTheGivenCa) {
  const std::string base = "https://127.0.0.1:" + std::to_string(port_);
  {
    HttpClient http(&loop_, HttpClientOptions{dir_ + "/ca.crt"});
    HttpResponse r = Get(http, base + "/probe.json");
    ASSERT_FALSE(r.transport_error) << r.error;
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.http_version, 2) << "ALPN negotiated h2";
    EXPECT_EQ(nlohmann::json::parse(r.body), nlohmann::json::parse(R"({"over":"h2"})"));
    // The REST read path uses the same client.
    auto creds = MakeNoCredentials();
    GetResult got;
    bool done = false;
    RestGet(http, *creds, base, "probe", 5000, false, [&](GetResult g) { got = std::move(g), done = true; });
    ASSERT_TRUE(RunUntil(&loop_, [&] { return done; }));
    EXPECT_TRUE(got.ok) << got.error;
    EXPECT_EQ(got.value["over"], "h2");
  }
  {
    HttpClient untrusting(&loop_);  // the system store does not know the private CA
    HttpResponse r = Get(untrusting, base + "/probe.json");
    EXPECT_TRUE(r.transport_error);
    EXPECT_EQ(r.status, 0);
    EXPECT_NE(r.error.find("certificate"), std::string::npos) << r.error;
  }
}

}  // namespace
}  // namespace tether::upstream
