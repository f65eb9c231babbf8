#include "gateway/device_api.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "gateway/random_token.h"
#include "store/boot_clock.h"
#include "gateway/data_rules.h"
#include "gateway/log.h"

#include <set>

namespace tether {

namespace {

constexpr uint8_t kForbidden = coap::code::make(4, 3);
constexpr int64_t kLivenessTickMs = 250;
constexpr uint32_t kQueueFullMaxAge = 30;
constexpr uint32_t kStoreFullMaxAge = 60;
constexpr uint32_t kQueryRetryMaxAge = 5;
constexpr uint8_t kPreconditionFailed = coap::code::make(4, 12);

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

std::string CodeName(uint8_t code) { return fmt::format("{}.{:02d}", code >> 5, code & 31); }

const char* MethodName(uint8_t m) {
  switch (m) {
    case coap::code::kGet: return "GET";
    case coap::code::kPost: return "POST";
    case coap::code::kPut: return "PUT";
    case coap::code::kDelete: return "DELETE";
    case coap::code::kPatch: return "PATCH";
    default: return "OTHER";
  }
}

std::optional<coap::Address> ParseAddress(const std::string& s) {
  std::string host, port;
  if (!s.empty() && s.front() == '[') {
    size_t close = s.find(']');
    if (close == std::string::npos || close + 2 > s.size()) return std::nullopt;
    host = s.substr(1, close - 1);
    port = s.substr(close + 2);
  } else {
    size_t colon = s.rfind(':');
    if (colon == std::string::npos) return std::nullopt;
    host = s.substr(0, colon);
    port = s.substr(colon + 1);
  }
  sockaddr_storage ss{};
  if (inet_pton(AF_INET, host.c_str(), &reinterpret_cast<sockaddr_in*>(&ss)->sin_addr) == 1) {
    ss.ss_family = AF_INET;
    reinterpret_cast<sockaddr_in*>(&ss)->sin_port = htons(static_cast<uint16_t>(std::stoi(port)));
  } else if (inet_pton(AF_INET6, host.c_str(), &reinterpret_cast<sockaddr_in6*>(&ss)->sin6_addr) == 1) {
    ss.ss_family = AF_INET6;
    reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port = htons(static_cast<uint16_t>(std::stoi(port)));
  } else {
    return std::nullopt;
  }
  return coap::Address::from_sockaddr(reinterpret_cast<sockaddr*>(&ss));
}

store::SessionRecord ToRecord(const Session& s, int64_t timeout_ms) {
  store::SessionRecord r;
  r.session_id = s.id;
  r.app_id = s.app;
  r.device_id = s.device;
  r.short_token = s.short_token;
  r.long_token = s.long_token;
  r.bound_address = s.addr.to_string();
  r.created_ms = s.created_wall_ms;
  r.heartbeat_timeout_ms = timeout_ms;
  r.last_seen_ms = store::WallClockMs();
  return r;
}

std::string TreePath(const std::vector<std::string>& cloud) { return "/" + JoinPath(cloud); }

// The local-copy side of a device write. Timestamps resolve now; increments are resolved by the
// store inside the commit, against what the tree holds then (pipelined increments all count).
void AddTreeWrite(store::WriteBatch* batch, store::OpKind kind, const std::string& tree_path, Json local,
                  int64_t cloud_now_ms) {
  if (kind == store::OpKind::kRemove) return batch->TreeRemove(tree_path);
  std::vector<store::mutation::TreeIncrement> incs;
  if (HasServerValues(local)) {
    if (kind == store::OpKind::kUpdate && local.is_object()) {  // child paths in a canonical form
      Json canonical = Json::object();
      for (auto& [k, v] : local.items()) canonical[JoinPath(SplitPath(k))] = std::move(v);
      local = std::move(canonical);
    }
    for (auto& [rel, by] : ExtractIncrements(&local)) incs.push_back({rel, std::move(by)});
    ResolveServerValues(&local, cloud_now_ms, Json());  // what is left: timestamps
  }
  if (kind == store::OpKind::kUpdate) batch->TreeUpdate(tree_path, std::move(local), std::move(incs));
  else batch->TreeSet(tree_path, std::move(local), std::move(incs));
}

}  // namespace

// One request being answered. Copied out of coap::Request, which is valid only in on_request.
struct DeviceApi::Call {
  coap::ExchangeId id = 0;
  uint8_t method = 0;
  coap::Address peer;
  std::string app;
  std::string payload;
  std::optional<uint32_t> observe;
  bool json_in = false;   // Content-Format 50
  bool json_out = false;  // Accept 50 (or JSON request without Accept)
  bool native = false;    // sent Content-Format/Accept: answer with Content-Format too
  std::string cs;         // .cs= query
  std::string dis;        // .dis= query
  std::vector<std::string> params;      // other Uri-Query options (query vocabulary)
  std::shared_ptr<const Query> query;   // parsed from params on data GETs
};

DeviceApi::DeviceApi(uv_loop_t* loop, store::Store& store, std::shared_ptr<const RouteTable> routes)
    : loop_(loop),
      store_(store),
      sessions_(routes->config().device.session_timeout.count()),
      heartbeat_{routes->config().device.heartbeat_target.count(), 1000} {
  SetRoutes(std::move(routes));
  uv_timer_init(loop_, &liveness_);
  liveness_.data = this;
  uv_timer_start(&liveness_, OnLivenessTick, kLivenessTickMs, kLivenessTickMs);
}

DeviceApi::~DeviceApi() { Close(); }

void DeviceApi::Close() {
  *alive_ = false;
  if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(&liveness_))) {
    uv_timer_stop(&liveness_);
    uv_close(reinterpret_cast<uv_handle_t*>(&liveness_), nullptr);
  }
}

void DeviceApi::SetRoutes(std::shared_ptr<const RouteTable> routes) {
  std::map<std::string, std::unique_ptr<DeviceAuthenticator>> auth;
  for (const auto& app : routes->config().apps) auth[app.id] = std::make_unique<DeviceAuthenticator>(app);
  auth_ = std::move(auth);
  routes_ = std::move(routes);
}

int64_t DeviceApi::CloudNowMs() const {
  return cloud_boot_offset_ms_ ? store::BootTimeMs() + *cloud_boot_offset_ms_ : store::WallClockMs();
}

std::optional<int64_t> DeviceApi::cloud_offset_ms() const {
  if (!cloud_boot_offset_ms_) return std::nullopt;
  return *cloud_boot_offset_ms_ - (store::WallClockMs() - store::BootTimeMs());
}

void DeviceApi::RestoreSessions() {
  int64_t now = static_cast<int64_t>(uv_now(loop_));
  size_t n = 0;
  for (const auto& r : store_.sessions().ListAll()) {
    auto addr = ParseAddress(r.bound_address);
    Session s;
    s.id = r.session_id;
    s.app = r.app_id;
    s.device = r.device_id;
    s.short_token = r.short_token;
    s.long_token = r.long_token;
    if (addr) s.addr = *addr;
    s.created_wall_ms = r.created_ms;
    s.last_seen_ms = now;  // a full timeout to come back after the gateway restart
    sessions_.Add(std::move(s));
    ++n;
  }
  if (n) spdlog::info("restored {} device session(s); each has {} ms to be heard from", n, sessions_.timeout_ms());
}

// ---- request dispatch ----

void DeviceApi::on_request(const coap::Request& r) {
  Call c;
  c.id = r.id;
  c.method = r.method();
  c.peer = r.peer;
  c.payload.assign(reinterpret_cast<const char*>(r.payload.data()), r.payload.size());
  c.observe = r.observe();
  auto cf = r.content_format();
  auto accept = r.accept();
  c.json_in = cf && *cf == kContentFormatJson;
  c.json_out = accept ? *accept == kContentFormatJson : c.json_in;
  c.native = cf.has_value() || accept.has_value();
  for (std::string_view q : r.uri_queries()) {
    if (q.rfind(".cs=", 0) == 0) c.cs = q.substr(4);
    else if (q.rfind(".dis=", 0) == 0) c.dis = q.substr(5);
    else if (!q.empty() && q[0] != '.') c.params.emplace_back(q);
  }
  std::string_view host = r.uri_host();
  const AppConfig* app = routes_->FindApp(host.empty() ? std::nullopt : std::optional<std::string>(host));
  if (!app) return ReplyError(c, coap::code::kBadRequest, "unknown app");
  c.app = app->id;
  if (accept && *accept != kContentFormatJson && *accept != kContentFormatCbor) {
    return ReplyError(c, coap::code::make(4, 6), "accept 60 (cbor) or 50 (json)");
  }
  if (cf && *cf != kContentFormatJson && *cf != kContentFormatCbor) {
    return ReplyError(c, coap::code::make(4, 15), "content-format 60 (cbor) or 50 (json)");
  }
  if (c.payload.size() > routes_->config().device.max_payload) {
    return ReplyError(c, coap::code::kRequestEntityTooLarge,
                      fmt::format("payload over {} bytes", routes_->config().device.max_payload));
  }

  std::vector<std::string> path;
  for (std::string_view seg : r.uri_path()) {
    if (!seg.empty()) path.emplace_back(seg);  // the root is one empty segment
  }
  bool control = path.size() == 1 && !path[0].empty() && path[0][0] == '.';
  if (control && path[0] == ".cs") {
    if (c.method != coap::code::kPost) return ReplyError(c, coap::code::kMethodNotAllowed, "POST /.cs");
    return HandleOpen(c);
  }
  if (control && path[0] == ".rst") {
    if (c.method != coap::code::kPost) return ReplyError(c, coap::code::kMethodNotAllowed, "POST /.rst");
    return HandleRebind(c);
  }
  Session* s = c.cs.empty() ? nullptr : sessions_.ByShortToken(c.cs);
  if (s && s->app != c.app) s = nullptr;
  if (control && path[0] == ".ping") return HandlePing(c, s);
  if (!s) return ReplyError(c, coap::code::kUnauthorized, "unknown session");
  if (control && path[0] == ".off") return HandleOffline(c, s);
  if (!path.empty() && path[0] == ".info") return HandleInfo(c, path);
  if (std::string e = CheckPath(path); !e.empty()) return ReplyError(c, coap::code::kBadRequest, e);
  if (!c.dis.empty()) {
    if (c.dis != "add" && c.dis != "rm") return ReplyError(c, coap::code::kBadRequest, ".dis must be add or rm");
    if (c.dis == "rm" && c.method != coap::code::kDelete) {
      return ReplyError(c, coap::code::kMethodNotAllowed, ".dis=rm needs DELETE");
    }
    return HandleOnDisconnect(c, *s, path, c.dis == "rm");
  }
  if (c.method == coap::code::kGet && !c.params.empty()) {  // writes ignore them, as before
    Query q;
    std::vector<std::string_view> views(c.params.begin(), c.params.end());
    if (std::string e = ParseQuery(views, &q); !e.empty()) return ReplyError(c, coap::code::kBadRequest, e);
    if (!q.empty()) c.query = std::make_shared<const Query>(std::move(q));
  }
  switch (c.method) {
    case coap::code::kGet: return HandleRead(c, *s, path);
    case coap::code::kPut:
    case coap::code::kPost:
    case coap::code::kDelete:
    case coap::code::kPatch: return HandleWrite(c, *s, path);
    default: return ReplyError(c, coap::code::kMethodNotAllowed, "use GET, PUT, POST, PATCH or DELETE");
  }
}

void DeviceApi::on_activity(const coap::Address& peer) { sessions_.Touch(peer, static_cast<int64_t>(uv_now(loop_))); }

void DeviceApi::on_observer_dropped(coap::ObserverId id, coap::DropReason) { observers_.Remove(id); }

// ---- sessions ----

void DeviceApi::HandleOpen(Call& c) {
  if (c.payload.size() > 512) return ReplyError(c, coap::code::kBadRequest, "auth token longer than 512 bytes");
  AuthOutcome auth = auth_.at(c.app)->Authenticate(c.payload);
  if (!auth.ok) {
    ++counters_.auth_failures;
    spdlog::info("device at {} failed to authenticate to app '{}'", c.peer.to_string(), c.app);
    return ReplyError(c, coap::code::kUnauthorized, "invalid auth token");
  }
  // A device re-opening from the same address replaces its old session: the old connection is
  // gone, so its onDisconnect operations run now (as the cloud would on reconnect).
  std::vector<std::string> replaced;
  sessions_.ForEach([&](const Session& s) {
    if (s.addr == c.peer && s.app == c.app) replaced.push_back(s.id);
  });
  for (const auto& id : replaced) EndSession(id, EndCause::kReplaced);

  Session s;
  s.id = RandomToken(16);
  do s.short_token = RandomToken(8); while (sessions_.ShortTokenInUse(s.short_token));
  s.long_token = RandomToken(32);
  s.app = c.app;
  s.device = auth.device.empty() ? "anon-" + s.short_token : auth.device;
  s.addr = c.peer;
  s.created_wall_ms = store::WallClockMs();
  store::WriteBatch batch;
  batch.PutSession(ToRecord(s, sessions_.timeout_ms()));
  auto alive = alive_;
  auto call = std::make_shared<Call>(c);
  store_.Submit(std::move(batch), [this, alive, call, s = std::move(s)](store::BatchResult res) mutable {
    if (!*alive) return;
    if (!res.status.ok()) return ReplyStoreStatus(*call, res.status);
    s.last_seen_ms = static_cast<int64_t>(uv_now(loop_));
    Json body = {{"s", s.short_token}, {"l", s.long_token}};
    spdlog::debug("session opened: app '{}' device '{}' at {}", s.app, s.device, s.addr.to_string());
    sessions_.Add(std::move(s));
    ++counters_.sessions_opened;
    Reply(*call, coap::code::kContent, Encode(body, call->json_out));
  });
}

void DeviceApi::HandlePing(Call& c, Session* s) {
  if (!s || !(s->addr == c.peer)) return ReplyError(c, coap::code::kUnauthorized, "unknown session");
  ++counters_.heartbeats;
  int64_t now = static_cast<int64_t>(uv_now(loop_));
  bool steer = heartbeat_.ShouldSteerDown(s->last_ping_ms, now);
  s->last_ping_ms = now;
  if (steer) {
    ++counters_.steered_pings;
    return ReplyError(c, coap::code::kUnauthorized, "ping later than the heartbeat target");
  }
  Reply(c, coap::code::kContent);
}

void DeviceApi::HandleRebind(Call& c) {
  Session* s = sessions_.ByLongToken(c.payload);
  if (!s || s->app != c.app) return ReplyError(c, coap::code::kBadRequest, "unknown long token");
  sessions_.Rebind(*s, c.peer);
  s->last_seen_ms = static_cast<int64_t>(uv_now(loop_));
  store::WriteBatch batch;
  batch.PutSession(ToRecord(*s, sessions_.timeout_ms()));
  CommitThenReply(c, std::move(batch));
}

void DeviceApi::HandleOffline(Call& c, Session* s) {
  ++counters_.go_offline;
  auto alive = alive_;
  auto call = std::make_shared<Call>(c);
  EndSession(s->id, EndCause::kGoOffline, [this, alive, call] {
    if (*alive) Reply(*call, coap::code::kContent);
  });
}

bool DeviceApi::Kick(const std::string& device_or_session) {
  std::vector<std::string> ids;
  sessions_.ForEach([&](const Session& s) {
    if (s.id == device_or_session || s.device == device_or_session) ids.push_back(s.id);
  });
  for (const auto& id : ids) EndSession(id, EndCause::kKicked);
  return !ids.empty();
}

void DeviceApi::OnLivenessTick(uv_timer_t* t) {
  auto* self = static_cast<DeviceApi*>(t->data);
  for (const auto& id : self->sessions_.Expired(static_cast<int64_t>(uv_now(self->loop_)))) {
    ++self->counters_.detections;
    self->EndSession(id, EndCause::kTimeout);
  }
}

void DeviceApi::EndSession(std::string session_id, EndCause cause, std::function<void()> done) {
  Session* sp = sessions_.ById(session_id);
  if (!sp) {
    if (done) done();
    return;
  }
  Session s = *sp;
  sessions_.Remove(session_id);
  for (coap::ObserverId id : observers_.OfSession(session_id)) {
    if (endpoint_) endpoint_->cancel_observer(id);
    observers_.Remove(id);
  }
  static const char* kCause[] = {"silent past the session timeout", "went offline", "re-opened its session",
                                 "was kicked"};
  spdlog::info("device '{}' (app '{}', {}) {}: running its onDisconnect operations", s.device, s.app,
               s.addr.to_string(), kCause[static_cast<int>(cause)]);

  FireOnDisconnect(std::move(s), std::move(done), 0);
}

void DeviceApi::FireOnDisconnect(Session s, std::function<void()> done, int attempt) {
  // The moment the gateway declared the device gone is the event time of everything fired now.
  const int64_t wall = store::WallClockMs();
  const int64_t cloud_now = CloudNowMs();
  store::WriteBatch batch;
  size_t fired = 0, denied = 0;
  uint64_t ops_through = 0;
  std::set<std::string> routes;
  std::vector<store::OnDisconnectOp> ops = store_.sessions().OnDisconnectOps(s.id);
  for (const auto& op : ops) ops_through = std::max(ops_through, op.order);
  // Removing the session in the same batch makes a second firing find nothing: exactly once.
  batch.RemoveSession(s.id, /*must_exist=*/true, ops_through);
  for (const store::OnDisconnectOp& op : ops) {
    std::vector<std::string> dev_path = SplitPath(op.path);
    auto res = routes_->Resolve(s.app, s.device, dev_path);
    if (!res || !res->may_write || !res->route->on_disconnect) {
      ++denied;
      spdlog::warn("onDisconnect of device '{}' at /{} denied by the current routes", s.device, op.path);
      continue;
    }
    Json value = op.payload.empty() ? Json() : Json::from_cbor(op.payload, true, false);
    if (value.is_discarded()) continue;
    std::vector<std::string> cloud = res->cloud_path;
    store::OpKind kind = store::OpKind::kSet;
    switch (op.kind) {
      case store::OnDisconnectOp::Kind::kSet: kind = value.is_null() ? store::OpKind::kRemove : store::OpKind::kSet; break;
      case store::OnDisconnectOp::Kind::kPush:
        kind = store::OpKind::kSet;
        cloud.push_back(push_ids_.Next(cloud_now));
        break;
      case store::OnDisconnectOp::Kind::kUpdate: kind = store::OpKind::kUpdate; break;
      case store::OnDisconnectOp::Kind::kRemove: kind = store::OpKind::kRemove; break;
    }
    AddTreeWrite(&batch, kind, TreePath(cloud), value, cloud_now);  // local: byte strings stay bytes
    routes.insert(res->route->name);
    batch.Append(QueueEntryFor(res->route->name, s.device, kind, TreePath(cloud), value, wall));
    ++fired;
  }
  auto alive = alive_;
  store_.Submit(std::move(batch), [this, alive, fired, denied, attempt, s = std::move(s), routes = std::move(routes),
                                   done = std::move(done)](const store::BatchResult& res) mutable {
    if (!*alive) return;
    if (res.status.code == store::StatusCode::kConflict && attempt < 5) {
      return FireOnDisconnect(std::move(s), std::move(done), attempt + 1);
    }
    if (res.status.ok()) {
      ++counters_.sessions_ended;
      counters_.ondisconnect_fired += fired;
      counters_.ondisconnect_denied += denied;
      NotifyPaths(res.changed_paths);
      if (on_queued_) {
        for (const auto& r : routes) on_queued_(r);
      }
    } else if (res.status.code != store::StatusCode::kNotFound) {
      spdlog::error("onDisconnect of device '{}' not recorded: {} (the session stays in the store and "
                    "fires after the next restart)", s.device, res.status.ToString());
    }
    if (done) done();
  });
}

// ---- data ----

void DeviceApi::HandleInfo(Call& c, const std::vector<std::string>& path) {
  if (c.method != coap::code::kGet) return ReplyError(c, coap::code::kMethodNotAllowed, ".info is read-only");
  if (path.size() != 2 || (path[1] != "connected" && path[1] != "serverTimeOffset" && path[1] != "serverTime")) {
    return ReplyError(c, coap::code::kNotFound, "no such .info entry");
  }
  Session* s = sessions_.ByShortToken(c.cs);
  std::string dev_path = JoinPath(path);
  std::string body = Encode(InfoValue(path[1]), c.json_out);
  if (c.observe == 1u) return Unobserve(c, *s, dev_path);
  if (c.observe == 0u) {
    std::span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(body.data()), body.size());
    coap::Response resp{coap::code::kContent, bytes, std::nullopt, std::nullopt};
    if (c.native) resp.content_format = c.json_out ? kContentFormatJson : kContentFormatCbor;
    coap::ObserverId id = endpoint_->respond_observe(c.id, resp);
    if (id) observers_.Add({id, s->id, dev_path, dev_path, c.json_out, c.native, SnapshotDigest(body), nullptr, {}});
    ++counters_.requests[fmt::format("GET {}", CodeName(coap::code::kContent))];
    return;
  }
  Reply(c, coap::code::kContent, body);
}

Json DeviceApi::InfoValue(const std::string& leaf) const {
  if (leaf == "connected") return cloud_connected_;
  if (leaf == "serverTimeOffset") return cloud_offset_ms().value_or(0);
  return CloudNowMs();
}

void DeviceApi::SetCloudLink(bool connected, std::optional<int64_t> offset_ms) {
  std::optional<int64_t> boot_offset;
  if (offset_ms) boot_offset = *offset_ms + (store::WallClockMs() - store::BootTimeMs());
  // The same estimate read again differs by the rounding of the two clocks: not a change.
  if (boot_offset && cloud_boot_offset_ms_ && std::llabs(*boot_offset - *cloud_boot_offset_ms_) <= 2) {
    boot_offset = cloud_boot_offset_ms_;
  }
  bool changed = connected != cloud_connected_ || boot_offset != cloud_boot_offset_ms_;
  bool came_back = connected && !cloud_connected_;
  cloud_connected_ = connected;
  cloud_boot_offset_ms_ = boot_offset;
  if (changed) NotifyInfo();
  if (came_back) RefreshObservedQueries();
}

void DeviceApi::NotifyInfo() {
  for (const auto& [path, ids] : observers_.Affected(".info")) {
    std::string leaf = path.substr(path.find('/') + 1);
    if (leaf == "serverTime") continue;  // changes every millisecond: read, don't observe
    Json v = InfoValue(leaf);
    for (coap::ObserverId id : ids) {
      Observer* o = observers_.Find(id);
      if (!o) continue;
      std::string body = Encode(v, o->json);
      uint64_t digest = SnapshotDigest(body);
      if (digest == o->last_digest) continue;
      o->last_digest = digest;
      std::span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(body.data()), body.size());
      coap::Response resp{coap::code::kContent, bytes, std::nullopt, std::nullopt};
      if (o->native) resp.content_format = o->json ? kContentFormatJson : kContentFormatCbor;
      if (!endpoint_->notify(id, resp)) observers_.Remove(id);
      ++counters_.notifications;
    }
  }
}

void DeviceApi::HandleRead(Call& c, Session& s, const std::vector<std::string>& path) {
  auto res = routes_->Resolve(s.app, s.device, path);
  std::string dev_path = JoinPath(path);
  // An observed query is named by path and query: the same path may be observed with others.
  if (c.query) dev_path += "?" + c.query->Canonical();
  if (c.observe == 1u) return Unobserve(c, s, dev_path);  // the SDK deregisters with a new token
  if (!res || !res->may_read) return ReplyError(c, kForbidden, "read not allowed at /" + JoinPath(path));
  std::string cloud = JoinPath(res->cloud_path);
  if (c.query) return HandleQuery(c, s, cloud, dev_path, res->route->name, c.query);
  Json value = store_.tree().Get("/" + cloud);
  std::string body = Encode(value, c.json_out);
  if (c.observe == 0u) {
    std::span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(body.data()), body.size());
    coap::Response resp{coap::code::kContent, bytes, std::nullopt, std::nullopt};
    if (c.native) resp.content_format = c.json_out ? kContentFormatJson : kContentFormatCbor;
    coap::ObserverId id = endpoint_->respond_observe(c.id, resp);
    // Digest of the CBOR form: notifications compare against the same encoding.
    if (id) observers_.Add({id, s.id, cloud, dev_path, c.json_out, c.native, SnapshotDigest(EncodeCbor(value)), nullptr,
                            res->route->name});
    ++counters_.requests[fmt::format("GET {}", CodeName(coap::code::kContent))];
    return;
  }
  if (ReadsFromCloud(cloud, res->route->name)) {
    auto alive = alive_;
    auto call = std::make_shared<Call>(c);
    return cloud_reader_(cloud, std::string(), [this, alive, call, cloud, body](std::optional<Json> fresh) {
      if (!*alive) return;
      if (!fresh) return Reply(*call, coap::code::kContent, body);  // cloud silent: the local copy
      Reply(*call, coap::code::kContent, Encode(*fresh, call->json_out));
      store::WriteBatch b;  // remember it for offline reads (the cache bound evicts it eventually)
      b.TreeSet("/" + cloud, *fresh);
      b.TreeMarkComplete("/" + cloud, "");  // queries at or below can be answered from it
      store_.Submit(std::move(b), [this, alive](const store::BatchResult& r) {
        if (*alive && r.status.ok()) NotifyPaths(r.changed_paths);
      });
    });
  }
  Reply(c, coap::code::kContent, body);
}

bool DeviceApi::InSyncRoot(const std::string& cloud_path) const {
  for (const auto& root : sync_roots_) {
    if (cloud_path == root || cloud_path.compare(0, root.size() + 1, root + "/") == 0 || root.empty()) return true;
  }
  return false;
}

bool DeviceApi::ReadsFromCloud(const std::string& cloud_path, const std::string& route) const {
  if (!cloud_reader_ || !cloud_connected_ || InSyncRoot(cloud_path)) return false;
  // Writes still queued for this route are newer than the cloud's copy: read locally.
  auto stats = store_.queue().Stats(route);
  return !stats || stats->depth == 0;
}

void DeviceApi::HandleQuery(Call& c, Session& s, const std::string& cloud, const std::string& dev_path,
                            const std::string& route, std::shared_ptr<const Query> q) {
  const std::string tree_path = "/" + cloud;
  bool held = !cloud_reader_ || InSyncRoot(cloud) || store_.tree().HoldsComplete(tree_path, q->Canonical());
  if (held) {
    AnswerQuery(c, s, cloud, dev_path, route, q, ApplyQuery(store_.tree().Get(tree_path), *q));
    // A remembered cloud result answers at once; the cloud refreshes it (observers hear changes).
    if (ReadsFromCloud(cloud, route)) FetchQuery(cloud, route, q, [](std::optional<Json>) {});
    return;
  }
  if (!cloud_reader_ || !cloud_connected_) {
    return ReplyError(c, coap::code::kServiceUnavailable, "query result not held offline", kQueryRetryMaxAge);
  }
  auto alive = alive_;
  auto call = std::make_shared<Call>(c);
  std::string session_id = s.id;
  FetchQuery(cloud, route, q, [this, alive, call, session_id, cloud, dev_path, route, q](std::optional<Json> fresh) {
    if (!*alive) return;
    Session* s = sessions_.ById(session_id);
    if (!fresh) {
      return ReplyError(*call, coap::code::kServiceUnavailable, "cloud did not answer the query", kQueryRetryMaxAge);
    }
    if (!s) return ReplyError(*call, coap::code::kUnauthorized, "unknown session");
    AnswerQuery(*call, *s, cloud, dev_path, route, q, ApplyQuery(*fresh, *q));
  });
}

void DeviceApi::AnswerQuery(Call& c, Session& s, const std::string& cloud, const std::string& dev_path,
                            const std::string& route, std::shared_ptr<const Query> q, const Json& result) {
  if (c.observe != 0u) return Reply(c, coap::code::kContent, Encode(result, c.json_out));
  std::string body = Encode(result, c.json_out);
  std::span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(body.data()), body.size());
  coap::Response resp{coap::code::kContent, bytes, std::nullopt, std::nullopt};
  if (c.native) resp.content_format = c.json_out ? kContentFormatJson : kContentFormatCbor;
  coap::ObserverId id = endpoint_ ? endpoint_->respond_observe(c.id, resp) : 0;
  if (id) {
    observers_.Add({id, s.id, cloud, dev_path, c.json_out, c.native, SnapshotDigest(EncodeCbor(result)), std::move(q),
                    route});
  }
  ++counters_.requests[fmt::format("GET {}", CodeName(coap::code::kContent))];
}

void DeviceApi::FetchQuery(const std::string& cloud, const std::string& route, std::shared_ptr<const Query> q,
                           std::function<void(std::optional<Json>)> done) {
  auto alive = alive_;
  cloud_reader_(cloud, q->RestParams(), [this, alive, cloud, route, q, done = std::move(done)](std::optional<Json> fresh) {
    if (!*alive) return;
    if (fresh && ReadsFromCloud(cloud, route)) {
      // Merge, not replace: children outside the result stay (other queries may hold them).
      store::WriteBatch b;
      Json result = ApplyQuery(*fresh, *q);
      if (result.is_object()) b.TreeUpdate("/" + cloud, result);
      else if (!result.is_null()) b.TreeSet("/" + cloud, result);
      b.TreeMarkComplete("/" + cloud, q->Canonical());
      store_.Submit(std::move(b), [this, alive](const store::BatchResult& r) {
        if (*alive && r.status.ok()) NotifyPaths(r.changed_paths);
      });
    }
    done(std::move(fresh));
  });
}

void DeviceApi::RefreshObservedQueries() {
  if (!cloud_reader_) return;
  std::set<std::pair<std::string, std::string>> asked;  // (path, query): one read each
  for (const auto& [path, ids] : observers_.All()) {
    for (coap::ObserverId id : ids) {
      Observer* o = observers_.Find(id);
      if (!o || !o->query || !ReadsFromCloud(o->path, o->route)) continue;
      if (!asked.insert({o->path, o->query->Canonical()}).second) continue;
      FetchQuery(o->path, o->route, o->query, [](std::optional<Json>) {});
    }
  }
}

void DeviceApi::HandleWrite(Call& c, Session& s, const std::vector<std::string>& path) {
  std::string dev_path = JoinPath(path);
  auto res = routes_->Resolve(s.app, s.device, path);
  if (!res || !res->may_write) return ReplyError(c, kForbidden, "write not allowed at /" + dev_path);
  Json value;
  if (c.method != coap::code::kDelete && !DecodePayload(c, &value)) return;
  std::optional<Json> expect;  // compare-and-set: PUT {".cas":{"expect":old,"value":new}}
  if (c.method == coap::code::kPut && value.is_object() && value.size() == 1 && value.contains(".cas")) {
    Json w = value[".cas"];
    // Null members vanish in decoding: a missing expect / value is null (absent / remove).
    size_t known = w.is_object() ? w.count("expect") + w.count("value") : 0;
    if (!w.is_object() || known != w.size()) {
      return ReplyError(c, coap::code::kBadRequest, "compare-and-set is {\".cas\":{\"expect\":old,\"value\":new}}");
    }
    expect = Normalized(w.value("expect", Json()));
    value = w.value("value", Json());
    if (HasServerValues(value) || HasServerValues(*expect)) {
      return ReplyError(c, coap::code::kBadRequest, "no server values in a compare-and-set");
    }
    if (std::string e = CheckValue(*expect, res->cloud_path.size()); !e.empty()) {
      return ReplyError(c, coap::code::kBadRequest, "expect: " + e);
    }
  }
  std::vector<std::string> cloud = res->cloud_path;
  std::string push_key;
  store::OpKind kind = store::OpKind::kSet;
  if (c.method == coap::code::kPatch) {
    kind = store::OpKind::kUpdate;
    if (std::string e = CheckUpdate(value, cloud.size()); !e.empty()) return ReplyError(c, coap::code::kBadRequest, e);
  } else if (c.method == coap::code::kDelete || value.is_null()) {
    kind = store::OpKind::kRemove;
    value = Json();
  } else {
    if (c.method == coap::code::kPost) {
      push_key = push_ids_.Next(CloudNowMs());
      cloud.push_back(push_key);
    }
    if (std::string e = CheckValue(value, cloud.size()); !e.empty()) return ReplyError(c, coap::code::kBadRequest, e);
  }
  if (cloud.size() > kMaxDepth) return ReplyError(c, coap::code::kBadRequest, "path deeper than 32 levels");

  const std::string tree_path = TreePath(cloud);
  Json local = value;  // byte strings stay bytes locally; the cloud gets base64 (EncodeJson)
  store::WriteBatch batch;
  if (expect) {
    batch.TreeSetIf(tree_path, *expect, local);
    store::QueueEntry e = QueueEntryFor(res->route->name, s.device, store::OpKind::kConditionalSet, tree_path,
                                        value, store::WallClockMs());
    e.payload = EncodeJson(Json{{"expect", *expect}, {"value", value}});
    batch.Append(std::move(e));
  } else {
    AddTreeWrite(&batch, kind, tree_path, std::move(local), CloudNowMs());
    batch.Append(QueueEntryFor(res->route->name, s.device, kind, tree_path, value, store::WallClockMs()));
  }
  ++counters_.writes;
  auto alive = alive_;
  auto call = std::make_shared<Call>(c);
  store_.Submit(std::move(batch), [this, alive, call, push_key, tree_path, route = res->route->name](store::BatchResult r) {
    if (!*alive) return;
    if (r.status.code == store::StatusCode::kConflict) {  // compare-and-set lost: here is the value
      ++counters_.cas_refused;
      return Reply(*call, kPreconditionFailed, Encode(store_.tree().Get(tree_path), call->json_out));
    }
    if (!r.status.ok()) {
      ++counters_.writes_rejected;
      return ReplyStoreStatus(*call, r.status);
    }
    Reply(*call, coap::code::kContent, push_key);  // push answers the new key as raw bytes
    NotifyPaths(r.changed_paths);
    if (on_queued_) on_queued_(route);
  });
}

void DeviceApi::HandleOnDisconnect(Call& c, Session& s, const std::vector<std::string>& path, bool cancel) {
  std::string dev_path = JoinPath(path);
  store::WriteBatch batch;
  if (cancel) {
    batch.CancelOnDisconnect(s.id, dev_path);
  } else {
    auto res = routes_->Resolve(s.app, s.device, path);
    if (!res || !res->may_write) return ReplyError(c, kForbidden, "write not allowed at /" + dev_path);
    if (!res->route->on_disconnect) return ReplyError(c, kForbidden, "onDisconnect not allowed at /" + dev_path);
    store::OnDisconnectOp op;
    op.path = dev_path;
    Json value;
    if (c.method != coap::code::kDelete && !DecodePayload(c, &value)) return;
    switch (c.method) {
      case coap::code::kPut: op.kind = store::OnDisconnectOp::Kind::kSet; break;
      case coap::code::kPost: op.kind = store::OnDisconnectOp::Kind::kPush; break;
      case coap::code::kPatch: op.kind = store::OnDisconnectOp::Kind::kUpdate; break;
      case coap::code::kDelete: op.kind = store::OnDisconnectOp::Kind::kRemove; break;
      default: return ReplyError(c, coap::code::kMethodNotAllowed, "onDisconnect takes PUT, POST, PATCH or DELETE");
    }
    size_t depth = res->cloud_path.size() + (op.kind == store::OnDisconnectOp::Kind::kPush ? 1 : 0);
    std::string e = op.kind == store::OnDisconnectOp::Kind::kUpdate ? CheckUpdate(value, depth) : CheckValue(value, depth);
    if (!e.empty()) return ReplyError(c, coap::code::kBadRequest, e);
    if (!value.is_null()) {
      std::vector<uint8_t> cbor = Json::to_cbor(value);  // keeps byte strings intact until firing
      op.payload.assign(cbor.begin(), cbor.end());
    }
    batch.AddOnDisconnect(s.id, std::move(op));
  }
  CommitThenReply(c, std::move(batch));
}

void DeviceApi::CommitThenReply(Call& c, store::WriteBatch batch) {
  auto alive = alive_;
  auto call = std::make_shared<Call>(c);
  store_.Submit(std::move(batch), [this, alive, call](const store::BatchResult& r) {
    if (!*alive) return;
    if (!r.status.ok()) return ReplyStoreStatus(*call, r.status);
    Reply(*call, coap::code::kContent);
  });
}

bool DeviceApi::DecodePayload(Call& c, Json* value) {
  std::string err;
  auto v = c.json_in ? DecodeJson(c.payload, &err) : DecodeCbor(c.payload, &err);
  if (!v) {
    ReplyError(c, coap::code::kBadRequest, err);
    return false;
  }
  *value = std::move(*v);
  return true;
}

store::QueueEntry DeviceApi::QueueEntryFor(const std::string& route, const std::string& device, store::OpKind kind,
                                           const std::string& tree_path, const Json& value, int64_t wall_ms) const {
  store::QueueEntry e;
  e.route = route;
  e.device_id = device;
  e.kind = kind;
  e.path = tree_path;
  e.payload = kind == store::OpKind::kRemove ? "null" : EncodeJson(value);  // .sv kept: resolved at upload
  e.wall_ms = wall_ms;
  e.boottime_ms = store::BootTimeMs();
  e.boot_id = store::BootId();
  e.cloud_offset_ms = cloud_offset_ms();
  return e;
}

void DeviceApi::Unobserve(Call& c, const Session& s, const std::string& device_path) {
  if (Observer* o = observers_.FindBySessionPath(s.id, device_path)) {
    endpoint_->cancel_observer(o->id);
    observers_.Remove(o->id);
  }
  Reply(c, coap::code::kContent);
}

// ---- notifications ----

void DeviceApi::OnTreeChanged(const std::vector<std::string>& changed_paths) { NotifyPaths(changed_paths); }

void DeviceApi::NotifyPaths(const std::vector<std::string>& changed_paths) {
  if (!endpoint_ || observers_.size() == 0) return;
  std::map<std::string, std::vector<coap::ObserverId>> affected;
  for (const auto& p : changed_paths) {
    std::string path = JoinPath(SplitPath(p));
    for (auto& [obs_path, ids] : observers_.Affected(path)) affected[obs_path] = ids;
  }
  for (const auto& [path, ids] : affected) {
    if (path.rfind(".info", 0) == 0) continue;
    // One read per observed path and one encoding per distinct query, however many observers
    // share them. A query observer hears only changes of its query's result.
    Json value = store_.tree().Get("/" + path);
    struct View {
      Json value;
      std::string cbor, json;
      uint64_t digest = 0;
    };
    std::map<std::string, View> views;  // by Query::Canonical ("" = the whole snapshot)
    for (coap::ObserverId id : ids) {
      Observer* o = observers_.Find(id);
      if (!o) continue;
      std::string key = o->query ? o->query->Canonical() : std::string();
      auto [it, fresh] = views.try_emplace(key);
      View& v = it->second;
      if (fresh) {
        v.value = o->query ? ApplyQuery(value, *o->query) : value;
        v.cbor = EncodeCbor(v.value);
        v.digest = SnapshotDigest(v.cbor);
      }
      if (o->last_digest == v.digest) continue;  // unchanged snapshot: nothing to send
      o->last_digest = v.digest;
      if (o->json && v.json.empty()) v.json = EncodeJson(v.value);
      const std::string& body = o->json ? v.json : v.cbor;
      std::span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(body.data()), body.size());
      coap::Response resp{coap::code::kContent, bytes, std::nullopt, std::nullopt};
      if (o->native) resp.content_format = o->json ? kContentFormatJson : kContentFormatCbor;
      ++counters_.notifications;
      if (!endpoint_->notify(id, resp)) observers_.Remove(id);
    }
  }
}

// ---- replies ----

std::string DeviceApi::Encode(const Json& v, bool json) const { return json ? EncodeJson(v) : EncodeCbor(v); }

void DeviceApi::Reply(Call& c, uint8_t code, std::string payload, std::optional<uint32_t> max_age) {
  ++counters_.requests[fmt::format("{} {}", MethodName(c.method), CodeName(code))];
  if (!endpoint_) return;
  std::span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(payload.data()), payload.size());
  coap::Response resp{code, bytes, std::nullopt, max_age};
  endpoint_->respond(c.id, resp);
}

void DeviceApi::ReplyError(Call& c, uint8_t code, const std::string& diagnostic, std::optional<uint32_t> max_age) {
  spdlog::debug("{} from {}: {} {}", MethodName(c.method), c.peer.to_string(), CodeName(code), diagnostic);
  Reply(c, code, diagnostic, max_age);  // RFC 7252 §5.5.2: diagnostic payload
}

void DeviceApi::ReplyStoreStatus(Call& c, const store::Status& st) {
  switch (st.code) {
    case store::StatusCode::kRejected:
      return ReplyError(c, coap::code::kServiceUnavailable, "queue full, retry later", kQueueFullMaxAge);
    case store::StatusCode::kFull:
      return ReplyError(c, coap::code::kServiceUnavailable, "storage full, retry later", kStoreFullMaxAge);
    case store::StatusCode::kInvalidArgument:
      return ReplyError(c, coap::code::kBadRequest, st.message.substr(0, 120));
    case store::StatusCode::kClosed:
      return ReplyError(c, coap::code::kServiceUnavailable, "gateway stopping", 5);
    default:
      spdlog::error("store error: {}", st.ToString());
      return ReplyError(c, coap::code::kInternalServerError, "storage error");
  }
}

}  // namespace tether
