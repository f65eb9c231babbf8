#include "upstream/rest_get.h"

namespace tether::upstream {

void RestGet(HttpClient& http, Credentials& creds, const std::string& base_url,
             const std::string& path, long timeout_ms, bool with_etag,
             std::function<void(GetResult)> done) {
  RestGet(http, creds, base_url, path, std::string(), timeout_ms, with_etag, std::move(done));
}

void RestGet(HttpClient& http, Credentials& creds, const std::string& base_url,
             const std::string& path, const std::string& query, long timeout_ms, bool with_etag,
             std::function<void(GetResult)> done) {
  HttpRequest req;
  std::string p = path;
  while (!p.empty() && p.front() == '/') p.erase(0, 1);
  req.url = base_url + "/" + p + ".json";
  std::string params = query;
  if (std::string q = creds.query(); !q.empty()) params += (params.empty() ? "" : "&") + q;
  if (!params.empty()) req.url += "?" + params;
  if (with_etag) req.headers.push_back("X-Firebase-ETag: true");
  req.timeout_ms = timeout_ms;
  http.start(std::move(req), [done = std::move(done)](HttpResponse resp) {
    GetResult r;
    r.status = resp.status;
    if (resp.transport_error) {
      r.error = resp.error;
      return done(std::move(r));
    }
    if (auto it = resp.headers.find("etag"); it != resp.headers.end()) r.etag = it->second;
    r.value = nlohmann::json::parse(resp.body, nullptr, false);
    r.ok = resp.status == 200 && !r.value.is_discarded();
    if (!r.ok) {
      r.error = "HTTP " + std::to_string(resp.status) + ": " + resp.body.substr(0, 200);
      if (r.value.is_discarded()) r.value = nullptr;
    }
    done(std::move(r));
  });
}

}  // namespace tether::upstream
