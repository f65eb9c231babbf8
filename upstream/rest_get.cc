#include "upstream/rest_get.h"

#include <memory>

#include "upstream/db_url.h"

namespace tether::upstream {
namespace {

struct GetCall {
  HttpClient& http;
  Credentials& creds;
  std::string base_url, path, query;
  long timeout_ms;
  bool with_etag;
  std::function<void(GetResult)> done;
};

void Send(std::shared_ptr<GetCall> call, bool may_refresh) {
  HttpRequest req;
  std::string params = call->query;
  if (std::string q = call->creds.Query(); !q.empty()) params += (params.empty() ? "" : "&") + q;
  req.url = DatabaseUrl(call->base_url, call->path, params);
  if (call->with_etag) req.headers.push_back("X-Firebase-ETag: true");
  req.timeout_ms = call->timeout_ms;
  call->http.Start(std::move(req), [call, may_refresh](HttpResponse resp) {
    if (resp.status == 401 && may_refresh) {  // a stale credential: refresh, then ask once more
      return call->creds.Refresh([call](bool changed) {
        if (changed) return Send(call, false);
        GetResult r;
        r.status = 401;
        r.error = "HTTP 401 and no new credential";
        call->done(std::move(r));
      });
    }
    GetResult r;
    r.status = resp.status;
    if (resp.transport_error) {
      r.error = resp.error;
      return call->done(std::move(r));
    }
    if (auto it = resp.headers.find("etag"); it != resp.headers.end()) r.etag = it->second;
    r.value = nlohmann::json::parse(resp.body, nullptr, false);
    r.ok = resp.status == 200 && !r.value.is_discarded();
    if (!r.ok) {
      r.error = "HTTP " + std::to_string(resp.status) + ": " + resp.body.substr(0, 200);
      if (r.value.is_discarded()) r.value = nullptr;
    }
    call->done(std::move(r));
  });
}

}  // namespace

void RestGet(HttpClient& http, Credentials& creds, const std::string& base_url,
             const std::string& path, long timeout_ms, bool with_etag,
             std::function<void(GetResult)> done) {
  RestGet(http, creds, base_url, path, std::string(), timeout_ms, with_etag, std::move(done));
}

void RestGet(HttpClient& http, Credentials& creds, const std::string& base_url,
             const std::string& path, const std::string& query, long timeout_ms, bool with_etag,
             std::function<void(GetResult)> done) {
  Send(std::make_shared<GetCall>(GetCall{http, creds, base_url, path, query, timeout_ms, with_etag, std::move(done)}),
       true);
}

}  // namespace tether::upstream
