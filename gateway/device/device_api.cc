#include "gateway/device/device_api.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "gateway/config/random_token.h"
#include "store/boot_clock.h"
#include "store/entry_age.h"
#include "gateway/model/data_rules.h"

#include <set>

namespace tether {

namespace {

constexpr uint8_t kForbidden = coap::code::make(4, 3);
constexpr int64_t kLivenessTickMs = 250;
// A gap over this between two observations of the loop clock (the tick makes one every 250 ms)
// is a stall of the loop: its length is given back to every session's timeout.
constexpr int64_t kStallThresholdMs = 1'000;
constexpr int kOpenRetries = 5;
// After a stall: how long the datagrams read are taken as ones that waited in the socket.
constexpr int64_t kStallDrainMs = 1'000;
constexpr uint32_t kQueueFullMaxAge = 30;
constexpr uint32_t kStoreFullMaxAge = 60;
constexpr uint32_t kQueryRetryMaxAge = 5;
constexpr uint32_t kOverloadMaxAge = 1;  // s: a retry one second later finds the backlog gone
// Shedding ends when no write was shed for this long: devices told to retry after Max-Age retry
// within it, so a shorter pause is the same overload.
constexpr uint64_t kShedPauseMs = 2 * kOverloadMaxAge * 1000;
// A remembered (non-sync-root) result answered from the local copy is re-read from the cloud in
// the background at most this often per path and query.
constexpr uint64_t kRefreshIntervalMs = 30'000;
constexpr uint8_t kPreconditionFailed = coap::code::make(4, 12);
// Failed authentications are logged one per second at most; the others are counted.
constexpr int64_t kAuthLogEveryMs = 1'000;
// Opens of one device are handled one at a time; beyond this many waiting, more are not answered
// (a flood of one device's token from spoofed sources queues nothing).
constexpr size_t kMaxWaitingOpens = 1;

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
  coap::Address a = coap::Address::parse(s);
  if (a.family == 0) return std::nullopt;
  return a;
}

// The liveness checkpoint of s (loop clock) as of `now` (loop clock) = `clock` (the three clocks).
void SetCheckpoint(store::SessionRecord* r, const Session& s, int64_t now, const store::ClockReading& clock) {
  r->last_seen_ms = clock.wall_ms - (now - s.last_seen_ms);
  r->last_seen_boottime_ms = clock.boottime_ms - (now - s.last_seen_ms);
  r->boot_id = clock.boot_id;
  r->last_ping_ms = s.last_ping_ms ? clock.wall_ms - (now - s.last_ping_ms) : 0;
}

// The record without observations (SessionRecordOf adds them).
store::SessionRecord ToRecord(const Session& s, int64_t timeout_ms, int64_t now) {
  store::SessionRecord r;
  r.session_id = s.id;
  r.app_id = s.app;
  r.device_id = s.device;
  r.short_token = s.short_token;
  r.long_token = s.long_token;
  r.bound_address = s.addr.to_string();
  r.created_ms = s.created_wall_ms;
  r.heartbeat_timeout_ms = timeout_ms;
  SetCheckpoint(&r, s, now, store::ClockNow());
  return r;
}

// Anonymous devices get generated ids with this prefix (open apps never take it from a token).
bool AnonymousId(const std::string& device) { return device.rfind("anon-", 0) == 0; }

// POST /.cs of one device are handled one at a time: a device with a stable id by its id,
// an anonymous one by its address.
std::string OpenKey(const std::string& app, const std::string& device, bool anonymous, const coap::Address& from) {
  return app + '\0' + (anonymous ? "@" + from.to_string() : device + (from.secure ? "\0dtls" : ""));
}

std::string TreePath(const std::vector<std::string>& cloud) { return "/" + JoinPath(cloud); }

// A session lives on the transport it was opened on: a DTLS session serves only requests over
// DTLS from its PSK identity, a plaintext session only plaintext requests.
bool OnSessionTransport(const Session& s, const coap::Address& peer, std::string_view identity) {
  return s.addr.secure == peer.secure && (!peer.secure || s.device == identity);
}

// The local-copy side of a device write. Timestamps resolve now; increments are resolved by the
// store inside the commit, against what the tree holds then (pipelined increments all count). With
// refuse_non_finite an increment whose sum is not a finite number fails the commit (4.00).
void AddTreeWrite(store::WriteBatch* batch, store::OpKind kind, const std::string& tree_path, Json local,
                  int64_t cloud_now_ms, bool refuse_non_finite = false) {
  if (kind == store::OpKind::kRemove) return batch->TreeRemove(tree_path);
  std::vector<store::mutation::TreeIncrement> incs;
  if (HasServerValues(local)) {
    if (kind == store::OpKind::kUpdate && local.is_object()) {  // child paths in a canonical form
      Json canonical = Json::object();
      for (auto& [k, v] : local.items()) canonical[JoinPath(SplitPath(k))] = std::move(v);
      local = std::move(canonical);
    }
    for (auto& [rel, by] : ExtractIncrements(&local)) incs.push_back({rel, std::move(by), refuse_non_finite});
    ResolveTimestamps(&local, cloud_now_ms);
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
  std::string identity;   // DTLS PSK identity (peer.secure)
  std::string app;
  std::string payload;
  std::optional<uint32_t> observe;
  bool json_in = false;   // Content-Format 50
  bool json_out = false;  // Accept 50 (or JSON request without Accept)
  bool native = false;    // sent Content-Format/Accept: answer with Content-Format too
  bool text_reply = false;  // the 2.05 payload is text (a push key), not data
  std::string cs;         // .cs= query
  std::string dis;        // .dis= query
  std::vector<std::string> params;      // other Uri-Query options (query vocabulary)
  std::shared_ptr<const Query> query;   // parsed from params on data GETs
};

DeviceApi::DeviceApi(uv_loop_t* loop, store::Store& store, std::shared_ptr<const RouteTable> routes)
    : loop_(loop),
      store_(store),
      sessions_(routes->config().device.session_timeout.count()),
      heartbeat_{routes->config().device.heartbeat_target.count(), 1000},
      stall_(kLivenessTickMs, kStallThresholdMs) {
  SetRoutes(std::move(routes));
  uv_timer_init(loop_, &liveness_);
  liveness_.data = this;
  uv_timer_start(&liveness_, OnLivenessTick, kLivenessTickMs, kLivenessTickMs);
  uv_idle_init(loop_, &sweep_idle_);
  uv_check_init(loop_, &sweep_check_);
  sweep_check_.data = this;
}

DeviceApi::~DeviceApi() { Close(); }

void DeviceApi::Close() {
  if (*alive_) Checkpoint();  // a graceful stop records every session's last ping (for a new boot)
  *alive_ = false;
  opening_.clear();
  for (uv_handle_t* h : {reinterpret_cast<uv_handle_t*>(&liveness_), reinterpret_cast<uv_handle_t*>(&sweep_idle_),
                         reinterpret_cast<uv_handle_t*>(&sweep_check_)}) {
    if (!uv_is_closing(h)) uv_close(h, nullptr);
  }
}

void DeviceApi::SetRoutes(std::shared_ptr<const RouteTable> routes) {
  std::map<std::string, std::unique_ptr<DeviceAuthenticator>> auth;
  for (const auto& app : routes->config().apps) auth[app.id] = std::make_unique<DeviceAuthenticator>(app);
  if (routes->config().open_apps) {  // every unlisted app id: open
    auth[Config::kAnyApp] = std::make_unique<DeviceAuthenticator>(AppConfig{Config::kAnyApp, false, {}});
  }
  auth_ = std::move(auth);
  const DeviceConfig& d = routes->config().device;
  opens_limiter_.set_rate(d.opens_per_second);
  refusals_limiter_.set_rate(d.auth_failures_per_second);
  max_unconfirmed_ = d.max_unconfirmed_sessions;
  routes_ = std::move(routes);
}

int64_t DeviceApi::RestartGraceMs(int64_t session_timeout_ms) { return std::min<int64_t>(5'000, session_timeout_ms); }

const DeviceAuthenticator& DeviceApi::AuthenticatorFor(const std::string& app) const {
  auto it = auth_.find(app);
  return it != auth_.end() ? *it->second : *auth_.at(Config::kAnyApp);  // FindApp accepted it: open
}

int64_t DeviceApi::CloudNowMs() const {
  return cloud_boot_offset_ms_ ? store::BootTimeMs() + *cloud_boot_offset_ms_ : store::WallClockMs();
}

std::optional<int64_t> DeviceApi::cloud_offset_ms() const {
  if (!cloud_boot_offset_ms_) return std::nullopt;
  int64_t anchor = store::WallClockMs() - store::BootTimeMs();
  // Reading the two clocks one after the other jitters by a millisecond: only a step counts.
  if (std::llabs(anchor - wall_anchor_ms_) <= 2) anchor = wall_anchor_ms_;
  return *cloud_boot_offset_ms_ - anchor;
}

std::optional<uint64_t> DeviceApi::shedding_for_ms() const {
  const uint64_t now = uv_now(loop_);
  if (shed_last_ms_ == 0 || now - shed_last_ms_ > kShedPauseMs) return std::nullopt;
  return now - shed_first_ms_;
}

void DeviceApi::RestoreSessions() {
  uv_update_time(loop_);  // opening the store took a while: the loop has not run yet
  const int64_t now = static_cast<int64_t>(uv_now(loop_));
  const int64_t timeout = sessions_.timeout_ms();
  const int64_t grace = RestartGraceMs(timeout);
  const store::ClockReading clock = store::ClockNow();
  boottime_minus_loop_ms_ = clock.boottime_ms - now;
  size_t n = 0, dated = 0;
  store::WriteBatch checkpoints;  // the advanced Observe checkpoints, durable before first use
  const store::SessionTable& records = store_.sessions();
  const std::vector<store::SessionRecord> all = records.ListAll();
  sessions_.Reserve(sessions_.size() + all.size());
  for (const auto& r : all) {
    auto addr = ParseAddress(r.bound_address);
    Session s;
    s.id = r.session_id;
    s.app = r.app_id;
    s.device = r.device_id;
    s.short_token = r.short_token;
    s.long_token = r.long_token;
    if (addr) s.addr = *addr;
    s.anonymous = AnonymousId(r.device_id);
    // The token is not kept: an hmac session is taken as opened by the secret in force now.
    if (!s.anonymous && !(addr && addr->secure)) {
      if (auto a = auth_.find(r.app_id); a != auth_.end()) s.credential = a->second->RestoredFingerprint(r.device_id);
    }
    s.created_wall_ms = r.created_ms;
    s.last_seen_ms = now;  // undated: a full timeout to come back after the gateway restart
    // The last ping the store recorded (the session's first, or all at a graceful stop): an older
    // one only makes the first ping after the restart look later (steered: harmless).
    if (r.last_ping_ms) {
      store::EntryAge seen = store::AgeOf(store::ClockReading{r.last_seen_ms, r.last_seen_boottime_ms, r.boot_id}, clock);
      const int64_t ping_age = seen.ms ? *seen.ms + std::max<int64_t>(0, r.last_seen_ms - r.last_ping_ms) : INT64_MAX / 4;
      s.last_ping_ms = std::max<int64_t>(1, now - ping_age);  // undatable: long ago
    }
    s.checkpointed_ping_ms = r.last_ping_ms;
    const auto stamp = liveness_file_ ? liveness_file_->recovered().find(r.session_id)
                                      : std::unordered_map<std::string, LivenessFile::Stamp>::const_iterator();
    if (liveness_file_ && stamp != liveness_file_->recovered().end()) {  // same boot: exact as of the crash
      ++dated;
      s.last_seen_ms = now - std::max<int64_t>(0, clock.boottime_ms - stamp->second.seen_boottime_ms);
      s.expire_not_before_ms = now + grace;  // deadline max(last datagram + timeout, now + grace)
      if (stamp->second.ping_boottime_ms) {
        s.last_ping_ms = std::max<int64_t>(1, now - std::max<int64_t>(0, clock.boottime_ms - stamp->second.ping_boottime_ms));
      }
    }
    Stamp(sessions_.Add(std::move(s)));
    ++n;
    size_t unreadable = 0;
    std::vector<PersistedObserver> obs = DecodeObservers(r.observers, &unreadable);
    if (unreadable) {
      spdlog::warn("device '{}': {} persisted observation(s) unreadable and dropped", r.device_id, unreadable);
    }
    if (obs.empty()) continue;
    std::vector<PersistedObserver> kept;
    for (PersistedObserver& o : obs) {
      o.wire.seq = (o.wire.seq + kSeqRestartJump) & 0xFFFFFF;
      if (o.device_path.rfind(".info", 0) != 0) {
        // The routes in force now decide, as for a new observe: where the path lives, and whether
        // the device may still read it (if not, AttachEndpoint ends the observation with 4.03).
        const std::string plain = o.device_path.substr(0, o.device_path.find('?'));
        auto res = routes_->Resolve(r.app_id, r.device_id, SplitPath(plain));
        if (!res || !res->may_read) {
          restored_denied_.push_back(o.wire);
          continue;
        }
        o.cloud_path = JoinPath(res->cloud_path);
        o.route = res->route->name;
      }
      kept.push_back(std::move(o));
    }
    obs = std::move(kept);
    store::SessionRecord advanced = r;
    advanced.observers = EncodeObservers(obs);
    checkpoints.PutSession(std::move(advanced));
    for (PersistedObserver& o : obs) restored_.emplace_back(r.session_id, std::move(o));
  }
  if (n) {
    continuity_.HostLinksUntil(now + SessionContinuity::kEvidenceMs);  // their devices were not answered
    spdlog::info("restored {} device session(s): {} dated by their last datagram before the restart (each declared "
                 "gone {} ms after it, and not before {} ms from now), {} undated ({} ms from now)",
                 n, dated, timeout, grace, n - dated, timeout);
  }
  if (restored_.empty() && restored_denied_.empty()) return;
  spdlog::info("restored {} observation(s) of device sessions", restored_.size());
  auto alive = alive_;
  store_.Submit(std::move(checkpoints), [this, alive](const store::BatchResult& res) {
    if (!*alive) return;
    if (!res.status.ok()) {
      spdlog::error("restored observations: checkpoint not recorded ({}); notifying them anyway",
                    res.status.ToString());
    }
    restore_committed_ = true;
    ReleaseRestored();
  });
}

void DeviceApi::AttachEndpoint(coap::Endpoint* endpoint) {
  endpoint_ = endpoint;
  stall_.Reset();  // startup work (opening the store, restoring sessions) is not a stall
  if (!endpoint_) return;
  // An observation the routes no longer allow ends with a final 4.03, so the device does not keep
  // listening on a subscription nothing feeds.
  for (const coap::ObserverState& wire : restored_denied_) {
    static constexpr char kDiag[] = "read not allowed";
    coap::Response end{kForbidden, {reinterpret_cast<const uint8_t*>(kDiag), sizeof kDiag - 1}, std::nullopt, std::nullopt};
    endpoint_->notify(endpoint_->restore_observer(wire), end);
  }
  if (!restored_denied_.empty()) {
    spdlog::warn("{} persisted observation(s) ended with 4.03: the routes no longer allow the read",
                 restored_denied_.size());
  }
  restored_denied_.clear();
  for (auto& [session_id, p] : restored_) {
    Observer o;
    o.id = endpoint_->restore_observer(p.wire);
    o.session_id = session_id;
    o.path = p.cloud_path;
    o.device_path = p.device_path;
    o.json = p.json;
    o.native = p.native;
    o.last_digest = 0;  // unknown: the first notification carries the current snapshot
    o.query = p.query;
    o.route = p.route;
    restoring_.insert(o.id);
    observers_.Add(std::move(o));
  }
  counters_.observers_restored += restored_.size();
  restored_.clear();
  if (restore_committed_) ReleaseRestored();
}

void DeviceApi::ReleaseRestored() {
  if (!endpoint_ || restoring_.empty()) return;
  std::vector<std::string> paths;
  bool info = false;
  for (coap::ObserverId id : restoring_) {
    if (Observer* o = observers_.Find(id)) {
      if (o->path.rfind(".info", 0) == 0) info = true;
      else paths.push_back(o->path);
    }
  }
  restoring_.clear();
  // The device may have missed changes while the gateway was down: each restored observation
  // hears the current snapshot once (its digest is unknown), others only if theirs changed.
  NotifyPaths(paths);
  if (info) NotifyInfo();
}

// ---- request dispatch ----

void DeviceApi::on_request(const coap::Request& r) {
  Call c;
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
  if (c.native && endpoint_) endpoint_->allow_unasked_blocks(c.id);
  for (std::string_view q : r.uri_queries()) {
    if (q.rfind(".cs=", 0) == 0) c.cs = q.substr(4);
    else if (q.rfind(".dis=", 0) == 0) c.dis = q.substr(5);
    else if (!q.empty() && q[0] != '.') c.params.emplace_back(q);
  }
  std::string_view host = r.uri_host();
  auto app = routes_->FindApp(host.empty() ? std::nullopt : std::optional<std::string>(host));
  if (!app) return ReplyError(c, coap::code::kBadRequest, "unknown app");
  c.app = app->id;
  if (accept && *accept != kContentFormatJson && *accept != kContentFormatCbor) {
    return ReplyError(c, coap::code::make(4, 6), "accept 60 (cbor) or 50 (json)");
  }
  if (cf && *cf != kContentFormatJson && *cf != kContentFormatCbor) {
    return ReplyError(c, coap::code::make(4, 15), "content-format 60 (cbor) or 50 (json)");
  }
  if (c.payload.size() > routes_->config().device.max_payload) {
    const size_t max = routes_->config().device.max_payload;  // Size1: what is accepted (RFC 7959 §2.9.3)
    return ReplyError(c, coap::code::kRequestEntityTooLarge, fmt::format("payload over {} bytes", max), {},
                      static_cast<uint32_t>(max));
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
  if (s && (s->app != c.app || !OnSessionTransport(*s, c.peer, c.identity))) s = nullptr;
  if (s && !(s->addr == c.peer)) {
    // The token names the session: a sign of life from the device's new address (the SDK moves
    // to a new source port after 10 s without answers), and evidence for SessionContinuity.
    const int64_t now = LoopNow();
    sessions_.Touch(*s, now);
    Stamp(*s);
    continuity_.NoteTokenFrom(sessions_, *s, c.peer, now);
    // Over plain UDP nothing else: the address is not the one the session's answers go to, and
    // anyone may forge a source (RFC 7252 §11.3). A short 4.01, never larger than the request
    // (which carries the 13-byte .cs option), makes the SDK send /.rst (a ping) or
    // re-authenticate (other requests): no snapshot, no observation, no write for an address the
    // session was not bound to. A DTLS peer's address is proven (cookie exchange) and its records
    // authenticated as the session's identity (OnSessionTransport): it is served, as before.
    if (!c.peer.secure) {
      return RefuseToken(c, TokenRefusal::kBoundElsewhere, coap::code::kUnauthorized, "use /.rst");
    }
  }
  if (s) {
    // The session's token came back from the address it was sent to: the engine keeps this peer
    // when unverified addresses flood its table (docs/operations.md, "Security model"), and a
    // session opened from there is real.
    if (!r.peer_verified && endpoint_) endpoint_->verify_peer(c.peer);
    if (!s->confirmed) Confirm(*s);
  }
  if (control && path[0] == ".ping") {
    if (c.method != coap::code::kGet) return ReplyError(c, coap::code::kMethodNotAllowed, "GET /.ping");
    if (!s) return RefuseToken(c, TokenRefusal::kUnknownSession, coap::code::kUnauthorized, "unknown session");
    return HandlePing(c, s);
  }
  if (!s) return RefuseToken(c, TokenRefusal::kUnknownSession, coap::code::kUnauthorized, "unknown session");
  if (control && path[0] == ".off") return HandleOffline(c, s);
  if (!path.empty() && path[0] == ".info") return HandleInfo(c, path);
  if (std::string e = CheckPath(path); !e.empty()) return ReplyError(c, coap::code::kBadRequest, e);
  // Overload: a write that would wait behind commits already late is refused now, cheaply (no
  // decoding, nothing queued), rather than answered after the device's retransmission timer.
  const auto commit_wait_ms = static_cast<int64_t>(store_.CommitWaitMs());
  const bool write = c.method == coap::code::kPut || c.method == coap::code::kPost ||
                     c.method == coap::code::kPatch || c.method == coap::code::kDelete;
  if (write && commit_wait_ms > routes_->config().device.max_write_wait.count()) {
    ++counters_.writes_shed;
    const uint64_t now = uv_now(loop_);
    if (shed_last_ms_ == 0 || now - shed_last_ms_ > kShedPauseMs) shed_first_ms_ = now;
    shed_last_ms_ = now;
    return ReplyError(c, coap::code::kServiceUnavailable, "overloaded, retry later", kOverloadMaxAge);
  }
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

void DeviceApi::on_activity(const coap::Address& peer) {
  if (const std::vector<Session*>* bound = sessions_.Touch(peer, LoopNow()); bound && liveness_file_) {
    for (Session* s : *bound) Stamp(*s);
  }
}

void DeviceApi::on_observer_dropped(coap::ObserverId id, coap::DropReason reason) {
  if (reason == coap::DropReason::kTooLarge) {
    if (Observer* o = observers_.Find(id)) {
      spdlog::info("observation of /{} ended: its snapshot no longer fits one datagram and the device did not "
                   "ask for blocks (it got 4.13)", o->device_path);
    }
  }
  RemoveObserver(id);
}

void DeviceApi::on_response_failed(coap::ExchangeId) {
  // The device never acknowledged a separate response (it is gone or moved); an observation that
  // response registered is dropped by the engine and reported through on_observer_dropped.
  ++counters_.responses_failed;
}

// ---- sessions ----

struct DeviceApi::PendingOpen {
  std::shared_ptr<Call> call;
  std::string device;  // empty: anonymous (an id is generated, or taken over from its predecessor)
  std::string key;     // OpenKey
  std::string credential;  // DeviceAuthenticator::Fingerprint of the token (empty over DTLS)
  uint64_t reloads_seen = 0;  // DeviceApi::reloads_ when it was authenticated
};

void DeviceApi::HandleOpen(Call& c) {
  // Plain CoAP only: over DTLS the handshake (hellos_per_second, a cookie) proved the address.
  if (!c.peer.secure && !opens_limiter_.Take(c.peer, LoopNow())) {
    ++counters_.opens_rate_limited;
    if (endpoint_) endpoint_->ignore(c.id);  // nothing goes back to a possibly forged source
    return;
  }
  // 4.01, not 4.00: the SDK gives up for good on a 4.00 to /.cs (it means "unknown app").
  if (c.payload.size() > 512) {
    ++counters_.auth_failures;
    LogAuthFailure(c);
    return RefuseToken(c, TokenRefusal::kBadAuthToken, coap::code::kUnauthorized, "auth token longer than 512 bytes");
  }
  // Over DTLS the handshake authenticated the device: its PSK identity is the device id.
  AuthOutcome auth = c.peer.secure ? AuthOutcome{true, c.identity} : AuthenticatorFor(c.app).Authenticate(c.payload);
  // A reload may have removed the identity's key after its handshake: its connection opens nothing.
  if (c.peer.secure && psk_known_ && !psk_known_(c.identity)) auth.ok = false;
  if (!auth.ok) {
    ++counters_.auth_failures;
    LogAuthFailure(c);
    return RefuseToken(c, TokenRefusal::kBadAuthToken, coap::code::kUnauthorized, "invalid auth token");
  }
  auto open = std::make_shared<PendingOpen>();
  open->call = std::make_shared<Call>(c);
  open->device = auth.device;
  open->key = OpenKey(c.app, auth.device, auth.device.empty(), c.peer);
  if (!c.peer.secure) open->credential = DeviceAuthenticator::Fingerprint(c.payload);
  open->reloads_seen = reloads_;
  // One open at a time per device, so a second POST /.cs continues the session the first one
  // opens instead of running beside it (and leaving it to time out with the device's operations).
  auto [waiting, first] = opening_.try_emplace(open->key);
  if (!first && waiting->second.size() >= kMaxWaitingOpens) {
    ++counters_.opens_busy;  // the device (or someone with its token) retransmits if it is real
    if (endpoint_) endpoint_->ignore(c.id);
    return;
  }
  if (!first) return waiting->second.push_back(std::move(open));
  OpenSession(std::move(open));
}

void DeviceApi::OpenSession(std::shared_ptr<PendingOpen> open) {
  const Call& c = *open->call;
  const bool anonymous = open->device.empty();
  const int64_t now = LoopNow();
  // A new session for this address: requests of the old one are no longer duplicates, so the SDK
  // resending an old request (same message ID and token) after re-authenticating is answered anew.
  if (endpoint_) endpoint_->new_binding(c.id);
  // The device's live sessions end here without running their onDisconnect operations: those move
  // to the new session (the device is alive; the SDK never registers them again by itself).
  std::vector<Session*> preds = continuity_.Predecessors(sessions_, c.app, open->device, anonymous, c.peer, now);
  Session s;
  s.id = RandomToken(16);
  do s.short_token = RandomToken(8); while (sessions_.ShortTokenInUse(s.short_token));
  s.long_token = RandomToken(32);
  s.app = c.app;
  s.anonymous = anonymous;
  s.credential = open->credential;
  // Never the session token: ids are logged. An anonymous device keeps the id it had.
  s.device = !anonymous ? open->device : !preds.empty() ? preds.front()->device : "anon-" + RandomToken(8);
  s.addr = c.peer;
  s.created_wall_ms = store::WallClockMs();
  s.last_seen_ms = now;
  // The SDK's ping timer runs on across its sessions: the next ping is judged against the last one.
  for (const Session* p : preds) s.last_ping_ms = std::max(s.last_ping_ms, p->last_ping_ms);
  if (!s.last_ping_ms) s.last_ping_ms = continuity_.RememberedPing(c.app, s.device, anonymous, c.peer, now);
  std::vector<Session> continued;
  bool carries = false;  // a continued session has a store record (and maybe operations) to move
  for (Session* p : preds) {
    if (p->confirmed) {
      spdlog::info("device '{}' (app '{}') re-opened its session from {} (was {}): its onDisconnect operations "
                   "carry over", p->device, p->app, c.peer.to_string(), p->addr.to_string());
    }
    carries = carries || p->confirmed;
    std::string id = p->id;
    if (std::optional<Session> gone = DetachSession(id)) continued.push_back(std::move(*gone));
  }
  if (!carries && !c.peer.secure) {
    // Nothing to carry and an address nobody proved yet (a forged source never uses the reply):
    // memory only until the device uses the session, no store commit for a flood of them.
    counters_.sessions_continued += continued.size();
    // Authenticated before a reload that revoked its credential (it waited behind another open).
    if (open->reloads_seen != reloads_ && !CredentialValid(s)) {
      ReplyError(*open->call, coap::code::kUnauthorized, "invalid auth token");
      return FinishOpen(open->key);
    }
    const Json body = {{"s", s.short_token}, {"l", s.long_token}};
    spdlog::debug("session opened: app '{}' device '{}' at {} (kept in memory until its device uses it)", s.app,
                  s.device, s.addr.to_string());
    AddUnconfirmed(std::move(s));
    Reply(*open->call, coap::code::kContent, Encode(body, open->call->json_out));
    return FinishOpen(open->key);
  }
  CommitOpen(std::move(open), std::move(s), std::move(continued), 0);
}

void DeviceApi::CommitOpen(std::shared_ptr<PendingOpen> open, Session s, std::vector<Session> continued,
                           int attempt) {
  store::WriteBatch batch;
  std::vector<store::OnDisconnectOp> ops;
  for (const Session& old : continued) {
    if (!old.confirmed) continue;  // no record, no operations
    std::vector<store::OnDisconnectOp> mine = store_.sessions().OnDisconnectOps(old.id);
    uint64_t through = 0;
    for (const auto& op : mine) through = std::max(through, op.order);
    // An operation registered after this read makes the batch fail (kConflict): read again.
    batch.RemoveSession(old.id, /*must_exist=*/true, through);
    ops.insert(ops.end(), mine.begin(), mine.end());
  }
  std::sort(ops.begin(), ops.end(), [](const auto& a, const auto& b) { return a.order < b.order; });
  batch.PutSession(ToRecord(s, sessions_.timeout_ms(), LoopNow()));  // a new session observes nothing yet
  for (store::OnDisconnectOp& op : ops) batch.AddOnDisconnect(s.id, std::move(op));  // in registration order
  auto alive = alive_;
  store_.Submit(std::move(batch), [this, alive, open, attempt, s = std::move(s),
                                   continued = std::move(continued)](store::BatchResult res) mutable {
    if (!*alive) return;
    if (res.status.code == store::StatusCode::kConflict && attempt < kOpenRetries) {
      return CommitOpen(std::move(open), std::move(s), std::move(continued), attempt + 1);
    }
    if (res.status.code == store::StatusCode::kNotFound && !continued.empty() && attempt < kOpenRetries) {
      // A predecessor's record went meanwhile (it cannot fire twice): continue the others.
      std::erase_if(continued, [&](const Session& old) { return old.confirmed && !store_.sessions().Get(old.id); });
      return CommitOpen(std::move(open), std::move(s), std::move(continued), attempt + 1);
    }
    if (!res.status.ok()) {
      // Nothing of the batch applied: the predecessors are still in the store; serve them again.
      for (Session& old : continued) {
        if (!old.confirmed) {
          AddUnconfirmed(std::move(old));
          continue;
        }
        Stamp(sessions_.Add(std::move(old)));
      }
      ReplyStoreStatus(*open->call, res.status);
      return FinishOpen(open->key);
    }
    const int64_t now = LoopNow();
    s.last_seen_ms = now;
    s.checkpointed_ping_ms = s.last_ping_ms;  // PutSession recorded it
    Json body = {{"s", s.short_token}, {"l", s.long_token}};
    spdlog::debug("session opened: app '{}' device '{}' at {}", s.app, s.device, s.addr.to_string());
    if (!continued.empty()) {
      for (const auto& op : store_.sessions().OnDisconnectOps(s.id)) {
        s.carried_through_order = std::max(s.carried_through_order, op.order);
      }
    }
    Session& added = sessions_.Add(std::move(s));
    Stamp(added);
    ++counters_.sessions_opened;
    counters_.sessions_continued += continued.size();
    // Authenticated before a reload that revoked its credential: it ends like the others did.
    if (open->reloads_seen != reloads_ && !CredentialValid(added)) {
      RevokeSession(added.id);
      ReplyError(*open->call, coap::code::kUnauthorized, "invalid auth token");
      return FinishOpen(open->key);
    }
    Reply(*open->call, coap::code::kContent, Encode(body, open->call->json_out));
    FinishOpen(open->key);
  });
}

void DeviceApi::FinishOpen(const std::string& key) {
  auto it = opening_.find(key);
  if (it == opening_.end()) return;
  if (it->second.empty()) {
    opening_.erase(it);
    return;
  }
  std::shared_ptr<PendingOpen> next = std::move(it->second.front());
  it->second.erase(it->second.begin());
  OpenSession(std::move(next));
}

void DeviceApi::AddUnconfirmed(Session s) {
  s.confirmed = false;
  const std::string id = s.id;
  sessions_.Add(std::move(s));
  ++counters_.sessions_opened;
  ++unconfirmed_count_;
  unconfirmed_.push_back(id);
  // Oldest first: under a flood of forged opens a real device's session is young when its device
  // uses it (the SDK pings right after opening), so it is never the one that goes.
  while (!unconfirmed_.empty()) {
    Session* u = sessions_.ById(unconfirmed_.front());
    if (u && !u->confirmed) {
      if (unconfirmed_count_ <= max_unconfirmed_) break;
      ++counters_.unconfirmed_evicted;
      std::string gone = u->id;
      if (std::optional<Session> old = DetachSession(gone)) continuity_.NoteEnded(*old, LoopNow());
    }
    unconfirmed_.pop_front();  // confirmed, ended, or just evicted
  }
}

void DeviceApi::Confirm(Session& s) {
  if (s.confirmed) return;
  s.confirmed = true;
  if (unconfirmed_count_) --unconfirmed_count_;
  Stamp(s);
  PersistSession(s.id);  // submitted before the confirming request's own batch: the record comes first
}

void DeviceApi::RefuseToken(Call& c, TokenRefusal why, uint8_t code, const std::string& diagnostic) {
  const bool answer = refusals_limiter_.Take(c.peer, LoopNow());
  ++counters_.token_refusals[static_cast<int>(why)][answer ? 0 : 1];
  if (answer) return ReplyError(c, code, diagnostic);
  if (endpoint_) endpoint_->ignore(c.id);
}

void DeviceApi::LogAuthFailure(const Call& c) {
  const int64_t now = LoopNow();
  if (now - auth_logged_at_ms_ < kAuthLogEveryMs) {
    ++auth_log_suppressed_;
    ++counters_.auth_log_suppressed;
    return;
  }
  FlushAuthLog(now);
  auth_logged_at_ms_ = now;
  spdlog::info("device at {} failed to authenticate to app '{}'", c.peer.to_string(), c.app);
}

void DeviceApi::FlushAuthLog(int64_t now) {
  if (!auth_log_suppressed_ || now - auth_logged_at_ms_ < kAuthLogEveryMs) return;
  spdlog::info("{} more failed authentication(s) in {:.1f} s, not logged one by one (tether_auth_failures_total)",
               auth_log_suppressed_, static_cast<double>(now - auth_logged_at_ms_) / 1000.0);
  auth_log_suppressed_ = 0;
  auth_logged_at_ms_ = now;
}

void DeviceApi::HandlePing(Call& c, Session* s) {
  if (!s || !(s->addr == c.peer)) return ReplyError(c, coap::code::kUnauthorized, "unknown session");
  ++counters_.heartbeats;
  int64_t now = LoopNow();
  bool steer = heartbeat_.ShouldSteerDown(s->last_ping_ms, now);
  // Right after a stall the pings read are the ones that waited in the socket: their answers may
  // reach an SDK that gave up on them, and the SDK then sends the ping again at once. Judged
  // against each other, that second ping would look on time (2.05: the interval grows). So pings
  // read while the backlog drains are judged against the last ping before the stall, not recorded
  // (unless there is none: a first ping is better than no reference at all).
  if (now >= pings_judged_from_ms_ || !s->last_ping_ms) {
    s->last_ping_ms = now;
    Stamp(*s);
  }
  if (s->last_ping_ms && !s->checkpointed_ping_ms) {
    // The store records the session's first ping at once: restored without any (after a crash of
    // the host, when the liveness file is gone), a session would judge the SDK's next ping as a
    // first one and answer 2.05 however late it is. An older recorded ping only makes the first
    // ping after a restart look later (steered: harmless), so later pings are not written.
    store::SessionRecord r;
    SetCheckpoint(&r, *s, now, store::ClockNow());
    store::WriteBatch batch;
    batch.TouchSession(s->id, r.last_seen_ms, r.last_seen_boottime_ms, r.boot_id, r.last_ping_ms);
    s->checkpointed_ping_ms = s->last_ping_ms;
    store_.Submit(std::move(batch), [](const store::BatchResult&) {});
  }
  if (steer) {
    ++counters_.steered_pings;
    return ReplyError(c, coap::code::kUnauthorized, "ping later than the heartbeat target");
  }
  Reply(c, coap::code::kContent);
}

void DeviceApi::HandleRebind(Call& c) {
  Session* s = sessions_.ByLongToken(c.payload);
  if (!s || s->app != c.app || !OnSessionTransport(*s, c.peer, c.identity)) {
    return RefuseToken(c, TokenRefusal::kUnknownLongToken, coap::code::kBadRequest, "unknown long token");
  }
  // The long token went only to the session's address: whoever shows it got the reply there.
  if (!s->confirmed) Confirm(*s);
  sessions_.Rebind(*s, c.peer);
  sessions_.Touch(*s, LoopNow());
  Stamp(*s);
  // The device reopened its socket (or its NAT mapping changed): its observations move with it,
  // including a CON notification being retransmitted.
  if (endpoint_) {
    for (coap::ObserverId id : observers_.OfSession(s->id)) endpoint_->move_observer(id, c.peer);
  }
  ReencodeObservers(*s);  // their entries name the old address
  store::WriteBatch batch;
  batch.PutSession(SessionRecordOf(*s));
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

bool DeviceApi::CredentialValid(const Session& s) const {
  auto app = routes_->FindApp(s.app);
  if (!app || app->id != s.app) return false;  // the app is gone
  if (s.addr.secure) return !psk_known_ || psk_known_(s.device);  // the PSK identity is the device id
  auto a = auth_.find(s.app);
  if (a == auth_.end()) a = auth_.find(Config::kAnyApp);
  return a != auth_.end() && a->second->StillAccepts(s.device, s.anonymous, s.credential);
}

size_t DeviceApi::RevokeSession(std::string session_id) {
  std::optional<Session> s = DetachSession(session_id);  // its observations end with it
  if (!s) return 0;
  // Discarded, not run: they were registered under the credential just revoked, and whoever held
  // it must not write after the revocation (docs/operations.md, "Security model").
  const size_t discarded = store_.sessions().OnDisconnectOps(s->id).size();
  spdlog::debug("device '{}' (app '{}', {}): session revoked, {} onDisconnect operation(s) discarded", s->device,
                s->app, s->addr.to_string(), discarded);
  store::WriteBatch batch;
  batch.RemoveSession(s->id, /*must_exist=*/false);  // and every operation, however late it committed
  std::string device = s->device;
  store_.Submit(std::move(batch), [device](const store::BatchResult& r) {
    if (!r.status.ok() && r.status.code != store::StatusCode::kClosed) {
      spdlog::error("revoked session of device '{}' not removed from the store: {} (it is restored, and "
                    "revoked again, at the next start)", device, r.status.ToString());
    }
  });
  ++counters_.sessions_revoked;
  counters_.ondisconnect_discarded += discarded;
  return discarded;
}

void DeviceApi::RevokeAfterReload() {
  ++reloads_;  // opens authenticated before this are checked again when they commit
  std::vector<std::string> revoked;
  sessions_.ForEach([&](const Session& s) {
    if (!CredentialValid(s)) revoked.push_back(s.id);
  });
  size_t discarded = 0;
  for (const std::string& id : revoked) discarded += RevokeSession(id);

  // Observations of the sessions that remain, against the new routes (as a restart does).
  std::vector<coap::ObserverId> denied;
  std::vector<Observer> moved;
  for (const auto& [path, ids] : observers_.All()) {
    for (coap::ObserverId id : ids) {
      const Observer* o = observers_.Find(id);
      if (!o || o->device_path.rfind(".info", 0) == 0) continue;
      const Session* s = sessions_.ById(o->session_id);
      if (!s) continue;
      const std::string plain = o->device_path.substr(0, o->device_path.find('?'));
      auto res = routes_->Resolve(s->app, s->device, SplitPath(plain));
      if (!res || !res->may_read) {
        denied.push_back(id);
      } else if (std::string cloud = JoinPath(res->cloud_path); cloud != o->path) {
        Observer m = *o;  // the path now maps elsewhere: observe that, from its current snapshot
        m.path = std::move(cloud);
        m.route = res->route->name;
        m.last_digest = 0;
        moved.push_back(std::move(m));
      }
    }
  }
  static constexpr char kDiag[] = "read not allowed";
  const coap::Response end{kForbidden, {reinterpret_cast<const uint8_t*>(kDiag), sizeof kDiag - 1}, std::nullopt,
                           std::nullopt};
  for (coap::ObserverId id : denied) {
    if (endpoint_) endpoint_->notify(id, end);  // a final 4.03 without Observe: the device stops listening
    RemoveObserver(id);
  }
  counters_.observations_revoked += denied.size();
  std::vector<std::string> paths;
  for (Observer& m : moved) {
    paths.push_back(m.path);
    AddObserver(std::move(m));
  }
  NotifyPaths(paths);
  if (!revoked.empty() || !denied.empty()) {
    spdlog::warn("reload: revoked {} device session(s) whose credentials are gone (their {} onDisconnect "
                 "operation(s) discarded, not run; their next request gets 4.01) and ended {} observation(s) "
                 "the routes no longer allow (4.03)",
                 revoked.size(), discarded, denied.size());
  }
}

int64_t DeviceApi::LoopNow() {
  const int64_t now = static_cast<int64_t>(uv_now(loop_));
  if (const int64_t stalled = stall_.Observe(now)) {
    boottime_minus_loop_ms_ = store::BootTimeMs() - now;
    sessions_.ShiftForStall(stalled);
    pings_judged_from_ms_ = now + kStallDrainMs;
    continuity_.HostLinksUntil(now + SessionContinuity::kEvidenceMs);
    if (liveness_file_) sessions_.ForEachMutable([this](Session& s) { Stamp(s); });
    counters_.loop_stalls = stall_.stalls();
    counters_.loop_stalled_ms = static_cast<uint64_t>(stall_.stalled_ms());
    spdlog::warn("the event loop did not run for {} ms (process stopped, VM paused or starved of CPU?): that "
                 "time does not count as any device's silence", stalled + kLivenessTickMs);
  }
  return now;
}

void DeviceApi::OnLivenessTick(uv_timer_t* t) {
  auto* self = static_cast<DeviceApi*>(t->data);
  const int64_t now = self->LoopNow();
  // CLOCK_BOOTTIME runs ahead of the loop's clock only while the host is suspended: a tick's
  // reading is fresh enough for the liveness file, and datagrams do not pay for one each.
  self->boottime_minus_loop_ms_ = store::BootTimeMs() - now;
  self->FlushAuthLog(now);
  if (self->sessions_.MaybeDue(now)) self->ArmSweep();
}

void DeviceApi::ArmSweep() {
  if (sweep_armed_) return;
  sweep_armed_ = true;
  // An active idle handle makes this iteration's poll non-blocking: whatever datagrams already
  // reached the sockets are read (and stamp their sessions) before OnSweep, in the check phase.
  uv_idle_start(&sweep_idle_, [](uv_idle_t*) {});
  uv_check_start(&sweep_check_, OnSweep);
}

void DeviceApi::OnSweep(uv_check_t* h) {
  auto* self = static_cast<DeviceApi*>(h->data);
  self->sweep_armed_ = false;
  uv_idle_stop(&self->sweep_idle_);
  uv_check_stop(&self->sweep_check_);
  for (const auto& id : self->sessions_.Expired(self->LoopNow())) {
    if (const Session* s = self->sessions_.ById(id); s && s->confirmed) ++self->counters_.detections;
    self->EndSession(id, EndCause::kTimeout);
  }
}

void DeviceApi::Stamp(Session& s) {
  if (!liveness_file_ || !s.confirmed) return;  // no record to restore it from: no slot either
  if (s.liveness_slot == LivenessFile::kNoSlot) s.liveness_slot = liveness_file_->Assign();
  liveness_file_->Write(s.liveness_slot, s.id,
                        {s.last_seen_ms + boottime_minus_loop_ms_,
                         s.last_ping_ms ? s.last_ping_ms + boottime_minus_loop_ms_ : 0});
}

void DeviceApi::Checkpoint() {
  const int64_t now = LoopNow();
  const store::ClockReading clock = store::ClockNow();
  store::WriteBatch batch;
  sessions_.ForEachMutable([&](Session& s) {
    if (!s.confirmed) return;  // memory only
    store::SessionRecord r;
    SetCheckpoint(&r, s, now, clock);
    batch.TouchSession(s.id, r.last_seen_ms, r.last_seen_boottime_ms, r.boot_id, r.last_ping_ms);
  });
  if (batch.empty()) return;
  // Every session in the table has its record: it is added once its PutSession committed and
  // removed before the batch that deletes the record is submitted.
  store_.Submit(std::move(batch), [](const store::BatchResult& r) {
    if (!r.status.ok() && r.status.code != store::StatusCode::kClosed) {
      spdlog::warn("last pings of the sessions not recorded at stop: {}", r.status.ToString());
    }
  });
}

std::optional<Session> DeviceApi::DetachSession(const std::string& session_id) {
  Session* sp = sessions_.ById(session_id);
  if (!sp) return std::nullopt;
  Session s = *sp;
  if (!s.confirmed && unconfirmed_count_) --unconfirmed_count_;
  if (liveness_file_ && s.liveness_slot != LivenessFile::kNoSlot) liveness_file_->Free(s.liveness_slot);
  s.liveness_slot = LivenessFile::kNoSlot;
  sessions_.Remove(session_id);
  for (coap::ObserverId id : observers_.OfSession(session_id)) {
    if (endpoint_) endpoint_->cancel_observer(id);
    observers_.Remove(id);  // no PersistSession: the record goes with the session
    restoring_.erase(id);
  }
  return s;
}

void DeviceApi::EndSession(std::string session_id, EndCause cause, std::function<void()> done) {
  std::optional<Session> s = DetachSession(session_id);
  if (!s) {
    if (done) done();
    return;
  }
  continuity_.NoteEnded(*s, LoopNow());  // its device's next session carries on its ping timer
  if (!s->confirmed) {  // never used by its device: no record, no operations; not worth a log line
    if (cause == EndCause::kTimeout) ++counters_.unconfirmed_expired;
    if (done) done();
    return;
  }
  static const char* kCause[] = {"silent past the session timeout", "went offline", "was kicked"};
  spdlog::info("device '{}' (app '{}', {}) {}: running its onDisconnect operations", s->device, s->app,
               s->addr.to_string(), kCause[static_cast<int>(cause)]);

  FireOnDisconnect(std::move(*s), std::move(done), 0);
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
    if (RefuseOverObserverCap(c, *s, dev_path)) return;
    std::span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(body.data()), body.size());
    coap::Response resp{coap::code::kContent, bytes, std::nullopt, std::nullopt};
    if (c.native) resp.content_format = c.json_out ? kContentFormatJson : kContentFormatCbor;
    coap::ObserverId id = endpoint_->respond_observe(c.id, resp);
    if (id) AddObserver({id, s->id, dev_path, dev_path, c.json_out, c.native, SnapshotDigest(body), nullptr, {}, {}});
    CountAnswer(coap::code::kGet, coap::code::kContent);
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
  const int64_t anchor = store::WallClockMs() - store::BootTimeMs();
  std::optional<int64_t> boot_offset;
  if (offset_ms) boot_offset = *offset_ms + anchor;
  // The same estimate read again differs by the rounding of the two clocks: not a change.
  if (boot_offset && cloud_boot_offset_ms_ && std::llabs(*boot_offset - *cloud_boot_offset_ms_) <= 2) {
    boot_offset = cloud_boot_offset_ms_;
  }
  bool changed = connected != cloud_connected_ || boot_offset != cloud_boot_offset_ms_;
  bool came_back = connected && !cloud_connected_;
  cloud_connected_ = connected;
  if (boot_offset != cloud_boot_offset_ms_) wall_anchor_ms_ = anchor;
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
      if (!o || (!restoring_.empty() && restoring_.count(id))) continue;
      std::string body = Encode(v, o->json);
      uint64_t digest = SnapshotDigest(body);
      if (digest == o->last_digest) continue;
      o->last_digest = digest;
      std::span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(body.data()), body.size());
      coap::Response resp{coap::code::kContent, bytes, std::nullopt, std::nullopt};
      if (o->native) resp.content_format = o->json ? kContentFormatJson : kContentFormatCbor;
      const std::string session_id = o->session_id;
      if (endpoint_->notify(id, resp)) CountNotification(session_id);
      else RemoveObserver(id);
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
  if (c.observe == 0u && RefuseOverObserverCap(c, s, dev_path)) return;
  std::string cloud = JoinPath(res->cloud_path);
  if (c.query) return HandleQuery(c, s, cloud, dev_path, res->route->name, c.query);
  if (c.observe == 0u) {
    Json value = store_.tree().Get("/" + cloud);
    std::string body = Encode(value, c.json_out);
    std::span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(body.data()), body.size());
    coap::Response resp{coap::code::kContent, bytes, std::nullopt, std::nullopt};
    if (c.native) resp.content_format = c.json_out ? kContentFormatJson : kContentFormatCbor;
    coap::ObserverId id = endpoint_->respond_observe(c.id, resp);
    // Digest of the CBOR form: notifications compare against the same encoding.
    if (id) AddObserver({id, s.id, cloud, dev_path, c.json_out, c.native, SnapshotDigest(EncodeCbor(value)), nullptr,
                         res->route->name, {}});
    CountAnswer(coap::code::kGet, coap::code::kContent);
    // Outside sync roots the cloud's value reaches the observer as a notification.
    if (id && cloud_reader_ && cloud_connected_ && !InSyncRoot(cloud) && (!Holds(cloud, "") || RefreshDue(cloud, ""))) {
      FetchValue(cloud, [](std::optional<Json>) {});
    }
    return;
  }
  if (!cloud_reader_) return Reply(c, coap::code::kContent, Encode(store_.tree().Get("/" + cloud), c.json_out));
  const bool held = Holds(cloud, "");
  if (!cloud_connected_) return ReplyHeld(c, cloud, held, "value not held offline");
  if (held && InSyncRoot(cloud)) return ReplyHeld(c, cloud, true, "");  // the stream keeps it current
  auto alive = alive_;
  auto call = std::make_shared<Call>(c);
  FetchValue(cloud, [this, alive, call, cloud](std::optional<Json> answer) {
    if (!*alive) return;
    if (!answer) return ReplyHeld(*call, cloud, Holds(cloud, ""), "cloud did not answer the read");
    Reply(*call, coap::code::kContent, Encode(*answer, call->json_out));
  });
}

void DeviceApi::ReplyHeld(Call& c, const std::string& cloud, bool held, const std::string& diagnostic) {
  Json value = store_.tree().Get("/" + cloud);
  // Not complete but something is there (own writes, parts of remembered results): that is what
  // the gateway knows. Nothing at all: saying null would claim the cloud holds nothing.
  if (held || !value.is_null()) return Reply(c, coap::code::kContent, Encode(value, c.json_out));
  ReplyError(c, coap::code::kServiceUnavailable, diagnostic, kQueryRetryMaxAge);
}

bool DeviceApi::InSyncRoot(const std::string& cloud_path) const {
  for (const auto& root : sync_roots_) {
    if (cloud_path == root || cloud_path.compare(0, root.size() + 1, root + "/") == 0 || root.empty()) return true;
  }
  return false;
}

bool DeviceApi::Holds(const std::string& cloud_path, const std::string& query) const {
  return store_.tree().HoldsComplete("/" + cloud_path, query);
}

bool DeviceApi::RefreshDue(const std::string& cloud_path, const std::string& query) {
  const uint64_t now = uv_now(loop_);
  const std::string key = cloud_path + '?' + query;
  auto it = refreshed_ms_.find(key);
  if (it != refreshed_ms_.end() && now - it->second < kRefreshIntervalMs) return false;
  if (refreshed_ms_.size() >= 4096) {  // bounded: forget what is due anyway
    std::erase_if(refreshed_ms_, [&](const auto& kv) { return now - kv.second >= kRefreshIntervalMs; });
  }
  refreshed_ms_[key] = now;  // from the ask on: concurrent GETs ask once
  return true;
}

std::vector<uint64_t> DeviceApi::InFlight() const {
  return uploads_in_flight_ ? uploads_in_flight_() : std::vector<uint64_t>{};
}

void DeviceApi::FetchValue(const std::string& cloud, std::function<void(std::optional<Json>)> done) {
  auto alive = alive_;
  cloud_reader_(cloud, std::string(), [this, alive, cloud, done = std::move(done)](std::optional<Json> fresh) {
    if (!*alive) return;
    if (!fresh) return done(std::nullopt);
    const std::string tree_path = "/" + cloud;
    refreshed_ms_[cloud + '?'] = uv_now(loop_);
    // A sync root's stream delivered its full value meanwhile: that copy is at least as new.
    if (InSyncRoot(cloud) && Holds(cloud, "")) return done(store_.tree().Get(tree_path));
    store::WriteBatch b;  // remembered for offline reads (the cache bound evicts it eventually)
    b.TreeSetFromCloud(tree_path, *fresh, InFlight());
    b.TreeMarkComplete(tree_path, "");  // queries at or below can be answered from it
    store_.Submit(std::move(b), [this, alive, tree_path, fresh = std::move(*fresh), done](const store::BatchResult& r) {
      if (!*alive) return;
      if (!r.status.ok()) {
        spdlog::warn("cloud value of {} not stored locally: {}", tree_path, r.status.ToString());
        return done(fresh);
      }
      done(store_.tree().Get(tree_path));  // the cloud's value with the pending writes on top
      NotifyPaths(r.changed_paths);
    });
  });
}

void DeviceApi::HandleQuery(Call& c, Session& s, const std::string& cloud, const std::string& dev_path,
                            const std::string& route, std::shared_ptr<const Query> q) {
  const std::string tree_path = "/" + cloud;
  const std::string canonical = q->Canonical();
  if (!cloud_reader_ || Holds(cloud, canonical)) {
    AnswerQuery(c, s, cloud, dev_path, route, q, ApplyQuery(store_.tree().Get(tree_path), *q));
    // A remembered cloud result answers at once; the cloud refreshes it now and then (observers
    // hear changes). Sync roots are kept current by their stream.
    if (cloud_reader_ && cloud_connected_ && !InSyncRoot(cloud) && RefreshDue(cloud, canonical)) {
      FetchQuery(cloud, q, [](std::optional<Json>) {});
    }
    return;
  }
  if (!cloud_connected_) {
    return ReplyError(c, coap::code::kServiceUnavailable, "query result not held offline", kQueryRetryMaxAge);
  }
  auto alive = alive_;
  auto call = std::make_shared<Call>(c);
  std::string session_id = s.id;
  FetchQuery(cloud, q, [this, alive, call, session_id, cloud, dev_path, route, q](std::optional<Json> answer) {
    if (!*alive) return;
    if (!answer) {
      return ReplyError(*call, coap::code::kServiceUnavailable, "cloud did not answer the query", kQueryRetryMaxAge);
    }
    Session* s = sessions_.ById(session_id);
    if (!s) return ReplyError(*call, coap::code::kUnauthorized, "unknown session");
    AnswerQuery(*call, *s, cloud, dev_path, route, q, *answer);
  });
}

void DeviceApi::AnswerQuery(Call& c, Session& s, const std::string& cloud, const std::string& dev_path,
                            const std::string& route, std::shared_ptr<const Query> q, const Json& result) {
  if (c.observe != 0u) return Reply(c, coap::code::kContent, Encode(result, c.json_out));
  if (RefuseOverObserverCap(c, s, dev_path)) return;  // others registered while the cloud answered
  std::string body = Encode(result, c.json_out);
  std::span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(body.data()), body.size());
  coap::Response resp{coap::code::kContent, bytes, std::nullopt, std::nullopt};
  if (c.native) resp.content_format = c.json_out ? kContentFormatJson : kContentFormatCbor;
  coap::ObserverId id = endpoint_ ? endpoint_->respond_observe(c.id, resp) : 0;
  if (id) {
    AddObserver({id, s.id, cloud, dev_path, c.json_out, c.native, SnapshotDigest(EncodeCbor(result)), std::move(q),
                 route, {}});
  }
  CountAnswer(coap::code::kGet, coap::code::kContent);
}

void DeviceApi::FetchQuery(const std::string& cloud, std::shared_ptr<const Query> q,
                           std::function<void(std::optional<Json>)> done) {
  auto alive = alive_;
  cloud_reader_(cloud, q->RestParams(), [this, alive, cloud, q, done = std::move(done)](std::optional<Json> fresh) {
    if (!*alive) return;
    if (!fresh) return done(std::nullopt);
    const std::string tree_path = "/" + cloud;
    refreshed_ms_[cloud + '?' + q->Canonical()] = uv_now(loop_);
    if (InSyncRoot(cloud) && Holds(cloud, "")) return done(ApplyQuery(store_.tree().Get(tree_path), *q));
    Json result = ApplyQuery(*fresh, *q);  // also turns Firebase's array form into children
    store::WriteBatch b;
    if (result.is_object() || result.is_null()) {
      // Merged, not replaced: children outside the result stay (other queries may hold them).
      // Local children inside the range the result covers that it lacks are gone from the cloud.
      Json children = result.is_object() ? result : Json::object();
      std::vector<std::string> stale = StaleKeys(store_.tree().Get(tree_path), result, *q);
      for (const std::string& k : stale) children[k] = nullptr;
      if (!children.empty()) b.TreeUpdateFromCloud(tree_path, std::move(children), InFlight());
      // Ordered by value, a missing child may have moved out of the range rather than gone: what
      // other remembered results claimed about this path is not certain any more.
      if (!stale.empty() && q->order != Query::Order::kKey) b.TreeForgetComplete(tree_path);
    } else {
      b.TreeSetFromCloud(tree_path, result, InFlight());  // a plain value: no children to select
    }
    b.TreeMarkComplete(tree_path, q->Canonical());
    store_.Submit(std::move(b), [this, alive, tree_path, q, result, done](const store::BatchResult& r) {
      if (!*alive) return;
      if (!r.status.ok()) {
        spdlog::warn("cloud query result at {} not stored locally: {}", tree_path, r.status.ToString());
        return done(result);
      }
      done(ApplyQuery(store_.tree().Get(tree_path), *q));  // with the pending writes on top
      NotifyPaths(r.changed_paths);
    });
  });
}

void DeviceApi::RefreshObservedQueries() {
  if (!cloud_reader_) return;
  std::set<std::string> asked;  // path + '?' + query: one read each
  for (const auto& [path, ids] : observers_.All()) {
    if (path.rfind(".info", 0) == 0 || InSyncRoot(path)) continue;  // sync roots resync by stream
    for (coap::ObserverId id : ids) {
      Observer* o = observers_.Find(id);
      if (!o) continue;
      const std::string canonical = o->query ? o->query->Canonical() : std::string();
      if (!asked.insert(path + '?' + canonical).second) continue;
      refreshed_ms_[path + '?' + canonical] = uv_now(loop_);
      if (o->query) FetchQuery(path, o->query, [](std::optional<Json>) {});
      else FetchValue(path, [](std::optional<Json>) {});
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
    if (value.empty()) return Reply(c, coap::code::kContent);  // changes nothing: nothing to queue
    Json children = Json::object();  // child paths in one form, locally and for the upload
    for (auto& [k, v] : value.items()) children[JoinPath(SplitPath(k))] = std::move(v);
    value = std::move(children);
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
  store::WriteBatch batch;
  // Byte strings stay bytes locally; the cloud gets base64 (EncodeJson). The queue entry is
  // encoded first, so the value itself moves into the local-copy write.
  if (expect) {
    store::QueueEntry e = QueueEntryFor(res->route->name, s.device, store::OpKind::kConditionalSet, tree_path,
                                        value, store::WallClockMs());
    e.payload = EncodeJson(Json{{"expect", *expect}, {"value", value}});
    batch.TreeSetIf(tree_path, *expect, std::move(value));
    batch.Append(std::move(e));
  } else {
    store::QueueEntry e = QueueEntryFor(res->route->name, s.device, kind, tree_path, value, store::WallClockMs());
    AddTreeWrite(&batch, kind, tree_path, std::move(value), CloudNowMs(), /*refuse_non_finite=*/true);
    batch.Append(std::move(e));
  }
  ++counters_.writes;
  auto alive = alive_;
  auto call = std::make_shared<Call>(std::move(c));  // c is not used after this
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
    call->text_reply = true;
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
    if (op.kind == store::OnDisconnectOp::Kind::kUpdate && value.empty()) return Reply(c, coap::code::kContent);
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
      return ReplyError(c, kForbidden, fmt::format("too many onDisconnect operations: {} per session "
                                                   "(device.max_ondisconnect_per_session)",
                                                   limits.max_ondisconnect_per_session));
    }
    if (bytes + mine > limits.max_ondisconnect_bytes_per_session) {
      ++counters_.ondisconnect_refused_bytes;
      return ReplyError(c, kForbidden, fmt::format("onDisconnect operations over {} bytes per session "
                                                   "(device.max_ondisconnect_bytes_per_session)",
                                                   limits.max_ondisconnect_bytes_per_session));
    }
    batch.AddOnDisconnect(s.id, std::move(op));
    PendingOnDisconnect& pending = ondisconnect_pending_[s.id];
    ++pending.count;
    pending.bytes += mine;
    auto alive = alive_;
    auto call = std::make_shared<Call>(c);
    return store_.Submit(std::move(batch), [this, alive, call, session_id = s.id, mine](const store::BatchResult& r) {
      if (!*alive) return;
      if (auto p = ondisconnect_pending_.find(session_id); p != ondisconnect_pending_.end()) {
        --p->second.count;
        p->second.bytes -= mine;
        if (p->second.count == 0) ondisconnect_pending_.erase(p);
      }
      if (!r.status.ok()) return ReplyStoreStatus(*call, r.status);
      Reply(*call, coap::code::kContent);
    });
  }
  CommitThenReply(c, std::move(batch));
}

bool DeviceApi::RefuseOverObserverCap(Call& c, const Session& s, const std::string& dev_path) {
  const uint32_t max = routes_->config().device.max_observers_per_session;
  if (observers_.CountOfSession(s.id) < max || observers_.FindBySessionPath(s.id, dev_path)) return false;
  ++counters_.observers_refused;
  ReplyError(c, kForbidden, fmt::format("too many observations: {} per session (device.max_observers_per_session)", max));
  return true;
}

void DeviceApi::CommitThenReply(Call& c, store::WriteBatch batch) {
  auto alive = alive_;
  auto call = std::make_shared<Call>(std::move(c));  // callers return right after
  store_.Submit(std::move(batch), [this, alive, call](const store::BatchResult& r) {
    if (!*alive) return;
    if (!r.status.ok()) return ReplyStoreStatus(*call, r.status);
    Reply(*call, coap::code::kContent);
  });
}

bool DeviceApi::DecodePayload(Call& c, Json* value) {
  std::string err;
  const bool update = c.method == coap::code::kPatch;  // its null members remove
  auto v = c.json_in ? DecodeJson(c.payload, &err, update) : DecodeCbor(c.payload, &err, update);
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
    const coap::ObserverId id = o->id;
    endpoint_->cancel_observer(id);
    RemoveObserver(id);
  }
  Reply(c, coap::code::kContent);
}

void DeviceApi::AddObserver(Observer o) {
  const coap::ObserverId id = o.id;
  const std::string session_id = o.session_id;
  for (coap::ObserverId old : observers_.Add(std::move(o))) {
    if (old == id) continue;
    restoring_.erase(old);
    if (endpoint_) endpoint_->cancel_observer(old);
  }
  PersistSession(session_id);
}

void DeviceApi::RemoveObserver(coap::ObserverId id) {
  Observer* o = observers_.Find(id);
  if (!o) return;
  const std::string session_id = o->session_id;
  observers_.Remove(id);
  restoring_.erase(id);
  PersistSession(session_id);
}

void DeviceApi::CountNotification(const std::string& session_id) {
  Session* s = sessions_.ById(session_id);
  if (s && ++s->notified_since_checkpoint >= kSeqCheckpointEvery) {
    ReencodeObservers(*s);  // checkpoints every Observe value
    PersistSession(session_id);
  }
}

void DeviceApi::ReencodeObservers(Session& s) {
  for (coap::ObserverId id : observers_.OfSession(s.id)) {
    if (Observer* o = observers_.Find(id)) o->persisted.clear();
  }
  s.notified_since_checkpoint = 0;
}

store::SessionRecord DeviceApi::SessionRecordOf(const Session& s) {
  store::SessionRecord r = ToRecord(s, sessions_.timeout_ms(), LoopNow());
  // Entries are encoded once (when first written, or after ReencodeObservers): writing the record
  // of a session with n observations copies n entries instead of encoding n.
  std::vector<const std::string*> entries;
  for (coap::ObserverId id : observers_.OfSession(s.id)) {
    Observer* o = observers_.Find(id);
    if (!o) continue;
    if (o->persisted.empty()) {
      std::optional<coap::ObserverState> wire = endpoint_ ? endpoint_->observer_state(id) : std::nullopt;
      if (!wire) continue;
      o->persisted = EncodeObserver({o->device_path, o->path, o->route, o->query, o->json, o->native, *wire});
    }
    entries.push_back(&o->persisted);
  }
  r.observers = JoinObservers(entries);
  return r;
}

void DeviceApi::PersistSession(const std::string& session_id) {
  Session* s = sessions_.ById(session_id);
  if (!s || !s->confirmed) return;  // ended (its record is being removed), not yet committed (HandleOpen), or memory only
  // One write in flight per session: changes meanwhile are written together when it commits, so
  // registering n observations writes the record at most once per commit, not n times (each write
  // holds all of the session's observations).
  if (auto [it, first] = persisting_.try_emplace(session_id, false); !first) {
    it->second = true;
    return;
  }
  store::WriteBatch batch;
  batch.PutSession(SessionRecordOf(*s));
  std::string device = s->device;
  auto alive = alive_;
  store_.Submit(std::move(batch), [this, alive, device, session_id](const store::BatchResult& r) {
    if (!r.status.ok() && r.status.code != store::StatusCode::kClosed) {
      spdlog::warn("observations of device '{}' not recorded: {} (a restart may lose them)", device,
                   r.status.ToString());
    }
    if (!*alive) return;
    auto it = persisting_.find(session_id);
    if (it == persisting_.end()) return;
    const bool again = it->second;
    persisting_.erase(it);
    if (again) PersistSession(session_id);
  });
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
    ++counters_.notify_reads;
    struct View {
      Json value;
      std::string cbor, json;
      uint64_t digest = 0;
    };
    std::map<std::string, View> views;  // by Query::Canonical ("" = the whole snapshot)
    for (coap::ObserverId id : ids) {
      Observer* o = observers_.Find(id);
      if (!o || (!restoring_.empty() && restoring_.count(id))) continue;  // restored: held until durable
      std::string key = o->query ? o->query->Canonical() : std::string();
      auto [it, fresh] = views.try_emplace(key);
      View& v = it->second;
      if (fresh) {
        v.value = o->query ? ApplyQuery(value, *o->query) : value;
        v.cbor = EncodeCbor(v.value);
        v.digest = SnapshotDigest(v.cbor);
        ++counters_.notify_encodes;
      }
      if (o->last_digest == v.digest) continue;  // unchanged snapshot: nothing to send
      o->last_digest = v.digest;
      if (o->json && v.json.empty()) v.json = EncodeJson(v.value);
      const std::string& body = o->json ? v.json : v.cbor;
      std::span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(body.data()), body.size());
      coap::Response resp{coap::code::kContent, bytes, std::nullopt, std::nullopt};
      if (o->native) resp.content_format = o->json ? kContentFormatJson : kContentFormatCbor;
      ++counters_.notifications;
      const std::string session_id = o->session_id;
      if (endpoint_->notify(id, resp)) CountNotification(session_id);
      else RemoveObserver(id);
    }
  }
}

// ---- replies ----

std::string DeviceApi::Encode(const Json& v, bool json) const { return json ? EncodeJson(v) : EncodeCbor(v); }

void DeviceApi::CountAnswer(uint8_t method, uint8_t code) {
  const size_t m = method >= coap::code::kGet && method <= coap::code::kPatch ? method - coap::code::kGet : kOtherMethod;
  ++answered_[m][code];
}

DeviceApiCounters DeviceApi::counters() const {
  DeviceApiCounters c = counters_;
  for (size_t m = 0; m < answered_.size(); ++m) {
    const uint8_t method = m == kOtherMethod ? 0 : static_cast<uint8_t>(coap::code::kGet + m);
    for (size_t code = 0; code < answered_[m].size(); ++code) {
      if (answered_[m][code]) {
        c.requests[fmt::format("{} {}", MethodName(method), CodeName(static_cast<uint8_t>(code)))] += answered_[m][code];
      }
    }
  }
  return c;
}

void DeviceApi::Reply(Call& c, uint8_t code, std::string payload, std::optional<uint32_t> max_age,
                      std::optional<uint32_t> size1) {
  CountAnswer(c.method, code);
  if (!endpoint_) return;
  std::span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(payload.data()), payload.size());
  coap::Response resp{code, bytes, std::nullopt, max_age};
  resp.size1 = size1;
  // A native client is told the format of a data payload (2.05, and 4.12's current value); a
  // diagnostic carries none (RFC 7252 §5.5.2), an SDK device never gets one (as in the traces).
  if (c.native && !payload.empty() && (code == coap::code::kContent || code == kPreconditionFailed)) {
    resp.content_format = c.text_reply ? kContentFormatText : c.json_out ? kContentFormatJson : kContentFormatCbor;
  }
  endpoint_->respond(c.id, resp);
}

void DeviceApi::ReplyError(Call& c, uint8_t code, const std::string& diagnostic, std::optional<uint32_t> max_age,
                           std::optional<uint32_t> size1) {
  spdlog::debug("{} from {}: {} {}", MethodName(c.method), c.peer.to_string(), CodeName(code), diagnostic);
  Reply(c, code, diagnostic, max_age, size1);  // RFC 7252 §5.5.2: diagnostic payload
}

void DeviceApi::ReplyStoreStatus(Call& c, const store::Status& st) {
  switch (st.code) {
    case store::StatusCode::kRejected:
      return ReplyError(c, coap::code::kServiceUnavailable, "queue full, retry later", kQueueFullMaxAge);
    case store::StatusCode::kFull:
      ++counters_.writes_refused_store_full;
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
