#include "gateway/device/device_reads.h"

#include <fmt/format.h>

#include "gateway/model/route_pattern.h"

namespace tether {

DeviceReads::DeviceReads(store::Store& store, LocalCopy& local, DeviceNotifier& notifier, ObservationOwner& owner,
                         const CloudStatus& cloud, DeviceReplier& replier, DeviceApiCounters& counters)
    : store_(store),
      local_(local),
      notifier_(notifier),
      owner_(owner),
      cloud_(cloud),
      replier_(replier),
      counters_(counters) {}

namespace {
// An observation of s at dev_path as c asked for it; its id comes with the engine's answer.
Observer NewObserver(const DeviceCall& c, Session& s, const std::string& dev_path, uint64_t digest,
                     std::shared_ptr<const Query> query) {
  Observer o;
  o.session = &s;
  o.device_path = dev_path;
  o.json = c.json_out;
  o.native = c.native;
  o.last_digest = digest;
  o.query = std::move(query);
  return o;
}
}  // namespace

void DeviceReads::HandleInfo(DeviceCall& c, Session& session, const std::vector<std::string>& path) {
  if (c.method != coap::code::kGet) return replier_.ReplyError(c, {ErrorCode::kMethodNotAllowed, ".info is read-only"});
  if (path.size() != 2 || (path[1] != "connected" && path[1] != "serverTimeOffset" && path[1] != "serverTime")) {
    return replier_.ReplyError(c, {ErrorCode::kNotFound, "no such .info entry"});
  }
  Session* s = &session;
  std::string dev_path = JoinPath(path);
  std::string body = EncodeFor(notifier_.InfoValue(path[1]), c.json_out);
  if (c.observe == 1u) {
    notifier_.Unobserve(*s, dev_path);
    return replier_.Reply(c, coap::code::kContent);
  }
  if (c.observe == 0u) {
    if (RefuseOverObserverCap(c, *s, dev_path)) return;
    RespondObserve(c, NewObserver(c, *s, dev_path, SnapshotDigest(body), nullptr), dev_path, body);
    return;
  }
  replier_.Reply(c, coap::code::kContent, body);
}

void DeviceReads::HandleRead(DeviceCall& c, Session& s, const std::vector<std::string>& path) {
  auto res = routes_->Resolve(s.app, s.device, path);
  std::string dev_path = JoinPath(path);
  // An observed query is named by path and query: the same path may be observed with others.
  if (c.query) {  // appended piecewise: GCC 12 at -O3 takes "?" + std::string&& for an overlapping memcpy
    dev_path += '?';
    dev_path += c.query->Canonical();
  }
  if (c.observe == 1u) {  // the SDK deregisters with a new token
    notifier_.Unobserve(s, dev_path);
    return replier_.Reply(c, coap::code::kContent);
  }
  if (!res || !res->may_read) {
    return replier_.ReplyError(c, {ErrorCode::kForbidden, "read not allowed at /" + JoinPath(path)});
  }
  if (c.observe == 0u && RefuseOverObserverCap(c, s, dev_path)) return;
  std::string cloud = JoinPath(res->cloud_path);
  if (c.query) return HandleQuery(c, s, cloud, dev_path, c.query);
  if (c.observe == 0u) {
    Json value = store_.tree().Get("/" + cloud);
    // Digest of the CBOR form: notifications compare against the same encoding.
    const coap::ObserverId id =
        RespondObserve(c, NewObserver(c, s, dev_path, SnapshotDigest(EncodeCbor(value)), nullptr),
                       cloud, EncodeFor(value, c.json_out));
    // Outside sync roots the cloud's value reaches the observer as a notification.
    if (id && local_.has_cloud() && cloud_.connected() && !local_.InSyncRoot(cloud) &&
        (!local_.Holds(cloud, "") || local_.RefreshDue(cloud, ""))) {
      local_.FetchValue(cloud, [](std::optional<Json>) {});
    }
    return;
  }
  if (!local_.has_cloud()) return replier_.Reply(c, coap::code::kContent, EncodeFor(store_.tree().Get("/" + cloud), c.json_out));
  const bool held = local_.Holds(cloud, "");
  if (!cloud_.connected()) return ReplyHeld(c, cloud, held, "value not held offline");
  if (held && local_.InSyncRoot(cloud)) return ReplyHeld(c, cloud, true, "");  // the stream keeps it current
  auto call = std::make_shared<DeviceCall>(c);
  local_.FetchValue(cloud, scope_.Guard([this, call, cloud](std::optional<Json> answer) {
    if (!answer) return ReplyHeld(*call, cloud, local_.Holds(cloud, ""), "cloud did not answer the read");
    replier_.Reply(*call, coap::code::kContent, EncodeFor(*answer, call->json_out));
  }));
}

void DeviceReads::ReplyHeld(DeviceCall& c, const std::string& cloud, bool held, const std::string& diagnostic) {
  Json value = store_.tree().Get("/" + cloud);
  // Not complete but something is there (own writes, parts of remembered results): that is what
  // the gateway knows. Nothing at all: saying null would claim the cloud holds nothing.
  if (held || !value.is_null()) return replier_.Reply(c, coap::code::kContent, EncodeFor(value, c.json_out));
  replier_.ReplyError(c, {ErrorCode::kUnavailable, diagnostic, kQueryRetryMaxAge});
}

void DeviceReads::HandleQuery(DeviceCall& c, Session& s, const std::string& cloud, const std::string& dev_path,
                   std::shared_ptr<const Query> q) {
  const std::string tree_path = "/" + cloud;
  const std::string canonical = q->Canonical();
  if (!local_.has_cloud() || local_.Holds(cloud, canonical)) {
    AnswerQuery(c, s, cloud, dev_path, q, ApplyQuery(store_.tree().Get(tree_path), *q));
    // A remembered cloud result answers at once; the cloud refreshes it now and then (observers
    // hear changes). Sync roots are kept current by their stream.
    if (local_.has_cloud() && cloud_.connected() && !local_.InSyncRoot(cloud) && local_.RefreshDue(cloud, canonical)) {
      local_.FetchQuery(cloud, q, [](std::optional<Json>) {});
    }
    return;
  }
  if (!cloud_.connected()) {
    return replier_.ReplyError(c, {ErrorCode::kUnavailable, "query result not held offline", kQueryRetryMaxAge});
  }
  auto call = std::make_shared<DeviceCall>(c);
  std::string session_id = s.id;
  local_.FetchQuery(cloud, q, scope_.Guard([this, call, session_id, cloud, dev_path, q](std::optional<Json> answer) {
    if (!answer) {
      return replier_.ReplyError(*call,
                                 {ErrorCode::kUnavailable, "cloud did not answer the query", kQueryRetryMaxAge});
    }
    Session* s = owner_.FindSession(session_id);
    if (!s) return replier_.ReplyError(*call, {ErrorCode::kUnauthorized, "unknown session"});
    AnswerQuery(*call, *s, cloud, dev_path, q, *answer);
  }));
}

void DeviceReads::AnswerQuery(DeviceCall& c, Session& s, const std::string& cloud, const std::string& dev_path,
                   std::shared_ptr<const Query> q, const Json& result) {
  if (c.observe != 0u) return replier_.Reply(c, coap::code::kContent, EncodeFor(result, c.json_out));
  if (RefuseOverObserverCap(c, s, dev_path)) return;  // others registered while the cloud answered
  RespondObserve(c, NewObserver(c, s, dev_path, SnapshotDigest(EncodeCbor(result)), std::move(q)), cloud,
                 EncodeFor(result, c.json_out));
}

coap::ObserverId DeviceReads::RespondObserve(DeviceCall& c, Observer o, std::string cloud_path,
                                            const std::string& body) {
  std::span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(body.data()), body.size());
  coap::Response resp{coap::code::kContent, bytes, std::nullopt, std::nullopt};
  if (c.native) resp.content_format = c.json_out ? kContentFormatJson : kContentFormatCbor;
  const coap::ObserverId id = endpoint_ ? endpoint_->RespondObserve(c.id, resp) : 0;
  o.id = id;
  if (id) notifier_.Add(std::move(o), std::move(cloud_path));
  replier_.CountAnswer(coap::code::kGet, coap::code::kContent);
  return id;
}

void DeviceReads::RefreshObserved() {
  if (!local_.has_cloud()) return;
  for (const auto& [path, query] : notifier_.ObservedReads()) {
    if (local_.InSyncRoot(path)) continue;  // sync roots resync by stream
    local_.NoteRefreshed(path, query ? query->Canonical() : std::string());
    if (query) local_.FetchQuery(path, query, [](std::optional<Json>) {});
    else local_.FetchValue(path, [](std::optional<Json>) {});
  }
}

bool DeviceReads::RefuseOverObserverCap(DeviceCall& c, const Session& s, const std::string& dev_path) {
  const uint32_t max = routes_->config().device.max_observers_per_session;
  if (!notifier_.AtCap(s, dev_path, max)) return false;
  ++counters_.observers_refused;
  replier_.ReplyError(c, {ErrorCode::kForbidden,
                          fmt::format("too many observations: {} per session (device.max_observers_per_session)", max)});
  return true;
}

}  // namespace tether
