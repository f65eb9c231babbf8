#include "upstream/credentials.h"

#include <sys/stat.h>

#include <chrono>
#include <fstream>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "upstream/http_client.h"
#include "upstream/jwt.h"

namespace tether::upstream {
namespace {

int64_t NowSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch()).count();
}

class NoCredentials final : public Credentials {
 public:
  std::string query() override { return {}; }
  void refresh(std::function<void(bool)> done) override { done(false); }
};

class DatabaseSecret final : public Credentials {
 public:
  explicit DatabaseSecret(std::string secret) : query_("auth=" + UrlEncode(secret)) {}
  std::string query() override { return query_; }
  void refresh(std::function<void(bool)> done) override { done(false); }

 private:
  std::string query_;
};

class AccessTokenFile final : public Credentials {
 public:
  explicit AccessTokenFile(std::string path) : path_(std::move(path)) { reload(); }
  std::string query() override {
    reload();
    return token_.empty() ? std::string() : "access_token=" + UrlEncode(token_);
  }
  void refresh(std::function<void(bool)> done) override { done(reload()); }

 private:
  // Re-reads the file when its mtime changed; true when the token changed.
  bool reload() {
    struct stat st {};
    if (stat(path_.c_str(), &st) != 0) return false;
    int64_t mtime_ns = int64_t{st.st_mtim.tv_sec} * 1000000000 + st.st_mtim.tv_nsec;
    if (mtime_ns == mtime_ns_) return false;
    mtime_ns_ = mtime_ns;
    std::ifstream in(path_);
    std::string token;
    std::getline(in, token);
    while (!token.empty() && (token.back() == '\r' || token.back() == ' ')) token.pop_back();
    bool changed = token != token_;
    token_ = std::move(token);
    return changed;
  }
  std::string path_;
  int64_t mtime_ns_ = -1;
  std::string token_;
};

class ServiceAccount final : public Credentials {
 public:
  ServiceAccount(HttpClient& http, std::string email, std::string key, std::string token_uri,
                 int64_t margin_s)
      : http_(http), email_(std::move(email)), key_(std::move(key)),
        token_uri_(std::move(token_uri)), margin_s_(margin_s) {}

  std::string query() override {
    if (!token_.empty() && NowSeconds() + margin_s_ >= expires_at_s_ && !refreshing_)
      refresh([](bool) {});  // proactive; the current token is still valid meanwhile
    return token_.empty() ? std::string() : "access_token=" + UrlEncode(token_);
  }

  void refresh(std::function<void(bool)> done) override {
    waiters_.push_back(std::move(done));
    if (refreshing_) return;
    int64_t now = NowSeconds();
    nlohmann::json claims = {
        {"iss", email_},
        {"scope", "https://www.googleapis.com/auth/firebase.database "
                  "https://www.googleapis.com/auth/userinfo.email"},
        {"aud", token_uri_}, {"iat", now}, {"exp", now + 3600}};
    auto jwt = SignJwtRs256(claims, key_);
    if (!jwt) return finish(false);
    refreshing_ = true;
    HttpRequest req;
    req.method = "POST";
    req.url = token_uri_;
    req.headers = {"Content-Type: application/x-www-form-urlencoded"};
    req.body = "grant_type=" + UrlEncode("urn:ietf:params:oauth:grant-type:jwt-bearer") +
               "&assertion=" + *jwt;
    http_.start(std::move(req), [this](HttpResponse resp) {
      refreshing_ = false;
      auto body = nlohmann::json::parse(resp.body, nullptr, false);
      if (resp.status != 200 || !body.is_object() || !body.contains("access_token") ||
          !body["access_token"].is_string())
        return finish(false);
      std::string token = body["access_token"];
      expires_at_s_ = NowSeconds() + body.value("expires_in", int64_t{3600});
      bool changed = token != token_;
      token_ = std::move(token);
      finish(changed);
    });
  }

 private:
  void finish(bool changed) {
    for (auto& w : std::exchange(waiters_, {})) w(changed);
  }
  HttpClient& http_;
  std::string email_, key_, token_uri_;
  int64_t margin_s_;
  std::string token_;
  int64_t expires_at_s_ = 0;
  bool refreshing_ = false;
  std::vector<std::function<void(bool)>> waiters_;
};

}  // namespace

std::unique_ptr<Credentials> MakeNoCredentials() { return std::make_unique<NoCredentials>(); }
std::unique_ptr<Credentials> MakeDatabaseSecret(std::string secret) {
  return std::make_unique<DatabaseSecret>(std::move(secret));
}
std::unique_ptr<Credentials> MakeAccessTokenFile(std::string path) {
  return std::make_unique<AccessTokenFile>(std::move(path));
}
std::unique_ptr<Credentials> MakeServiceAccount(HttpClient& http, const std::string& key_json,
                                                std::string* error, int64_t margin_s) {
  auto key = nlohmann::json::parse(key_json, nullptr, false);
  auto str = [&](const char* k) {
    return key.is_object() && key.contains(k) && key[k].is_string() ? key[k].get<std::string>()
                                                                     : std::string();
  };
  std::string email = str("client_email"), pem = str("private_key"), uri = str("token_uri");
  if (uri.empty()) uri = "https://oauth2.googleapis.com/token";
  if (email.empty() || pem.empty()) {
    if (error) *error = "service account key lacks client_email or private_key";
    return nullptr;
  }
  return std::make_unique<ServiceAccount>(http, email, pem, uri, margin_s);
}

}  // namespace tether::upstream
