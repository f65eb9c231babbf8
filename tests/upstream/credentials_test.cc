// JWT RS256 signatures verified with mbedTLS; service-account token exchange via fakecloud.
#include "upstream/credentials.h"

#include <gtest/gtest.h>
#include <mbedtls/pk.h>
#include <mbedtls/sha256.h>

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iterator>
#include <stdexcept>
#include <vector>

#include "tests/upstream/fakecloud_process.h"
#include "upstream/http_client.h"
#include "upstream/jwt.h"
#include "util/base64.h"

namespace tether::upstream {
namespace {

std::string GenerateRsaKeyPem() {
  FILE* p = popen("openssl genrsa 2048 2>/dev/null", "r");
  std::string pem;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, p)) pem.append(buf, n);
  pclose(p);
  return pem;
}

std::string FromBase64Url(const std::string& s) { return util::Base64UrlDecode(s).value(); }

TEST(Jwt, Rs256SignatureVerifiesWithThePublicKey) {
  std::string pem = GenerateRsaKeyPem();
  ASSERT_NE(pem.find("PRIVATE KEY"), std::string::npos) << "openssl genrsa failed";
  nlohmann::json claims = {{"iss", "sa@example.iam.gserviceaccount.com"}, {"iat", 1}, {"exp", 3601}};
  std::string error;
  auto jwt = SignJwtRs256(claims, pem, &error);
  ASSERT_TRUE(jwt) << error;
  size_t d1 = jwt->find('.'), d2 = jwt->rfind('.');
  ASSERT_NE(d1, d2);
  EXPECT_EQ(nlohmann::json::parse(FromBase64Url(jwt->substr(0, d1)))["alg"], "RS256");
  EXPECT_EQ(nlohmann::json::parse(FromBase64Url(jwt->substr(d1 + 1, d2 - d1 - 1))), claims);
  std::string sig = FromBase64Url(jwt->substr(d2 + 1));
  EXPECT_EQ(sig.size(), 256u);

  unsigned char hash[32];
  mbedtls_sha256_ret(reinterpret_cast<const unsigned char*>(jwt->data()), d2, hash, 0);
  mbedtls_pk_context pk;
  mbedtls_pk_init(&pk);
  ASSERT_EQ(mbedtls_pk_parse_key(&pk, reinterpret_cast<const unsigned char*>(pem.c_str()),
                                 pem.size() + 1, nullptr, 0), 0);
  EXPECT_EQ(mbedtls_pk_verify(&pk, MBEDTLS_MD_SHA256, hash, 32,
                              reinterpret_cast<const unsigned char*>(sig.data()), sig.size()), 0);
  hash[0] ^= 1;  // a different message must not verify
  EXPECT_NE(mbedtls_pk_verify(&pk, MBEDTLS_MD_SHA256, hash, 32,
                              reinterpret_cast<const unsigned char*>(sig.data()), sig.size()), 0);
  mbedtls_pk_free(&pk);
  EXPECT_FALSE(SignJwtRs256(claims, "not a key", &error));
}

// The token file has one reader: at construction a refused file throws (tetherd stops at startup);
// after a rotation a refused file is reported and gives no token until it changes again.
TEST(Credentials, AccessTokenFileIsReadThroughOneReader) {
  std::string path = ::testing::TempDir() + "/access_token_" + std::to_string(getpid());
  auto write = [&](const std::string& content) {
    usleep(10000);  // a distinct mtime
    std::ofstream(path) << content;
  };
  int reads = 0;
  SecretReader read = [&](const std::string& p) {
    ++reads;
    std::ifstream in(p);
    std::string s(std::istreambuf_iterator<char>(in), {});
    if (s.empty()) throw std::runtime_error(p + " is empty");
    return s;
  };
  std::vector<std::string> refusals;
  SecretRefused refused = [&](const std::string& why) { refusals.push_back(why); };

  write("");
  EXPECT_THROW(MakeAccessTokenFile(path, read, refused), std::runtime_error);
  EXPECT_TRUE(refusals.empty()) << "a refusal at startup is thrown, not reported";

  write("tok 1\r\nsecond line ignored\n");
  reads = 0;
  auto creds = MakeAccessTokenFile(path, read, refused);
  EXPECT_EQ(creds->Query(), "access_token=tok%201");
  EXPECT_EQ(reads, 1) << "an unchanged file is not read again";

  write("");
  EXPECT_EQ(creds->Query(), "") << "no token rather than a suspect one";
  ASSERT_EQ(refusals.size(), 1u);
  EXPECT_EQ(refusals[0], path + " is empty");

  write("tok2\n");
  bool changed = false;
  creds->Refresh([&](bool c) { changed = c; });
  EXPECT_TRUE(changed);
  EXPECT_EQ(creds->Query(), "access_token=tok2");
  unlink(path.c_str());
}

TEST(Credentials, ServiceAccountExchangesJwtForAccessToken) {
  testing::FakeCloud cloud;
  std::string pem = GenerateRsaKeyPem();
  nlohmann::json key = {{"type", "service_account"}, {"client_email", "sa@x.iam.gserviceaccount.com"},
                        {"private_key", pem}, {"token_uri", cloud.url() + "/_oauth/token"}};
  uv_loop_t loop;
  uv_loop_init(&loop);
  {
    HttpClient http(&loop);
    std::string error;
    auto creds = MakeServiceAccount(&loop, http, key.dump(), &error);
    ASSERT_TRUE(creds) << error;
    EXPECT_EQ(creds->Query(), "") << "no token before the loop ran";
    int calls = 0;
    bool changed = false;
    creds->Refresh([&](bool c) { ++calls, changed = c; });
    auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (calls == 0 && std::chrono::steady_clock::now() < end) uv_run(&loop, UV_RUN_ONCE);
    EXPECT_TRUE(changed);
    EXPECT_EQ(creds->Query(), "access_token=sa-token-1") << "refresh() joined the fetch started at construction";
    auto log = cloud.Control({{"op", "log"}});
    ASSERT_EQ(log.size(), 1u);
    std::string assertion = log[0]["body"]["assertion"];
    auto claims = nlohmann::json::parse(FromBase64Url(assertion.substr(
        assertion.find('.') + 1, assertion.rfind('.') - assertion.find('.') - 1)));
    EXPECT_EQ(claims["aud"], cloud.url() + "/_oauth/token");
    EXPECT_NE(claims["scope"].get<std::string>().find("auth/firebase.database"), std::string::npos);
    EXPECT_NE(claims["scope"].get<std::string>().find("userinfo.email"), std::string::npos);
    EXPECT_EQ(claims["exp"].get<int64_t>() - claims["iat"].get<int64_t>(), 3600);
    EXPECT_EQ(MakeServiceAccount(&loop, http, "{}", &error), nullptr);
  }
  uv_run(&loop, UV_RUN_NOWAIT);
  EXPECT_EQ(uv_loop_close(&loop), 0);
}

TEST(Credentials, ServiceAccountFetchesItsFirstTokenAtOnceAndReplacesItBeforeItExpires) {
  testing::FakeCloud cloud;
  cloud.Control({{"op", "token_ttl"}, {"s", 2}});  // short-lived tokens; expired ones get 401
  std::string pem = GenerateRsaKeyPem();
  nlohmann::json key = {{"client_email", "sa@x.iam.gserviceaccount.com"}, {"private_key", pem},
                        {"token_uri", cloud.url() + "/_oauth/token"}};
  uv_loop_t loop;
  uv_loop_init(&loop);
  {
    HttpClient http(&loop);
    std::string error;
    auto creds = MakeServiceAccount(&loop, http, key.dump(), &error);
    ASSERT_TRUE(creds) << error;
    auto run_until = [&](const std::function<bool()>& done, std::chrono::milliseconds limit) {
      auto end = std::chrono::steady_clock::now() + limit;
      while (!done() && std::chrono::steady_clock::now() < end) uv_run(&loop, UV_RUN_ONCE);
      return done();
    };
    // Nobody calls Refresh(): the first token comes by itself.
    ASSERT_TRUE(run_until([&] { return !creds->Query().empty(); }, std::chrono::seconds(5)));
    // Requests made with whatever token is current for 5 s (2.5 lifetimes) are all accepted.
    int ok = 0, unauthorized = 0, pending = 0;
    uv_timer_t tick;
    uv_timer_init(&loop, &tick);
    auto t0 = std::chrono::steady_clock::now();
    while (std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5)) {
      HttpRequest req;
      req.url = cloud.url() + "/probe.json?" + creds->Query();
      ++pending;
      http.Start(req, [&](HttpResponse r) {
        --pending;
        (r.status == 200 ? ok : unauthorized)++;
      });
      uv_timer_start(&tick, [](uv_timer_t*) {}, 100, 0);
      run_until([&] { return !uv_is_active(reinterpret_cast<uv_handle_t*>(&tick)); }, std::chrono::seconds(1));
    }
    ASSERT_TRUE(run_until([&] { return pending == 0; }, std::chrono::seconds(5)));
    uv_close(reinterpret_cast<uv_handle_t*>(&tick), nullptr);
    EXPECT_GT(ok, 20);
    EXPECT_EQ(unauthorized, 0) << "a token was used after it expired";
    std::vector<int64_t> issued;
    for (auto& e : cloud.Control({{"op", "log"}})) {
      if (e["method"] == "TOKEN") issued.push_back(e["t_ms"].get<int64_t>());
    }
    ASSERT_GE(issued.size(), 4u) << "2 s tokens over 5 s: refreshed, not fetched once";
    for (size_t i = 1; i < issued.size(); ++i) {
      EXPECT_LT(issued[i] - issued[i - 1], 1900) << "each token replaced before it expired";
      EXPECT_GT(issued[i] - issued[i - 1], 500) << "but not hammered";
    }
  }
  uv_run(&loop, UV_RUN_NOWAIT);
  EXPECT_EQ(uv_loop_close(&loop), 0);
}

}  // namespace
}  // namespace tether::upstream
