#include "gateway/device/device_api.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "gateway/model/data_rules.h"
#include "gateway/device/device_write.h"
#include "gateway/model/route_pattern.h"
#include "store/boot_clock.h"

namespace tether {

namespace {

constexpr uint32_t kOverloadMaxAge = 1;  // s: a retry one second later finds the backlog gone
// Shedding ends when no write was shed for this long: devices told to retry after Max-Age retry
// within it, so a shorter pause is the same overload.
constexpr uint64_t kShedPauseMs = 2 * kOverloadMaxAge * 1000;

// Firebase's model: null members and empty objects do not exist.
Json Normalized(const Json& v) {
  if (!v.is_object()) return v;
  Json out = Json::object();
  for (const auto& [k, c] : v.items()) {
    Json n = Normalized(c);
    if (!n.is_null()) out[k] = std::move(n);
  }
  return out.empty() ? Json() : out;
}

// A session lives on the transport it was opened on: a DTLS session serves only requests over
// DTLS from its PSK identity, a plaintext session only plaintext requests.
bool OnSessionTransport(const Session& s, const coap::Address& peer, std::string_view identity) {
  return s.addr.secure == peer.secure && (!peer.secure || s.device == identity);
}

}  // namespace

DeviceApi::DeviceApi(uv_loop_t* loop, store::Store& store, LocalCopy& local, std::shared_ptr<const RouteTable> routes)
    : loop_(loop),
      store_(store),
      local_(local),
      keeper_(loop, store, notifier_, cloud_, counters_, routes->config().device,
              [this](const std::string& route) { on_queued_(route); }),
      notifier_(store, keeper_, cloud_, counters_),
      replier_(counters_),
      reads_(store, local, notifier_, keeper_, cloud_, replier_, counters_),
      shedding_(kShedPauseMs) {
  SetRoutes(std::move(routes));
  // Cloud data the local copy committed (synced, read, after a conflict) reaches observers.
  changed_ = local_.SetChangedHook(scope_.Guard([this](const std::vector<std::string>& changed) {
    notifier_.NotifyPaths(changed);
  }));
}

DeviceApi::~DeviceApi() { Close(); }

void DeviceApi::Close() {
  keeper_.Close();
  reads_.Close();
  scope_.Close();
}

DeviceApiCounters DeviceApi::counters() const {
  DeviceApiCounters c = counters_;
  replier_.AddRequests(&c);
  return c;
}

void DeviceApi::SetRoutes(std::shared_ptr<const RouteTable> routes) {
  keeper_.SetRoutes(routes);  // throws ConfigError for an unreadable app secret: nothing changed then
  reads_.SetRoutes(routes);
  routes_ = std::move(routes);
}

util::Subscription DeviceApi::SetQueuedHook(std::function<void(const std::string& route)> hook) {
  return on_queued_.Set(std::move(hook));
}

std::optional<uint64_t> DeviceApi::shedding_for_ms() const { return shedding_.LastedMs(uv_now(loop_)); }

void DeviceApi::AttachEndpoint(coap::Endpoint* endpoint) {
  endpoint_ = endpoint;
  replier_.AttachEndpoint(endpoint);
  reads_.AttachEndpoint(endpoint);
  keeper_.AttachEndpoint(endpoint);
  notifier_.AttachEndpoint(endpoint);
}

void DeviceApi::RevokeAfterReload() {
  const auto [revoked, discarded] = keeper_.RevokeAfterReload();
  const size_t denied = notifier_.RevokeAfterReload(*routes_);
  if (revoked || denied) {
    spdlog::warn("reload: revoked {} device session(s) whose credentials are gone (their {} onDisconnect "
                 "operation(s) discarded, not run; their next request gets 4.01) and ended {} observation(s) "
                 "the routes no longer allow (4.03)",
                 revoked, discarded, denied);
  }
}

// ---- request dispatch ----

void DeviceApi::OnRequest(const coap::Request& r) {
  DeviceCall c;
  c.id = r.id;
  c.method = r.method();
  c.peer = r.peer;
  c.identity = r.identity;
  c.payload.assign(reinterpret_cast<const char*>(r.payload.data()), r.payload.size());
  c.observe = r.observe();
  auto cf = r.content_format();
  auto accept = r.accept();
  c.json_in = cf && *cf == kContentFormatJson;
  c.json_out = accept ? *accept == kContentFormatJson : c.json_in;
  c.native = cf.has_value() || accept.has_value();
  // A native client reassembles Block2 on its own; an SDK device (no Content-Format/Accept) cannot:
  // a snapshot over one datagram is answered 4.13 for it (and ends its observation).
  if (c.native && endpoint_) endpoint_->AllowUnaskedBlocks(c.id);
  for (std::string_view q : r.uri_queries()) {
    if (q.rfind(".cs=", 0) == 0) c.cs = q.substr(4);
    else if (q.rfind(".dis=", 0) == 0) c.dis = q.substr(5);
    else if (!q.empty() && q[0] != '.') c.params.emplace_back(q);
  }
  std::string_view host = r.uri_host();
  auto app = routes_->FindApp(host.empty() ? std::nullopt : std::optional<std::string>(host));
  if (!app) return replier_.ReplyError(c, Diagnostic::Invalid("unknown app"));
  c.app = app->id;
  if (accept && *accept != kContentFormatJson && *accept != kContentFormatCbor) {
    return replier_.ReplyError(c, {ErrorCode::kNotAcceptable, "accept 60 (cbor) or 50 (json)"});
  }
  if (cf && *cf != kContentFormatJson && *cf != kContentFormatCbor) {
    return replier_.ReplyError(c, {ErrorCode::kUnsupportedFormat, "content-format 60 (cbor) or 50 (json)"});
  }
  if (c.payload.size() > routes_->config().device.max_payload) {
    const size_t max = routes_->config().device.max_payload;  // Size1: what is accepted (RFC 7959 §2.9.3)
    return replier_.ReplyError(c, {ErrorCode::kTooLarge, fmt::format("payload over {} bytes", max)},
                               static_cast<uint32_t>(max));
  }

  std::vector<std::string> path;
  for (std::string_view seg : r.uri_path()) {
    if (!seg.empty()) path.emplace_back(seg);  // the root is one empty segment
  }
  bool control = path.size() == 1 && !path[0].empty() && path[0][0] == '.';
  if (control && path[0] == ".cs") {
    if (c.method != coap::code::kPost) return replier_.ReplyError(c, {ErrorCode::kMethodNotAllowed, "POST /.cs"});
    return HandleOpen(c);
  }
  if (control && path[0] == ".rst") {
    if (c.method != coap::code::kPost) return replier_.ReplyError(c, {ErrorCode::kMethodNotAllowed, "POST /.rst"});
    return HandleRebind(c);
  }
  Session* s = c.cs.empty() ? nullptr : keeper_.sessions().ByShortToken(c.cs);
  if (s && (s->app != c.app || !OnSessionTransport(*s, c.peer, c.identity))) s = nullptr;
  if (s && !(s->addr == c.peer)) {
    // The token names the session: a sign of life from the device's new address (the SDK moves
    // to a new source port after 10 s without answers), and evidence for SessionContinuity.
    keeper_.NoteTokenFrom(*s, c.peer);
    // Over plain UDP nothing else: the address is not the one the session's answers go to, and
    // anyone may forge a source (RFC 7252 §11.3). A short 4.01, never larger than the request
    // (which carries the 13-byte .cs option), makes the SDK send /.rst (a ping) or
    // re-authenticate (other requests): no snapshot, no observation, no write for an address the
    // session was not bound to. A DTLS peer's address is proven (cookie exchange) and its records
    // authenticated as the session's identity (OnSessionTransport): it is served, as before.
    if (!c.peer.secure) {
      return RefuseToken(c, TokenRefusal::kBoundElsewhere, {ErrorCode::kUnauthorized, "use /.rst"});
    }
  }
  if (s) {
    // The session's token came back from the address it was sent to: the engine keeps this peer
    // when unverified addresses flood its table (docs/operations.md, "Security model"), and a
    // session opened from there is real.
    if (!r.peer_verified && endpoint_) endpoint_->VerifyPeer(c.peer);
    if (!s->confirmed) keeper_.Confirm(*s);
  }
  if (control && path[0] == ".ping") {
    if (c.method != coap::code::kGet) return replier_.ReplyError(c, {ErrorCode::kMethodNotAllowed, "GET /.ping"});
    if (!s) return RefuseToken(c, TokenRefusal::kUnknownSession, {ErrorCode::kUnauthorized, "unknown session"});
    return HandlePing(c, s);
  }
  if (!s) return RefuseToken(c, TokenRefusal::kUnknownSession, {ErrorCode::kUnauthorized, "unknown session"});
  if (control && path[0] == ".off") return HandleOffline(c, s);
  if (!path.empty() && path[0] == ".info") return reads_.HandleInfo(c, *s, path);
  if (auto r = CheckPath(path); !r) return replier_.ReplyError(c, r.error());
  // Overload: a write that would wait behind commits already late is refused now, cheaply (no
  // decoding, nothing queued), rather than answered after the device's retransmission timer.
  const auto commit_wait_ms = static_cast<int64_t>(store_.CommitWaitMs());
  const bool write = c.method == coap::code::kPut || c.method == coap::code::kPost ||
                     c.method == coap::code::kPatch || c.method == coap::code::kDelete;
  if (write && commit_wait_ms > routes_->config().device.max_write_wait.count()) {
    ++counters_.writes_shed;
    shedding_.Note(uv_now(loop_));
    return replier_.ReplyError(c, {ErrorCode::kUnavailable, "overloaded, retry later", kOverloadMaxAge});
  }
  if (!c.dis.empty()) {
    if (c.dis != "add" && c.dis != "rm") {
      return replier_.ReplyError(c, Diagnostic::Invalid(".dis must be add or rm"));
    }
    if (c.dis == "rm" && c.method != coap::code::kDelete) {
      return replier_.ReplyError(c, {ErrorCode::kMethodNotAllowed, ".dis=rm needs DELETE"});
    }
    return HandleOnDisconnect(c, *s, path, c.dis == "rm");
  }
  if (c.method == coap::code::kGet && !c.params.empty()) {  // writes ignore them, as before
    Query q;
    std::vector<std::string_view> views(c.params.begin(), c.params.end());
    if (auto r = ParseQuery(views, &q); !r) return replier_.ReplyError(c, r.error());
    if (!q.empty()) c.query = std::make_shared<const Query>(std::move(q));
  }
  switch (c.method) {
    case coap::code::kGet: return reads_.HandleRead(c, *s, path);
    case coap::code::kPut:
    case coap::code::kPost:
    case coap::code::kDelete:
    case coap::code::kPatch: return HandleWrite(c, *s, path);
    default: return replier_.ReplyError(c, {ErrorCode::kMethodNotAllowed, "use GET, PUT, POST, PATCH or DELETE"});
  }
}

void DeviceApi::OnResponseFailed(coap::ExchangeId) {
  // The device never acknowledged a separate response (it is gone or moved); an observation that
  // response registered is dropped by the engine and reported through OnObserverDropped.
  ++counters_.responses_failed;
}

// ---- sessions ----

void DeviceApi::HandleOpen(DeviceCall& c) {
  // Plain CoAP only: over DTLS the handshake (hellos_per_second, a cookie) proved the address.
  if (!c.peer.secure && !keeper_.TakeOpen(c.peer)) {
    ++counters_.opens_rate_limited;
    if (endpoint_) endpoint_->Ignore(c.id);  // nothing goes back to a possibly forged source
    return;
  }
  // 4.01, not 4.00: the SDK gives up for good on a 4.00 to /.cs (it means "unknown app").
  if (c.payload.size() > 512) {
    ++counters_.auth_failures;
    keeper_.LogAuthFailure(c.peer, c.app);
    return RefuseToken(c, TokenRefusal::kBadAuthToken, {ErrorCode::kUnauthorized, "auth token longer than 512 bytes"});
  }
  AuthOutcome auth = keeper_.Authenticate(c.app, c.payload, c.peer, c.identity);
  if (!auth.ok) {
    ++counters_.auth_failures;
    keeper_.LogAuthFailure(c.peer, c.app);
    return RefuseToken(c, TokenRefusal::kBadAuthToken, {ErrorCode::kUnauthorized, "invalid auth token"});
  }
  SessionKeeper::OpenRequest open;
  open.app = c.app;
  open.device = auth.device;
  if (!c.peer.secure) open.credential = DeviceAuthenticator::Fingerprint(c.payload);
  open.peer = c.peer;
  open.exchange = c.id;
  auto call = std::make_shared<DeviceCall>(c);
  const bool taken = keeper_.Open(std::move(open), scope_.Guard([this, call](const SessionKeeper::OpenResult& r) {
    switch (r.kind) {
      case SessionKeeper::OpenResult::Kind::kOpened: {
        const Json body = {{"s", r.short_token}, {"l", r.long_token}};
        return replier_.Reply(*call, coap::code::kContent, EncodeFor(body, call->json_out));
      }
      case SessionKeeper::OpenResult::Kind::kRevoked:
        return replier_.ReplyError(*call, {ErrorCode::kUnauthorized, "invalid auth token"});
      case SessionKeeper::OpenResult::Kind::kStoreError: return replier_.ReplyStoreStatus(*call, r.status);
    }
  }));
  if (!taken && endpoint_) endpoint_->Ignore(c.id);  // another open of the device waits already
}

void DeviceApi::RefuseToken(DeviceCall& c, TokenRefusal why, const Diagnostic& diagnostic) {
  const bool answer = keeper_.TakeRefusal(c.peer);
  ++counters_.token_refusals[static_cast<int>(why)][answer ? 0 : 1];
  if (answer) return replier_.ReplyError(c, diagnostic);
  if (endpoint_) endpoint_->Ignore(c.id);
}

void DeviceApi::HandlePing(DeviceCall& c, Session* s) {
  if (!s || !(s->addr == c.peer)) return replier_.ReplyError(c, {ErrorCode::kUnauthorized, "unknown session"});
  if (keeper_.Ping(*s)) {
    return replier_.ReplyError(c, {ErrorCode::kUnauthorized, "ping later than the heartbeat target"});
  }
  replier_.Reply(c, coap::code::kContent);
}

void DeviceApi::HandleRebind(DeviceCall& c) {
  Session* s = keeper_.sessions().ByLongToken(c.payload);
  if (!s || s->app != c.app || !OnSessionTransport(*s, c.peer, c.identity)) {
    return RefuseToken(c, TokenRefusal::kUnknownLongToken, Diagnostic::Invalid("unknown long token"));
  }
  store::WriteBatch batch;
  batch.PutSession(keeper_.Rebind(*s, c.peer));
  CommitThenReply(c, std::move(batch));
}

void DeviceApi::HandleOffline(DeviceCall& c, Session* s) {
  ++counters_.go_offline;
  auto call = std::make_shared<DeviceCall>(c);
  keeper_.EndSession(s->id, SessionKeeper::EndCause::kGoOffline, scope_.Guard([this, call] {
    replier_.Reply(*call, coap::code::kContent);
  }));
}

// ---- data ----

void DeviceApi::SetCloudLink(bool connected, std::optional<int64_t> offset_ms) {
  const CloudStatus::Change change = cloud_.Set(connected, offset_ms);
  if (change.changed) notifier_.NotifyInfo();
  if (change.came_back) reads_.RefreshObserved();
}

void DeviceApi::HandleWrite(DeviceCall& c, Session& s, const std::vector<std::string>& path) {
  std::string dev_path = JoinPath(path);
  auto res = routes_->Resolve(s.app, s.device, path);
  if (!res || !res->may_write) {
    return replier_.ReplyError(c, {ErrorCode::kForbidden, "write not allowed at /" + dev_path});
  }
  Json value;
  if (c.method != coap::code::kDelete && !DecodePayload(c, &value)) return;
  std::optional<Json> expect;  // compare-and-set: PUT {".cas":{"expect":old,"value":new}}
  if (c.method == coap::code::kPut && value.is_object() && value.size() == 1 && value.contains(".cas")) {
    Json w = value[".cas"];
    // Null members vanish in decoding: a missing expect / value is null (absent / remove).
    size_t known = w.is_object() ? w.count("expect") + w.count("value") : 0;
    if (!w.is_object() || known != w.size()) {
      return replier_.ReplyError(c, Diagnostic::Invalid("compare-and-set is {\".cas\":{\"expect\":old,\"value\":new}}"));
    }
    expect = Normalized(w.value("expect", Json()));
    value = w.value("value", Json());
    if (HasServerValues(value) || HasServerValues(*expect)) {
      return replier_.ReplyError(c, Diagnostic::Invalid("no server values in a compare-and-set"));
    }
    if (auto r = CheckValue(*expect, res->cloud_path.size()); !r) {
      return replier_.ReplyError(c, std::move(r).Error().Prefixed("expect: "));
    }
  }
  std::vector<std::string> cloud = res->cloud_path;
  std::string push_key;
  store::OpKind kind = store::OpKind::kSet;
  if (c.method == coap::code::kPatch) {
    kind = store::OpKind::kUpdate;
    if (auto r = CheckUpdate(value, cloud.size()); !r) return replier_.ReplyError(c, r.error());
    if (value.empty()) return replier_.Reply(c, coap::code::kContent);  // changes nothing: nothing to queue
    Json children = Json::object();  // child paths in one form, locally and for the upload
    for (auto& [k, v] : value.items()) children[JoinPath(SplitPath(k))] = std::move(v);
    value = std::move(children);
  } else if (c.method == coap::code::kDelete || value.is_null()) {
    kind = store::OpKind::kRemove;
    value = Json();
  } else {
    if (c.method == coap::code::kPost) {
      push_key = cloud_.NextPushId(cloud_.CloudNowMs());
      cloud.push_back(push_key);
    }
    if (auto r = CheckValue(value, cloud.size()); !r) return replier_.ReplyError(c, r.error());
  }
  if (cloud.size() > kMaxDepth) return replier_.ReplyError(c, Diagnostic::Invalid("path deeper than 32 levels"));

  const std::string tree_path = TreePath(cloud);
  store::WriteBatch batch;
  // Byte strings stay bytes locally; the cloud gets base64 (EncodeJson). The queue entry is
  // encoded first, so the value itself moves into the local-copy write.
  if (expect) {
    store::QueueEntry e = QueueEntryFor(res->route->name, s.device, store::OpKind::kConditionalSet, tree_path,
                                        value, store::WallClockMs(), cloud_.offset_ms());
    e.payload = EncodeJson(Json{{"expect", *expect}, {"value", value}});
    batch.TreeSetIf(tree_path, *expect, std::move(value));
    batch.Append(std::move(e));
  } else {
    store::QueueEntry e =
        QueueEntryFor(res->route->name, s.device, kind, tree_path, value, store::WallClockMs(), cloud_.offset_ms());
    AddTreeWrite(&batch, kind, tree_path, std::move(value), cloud_.CloudNowMs(), /*refuse_non_finite=*/true);
    batch.Append(std::move(e));
  }
  ++counters_.writes;
  auto call = std::make_shared<DeviceCall>(std::move(c));  // c is not used after this
  store_.Submit(std::move(batch), scope_.Guard([this, call, push_key, tree_path, route = res->route->name](store::BatchResult r) {
    if (r.status.code == store::StatusCode::kConflict) {  // compare-and-set lost: here is the value
      ++counters_.cas_refused;
      return replier_.Reply(*call, kPreconditionFailed, EncodeFor(store_.tree().Get(tree_path), call->json_out));
    }
    if (!r.status.ok()) {
      ++counters_.writes_rejected;
      return replier_.ReplyStoreStatus(*call, r.status);
    }
    call->text_reply = true;
    replier_.Reply(*call, coap::code::kContent, push_key);  // push answers the new key as raw bytes
    notifier_.NotifyPaths(r.changed_paths);
    on_queued_(route);
  }));
}

void DeviceApi::HandleOnDisconnect(DeviceCall& c, Session& s, const std::vector<std::string>& path, bool cancel) {
  std::string dev_path = JoinPath(path);
  store::WriteBatch batch;
  if (cancel) {
    batch.CancelOnDisconnect(s.id, dev_path);
  } else {
    auto res = routes_->Resolve(s.app, s.device, path);
    if (!res || !res->may_write) {
      return replier_.ReplyError(c, {ErrorCode::kForbidden, "write not allowed at /" + dev_path});
    }
    if (!res->route->on_disconnect) {
      return replier_.ReplyError(c, {ErrorCode::kForbidden, "onDisconnect not allowed at /" + dev_path});
    }
    store::OnDisconnectOp op;
    op.path = dev_path;
    Json value;
    if (c.method != coap::code::kDelete && !DecodePayload(c, &value)) return;
    switch (c.method) {
      case coap::code::kPut: op.kind = store::OnDisconnectOp::Kind::kSet; break;
      case coap::code::kPost: op.kind = store::OnDisconnectOp::Kind::kPush; break;
      case coap::code::kPatch: op.kind = store::OnDisconnectOp::Kind::kUpdate; break;
      case coap::code::kDelete: op.kind = store::OnDisconnectOp::Kind::kRemove; break;
      default:
        return replier_.ReplyError(c, {ErrorCode::kMethodNotAllowed, "onDisconnect takes PUT, POST, PATCH or DELETE"});
    }
    size_t depth = res->cloud_path.size() + (op.kind == store::OnDisconnectOp::Kind::kPush ? 1 : 0);
    auto r = op.kind == store::OnDisconnectOp::Kind::kUpdate ? CheckUpdate(value, depth) : CheckValue(value, depth);
    if (!r) return replier_.ReplyError(c, r.error());
    if (op.kind == store::OnDisconnectOp::Kind::kUpdate && value.empty()) return replier_.Reply(c, coap::code::kContent);
    if (!value.is_null()) {
      std::vector<uint8_t> cbor = Json::to_cbor(value);  // keeps byte strings intact until firing
      op.payload.assign(cbor.begin(), cbor.end());
    }
    // Registering again replaces what was carried over from an earlier session at this path.
    if (s.carried_through_order) batch.CancelOnDisconnect(s.id, dev_path, s.carried_through_order);
    // The caps count what the store holds for the session (bounded by them: one short scan),
    // less what this registration replaces, plus the registrations still being committed.
    const DeviceConfig& limits = routes_->config().device;
    const uint64_t mine = op.path.size() + op.payload.size();
    uint64_t count = 0, bytes = 0;
    for (const store::OnDisconnectOp& held : store_.sessions().OnDisconnectOps(s.id)) {
      const bool replaced = s.carried_through_order && held.order <= s.carried_through_order &&
                            (dev_path.empty() || held.path == dev_path || held.path.rfind(dev_path + "/", 0) == 0);
      if (replaced) continue;
      ++count;
      bytes += held.path.size() + held.payload.size();
    }
    if (auto p = ondisconnect_pending_.find(s.id); p != ondisconnect_pending_.end()) {
      count += p->second.count;
      bytes += p->second.bytes;
    }
    if (count >= limits.max_ondisconnect_per_session) {
      ++counters_.ondisconnect_refused_count;
      return replier_.ReplyError(c, {ErrorCode::kForbidden,
                                     fmt::format("too many onDisconnect operations: {} per session "
                                                 "(device.max_ondisconnect_per_session)",
                                                 limits.max_ondisconnect_per_session)});
    }
    if (bytes + mine > limits.max_ondisconnect_bytes_per_session) {
      ++counters_.ondisconnect_refused_bytes;
      return replier_.ReplyError(c, {ErrorCode::kForbidden,
                                     fmt::format("onDisconnect operations over {} bytes per session "
                                                 "(device.max_ondisconnect_bytes_per_session)",
                                                 limits.max_ondisconnect_bytes_per_session)});
    }
    batch.AddOnDisconnect(s.id, std::move(op));
    PendingOnDisconnect& pending = ondisconnect_pending_[s.id];
    ++pending.count;
    pending.bytes += mine;
    auto call = std::make_shared<DeviceCall>(c);
    return store_.Submit(std::move(batch), scope_.Guard([this, call, session_id = s.id, mine](const store::BatchResult& r) {
      if (auto p = ondisconnect_pending_.find(session_id); p != ondisconnect_pending_.end()) {
        --p->second.count;
        p->second.bytes -= mine;
        if (p->second.count == 0) ondisconnect_pending_.erase(p);
      }
      if (!r.status.ok()) return replier_.ReplyStoreStatus(*call, r.status);
      replier_.Reply(*call, coap::code::kContent);
    }));
  }
  CommitThenReply(c, std::move(batch));
}

void DeviceApi::CommitThenReply(DeviceCall& c, store::WriteBatch batch) {
  auto call = std::make_shared<DeviceCall>(std::move(c));  // callers return right after
  store_.Submit(std::move(batch), scope_.Guard([this, call](const store::BatchResult& r) {
    if (!r.status.ok()) return replier_.ReplyStoreStatus(*call, r.status);
    replier_.Reply(*call, coap::code::kContent);
  }));
}

bool DeviceApi::DecodePayload(DeviceCall& c, Json* value) {
  const bool update = c.method == coap::code::kPatch;  // its null members remove
  auto v = c.json_in ? DecodeJson(c.payload, update) : DecodeCbor(c.payload, update);
  if (!v) {
    replier_.ReplyError(c, v.error());
    return false;
  }
  *value = std::move(v).Value();
  return true;
}

}  // namespace tether
