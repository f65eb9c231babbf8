// One-shot reads outside any sync root (device GETs), optionally with the ETag for a later
// conditional write.
#pragma once
#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "upstream/credentials.h"
#include "upstream/http_client.h"

namespace tether::upstream {

struct GetResult {
  bool ok = false;          // 200 with a JSON body
  int status = 0;           // 0 = network failure
  nlohmann::json value;     // null when absent
  std::string etag;         // with_etag only
  std::string error;
};

// GET <base_url>/<path>.json (segments percent-encoded); `done` runs once on the loop thread.
// A 401 refreshes the credential and, when it changed, asks once more. The credentials must
// outlive the call.
void RestGet(HttpClient& http, Credentials& creds, const std::string& base_url,
             const std::string& path, long timeout_ms, bool with_etag,
             std::function<void(GetResult)> done);
// The same with URL-encoded query parameters (e.g. orderBy=%22%24key%22&limitToFirst=2).
void RestGet(HttpClient& http, Credentials& creds, const std::string& base_url,
             const std::string& path, const std::string& query, long timeout_ms, bool with_etag,
             std::function<void(GetResult)> done);

}  // namespace tether::upstream
