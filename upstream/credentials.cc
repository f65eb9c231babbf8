#include "upstream/credentials.h"

#include <sys/stat.h>

#include <chrono>
#include <algorithm>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <uv.h>

#include "upstream/http_client.h"
#include "upstream/jwt.h"
#include "util/percent_encoding.h"
#include "util/uv_handle.h"

namespace tether::upstream {
namespace {

int64_t NowSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch()).count();
}

class NoCredentials final : public Credentials {
 public:
  std::string Query() override { return {}; }
  void Refresh(std::function<void(bool)> done) override { done(false); }
};

class DatabaseSecret final : public Credentials {
 public:
  explicit DatabaseSecret(std::string secret) : query_("auth=" + util::PercentEncode(secret)) {}
  std::string Query() override { return query_; }
  void Refresh(std::function<void(bool)> done) override { done(false); }

 private:
  std::string query_;
};

class AccessTokenFile final : public Credentials {
 public:
  AccessTokenFile(std::string path, SecretReader read, SecretRefused refused)
      : path_(std::move(path)), read_(std::move(read)), refused_(std::move(refused)) {
    stamp_ = Stamp();
    token_ = FirstLine(read_(path_));  // throws: a refused file stops the start
  }
  std::string Query() override {
    Reload();
    return token_.empty() ? std::string() : "access_token=" + util::PercentEncode(token_);
  }
  void Refresh(std::function<void(bool)> done) override { done(Reload()); }

 private:
  static std::string FirstLine(const std::string& content) {
    std::string line = content.substr(0, content.find('\n'));
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    return line;
  }
  // mtime, ctime (ns) of the file; {-1, -1} when it cannot be stat'ed.
  std::pair<int64_t, int64_t> Stamp() const {
    struct stat st {};
    if (stat(path_.c_str(), &st) != 0) return {-1, -1};
    return {int64_t{st.st_mtim.tv_sec} * 1000000000 + st.st_mtim.tv_nsec,
            int64_t{st.st_ctim.tv_sec} * 1000000000 + st.st_ctim.tv_nsec};
  }
  // Re-reads the file when its mtime or ctime changed; true when the token changed.
  bool Reload() {
    std::pair<int64_t, int64_t> stamp = Stamp();
    if (stamp == stamp_ || stamp.first < 0) return false;
    stamp_ = stamp;
    std::string token;
    try {
      token = FirstLine(read_(path_));
    } catch (const std::exception& e) {  // no token rather than a suspect one
      refused_(e.what());
    }
    bool changed = token != token_;
    token_ = std::move(token);
    return changed;
  }
  std::string path_;
  SecretReader read_;
  SecretRefused refused_;
  std::pair<int64_t, int64_t> stamp_;  // mtime, ctime (ns) of the file last read
  std::string token_;
};

// Fetches a token as soon as it exists, refreshes it before it expires (refresh_margin_s, at
// most half its lifetime, ahead), and retries failed fetches (1 s doubling to 60 s). Timers run on
// uv_now (monotonic): wall-clock steps do not move them.
class ServiceAccount final : public Credentials {
 public:
  ServiceAccount(uv_loop_t* loop, HttpClient& http, std::string email, std::string key, std::string token_uri,
                 int64_t margin_s)
      : http_(http), email_(std::move(email)), key_(std::move(key)), token_uri_(std::move(token_uri)),
        margin_s_(margin_s), timer_(util::UvTimer(loop, this)) {
    Schedule(0);
  }
  ~ServiceAccount() override {
    if (request_) http_.Cancel(request_);
    std::fill(key_.begin(), key_.end(), '\0');
  }

  std::string Query() override {
    return token_.empty() ? std::string() : "access_token=" + util::PercentEncode(token_);
  }

  void Refresh(std::function<void(bool)> done) override {
    waiters_.push_back(std::move(done));
    if (request_) return;  // joins the fetch in flight
    int64_t now = NowSeconds();
    nlohmann::json claims = {
        {"iss", email_},
        {"scope", "https://www.googleapis.com/auth/firebase.database "
                  "https://www.googleapis.com/auth/userinfo.email"},
        {"aud", token_uri_}, {"iat", now}, {"exp", now + 3600}};
    auto jwt = SignJwtRs256(claims, key_);
    if (!jwt) return Finish(false);
    HttpRequest req;
    req.method = "POST";
    req.url = token_uri_;
    req.headers = {"Content-Type: application/x-www-form-urlencoded"};
    req.body = "grant_type=" + util::PercentEncode("urn:ietf:params:oauth:grant-type:jwt-bearer") +
               "&assertion=" + *jwt;
    req.timeout_ms = 30000;
    request_ = http_.Start(std::move(req), [this](HttpResponse resp) {
      request_ = 0;
      auto body = nlohmann::json::parse(resp.body, nullptr, false);
      if (resp.status != 200 || !body.is_object() || !body.contains("access_token") ||
          !body["access_token"].is_string()) {
        Schedule(std::min<int64_t>(60000, int64_t{1000} << std::min(failures_++, 6)));
        return Finish(false);
      }
      failures_ = 0;
      std::string token = body["access_token"];
      int64_t lifetime_s = body.contains("expires_in") && body["expires_in"].is_number_integer()
                               ? std::max<int64_t>(1, body["expires_in"].get<int64_t>()) : 3600;
      int64_t lifetime_ms = lifetime_s * 1000;
      Schedule(lifetime_ms - std::min(margin_s_ * 1000, lifetime_ms / 2));
      bool changed = token != token_;
      token_ = std::move(token);
      Finish(changed);
    });
  }

 private:
  void Schedule(int64_t delay_ms) {
    uv_timer_start(timer_, [](uv_timer_t* t) {
      static_cast<ServiceAccount*>(t->data)->Refresh([](bool) {});
    }, static_cast<uint64_t>(std::max<int64_t>(0, delay_ms)), 0);
  }
  void Finish(bool changed) {
    for (auto& w : std::exchange(waiters_, {})) w(changed);
  }
  HttpClient& http_;
  std::string email_, key_, token_uri_;
  int64_t margin_s_;
  std::string token_;
  int failures_ = 0;
  HttpClient::RequestId request_ = 0;
  util::UvHandle<uv_timer_t> timer_;
  std::vector<std::function<void(bool)>> waiters_;
};

}  // namespace

std::unique_ptr<Credentials> MakeNoCredentials() { return std::make_unique<NoCredentials>(); }
std::unique_ptr<Credentials> MakeDatabaseSecret(std::string secret) {
  return std::make_unique<DatabaseSecret>(std::move(secret));
}
std::unique_ptr<Credentials> MakeAccessTokenFile(std::string path, SecretReader read, SecretRefused refused) {
  return std::make_unique<AccessTokenFile>(std::move(path), std::move(read), std::move(refused));
}
std::unique_ptr<Credentials> MakeServiceAccount(uv_loop_t* loop, HttpClient& http, const std::string& key_json,
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
  return std::make_unique<ServiceAccount>(loop, http, email, pem, uri, margin_s);
}

}  // namespace tether::upstream
