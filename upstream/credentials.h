// Credentials: what authorizes REST requests to the database. Used on the loop thread only.
// Implementations never log or expose secret material except through Query().
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include <uv.h>

namespace tether::upstream {

class HttpClient;

class Credentials {
 public:
  virtual ~Credentials() = default;
  // Query parameter to append to a request URL ("auth=..." or "access_token=..."), already
  // URL-encoded; empty when no credential is configured or none has been obtained yet.
  virtual std::string Query() = 0;
  // Obtains a fresh credential (after a 401, auth_revoked, or approaching expiry).
  // `done(changed)` runs on the loop: changed = a different credential is now in use.
  virtual void Refresh(std::function<void(bool changed)> done) = 0;
};

// No authentication (open rules, local test clouds).
std::unique_ptr<Credentials> MakeNoCredentials();
// Legacy database secret or ID token, sent as `auth=`.
std::unique_ptr<Credentials> MakeDatabaseSecret(std::string secret);
// Reads a file holding a secret; throws (std::exception) when it cannot or must not be used.
using SecretReader = std::function<std::string(const std::string& path)>;
// Told why a re-read of a secret file was refused (the reader's exception text).
using SecretRefused = std::function<void(const std::string& why)>;
// OAuth2 access token kept in a file by another agent: its first line, read through `read`, the
// one reader of the file:
// - at construction: a refused file throws (tetherd fails at startup, not at the first upload);
// - when the file changes (mtime or ctime: a chmod counts): re-read; a refused file is told to
//   `refused` and gives no token (requests go without one, the cloud answers 401) until it
//   changes again.
std::unique_ptr<Credentials> MakeAccessTokenFile(std::string path, SecretReader read, SecretRefused refused);
// Service-account JSON key (client_email, private_key, token_uri): RS256 JWT exchanged at
// token_uri for an access token. The first token is fetched at once (on `loop`), each one is
// replaced `refresh_margin_s` (at most half its lifetime) before it expires, failed fetches are
// retried. Scopes: firebase.database + userinfo.email. Returns nullptr (and sets *error) on a bad
// key. The HttpClient outlives it.
std::unique_ptr<Credentials> MakeServiceAccount(uv_loop_t* loop, HttpClient& http, const std::string& key_json,
                                                std::string* error, int64_t refresh_margin_s = 300);

}  // namespace tether::upstream
