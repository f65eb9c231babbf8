#include "gateway/device/session_keeper.h"

#include <cassert>

#include <spdlog/spdlog.h>

#include <set>

#include "gateway/device/device_write.h"
#include "gateway/device/persisted_observer.h"
#include "gateway/device/stored_session.h"
#include "gateway/config/random_token.h"
#include "gateway/model/route_pattern.h"
#include "store/boot_clock.h"

namespace tether {

namespace {

constexpr int kOpenRetries = 5;
// Opens of one device are handled one at a time; beyond this many waiting, more are not answered
// (a flood of one device's token from spoofed sources queues nothing).
constexpr size_t kMaxWaitingOpens = 1;

// POST /.cs of one device are handled one at a time: a device with a stable id by its id,
// an anonymous one by its address.
std::string OpenKey(const std::string& app, const std::string& device, bool anonymous, const coap::Address& from) {
  return app + '\0' + (anonymous ? "@" + from.to_string() : device + (from.secure ? "\0dtls" : ""));
}

}  // namespace

struct SessionKeeper::PendingOpen {
  OpenRequest request;
  std::function<void(const OpenResult&)> done;
  std::string key;            // OpenKey
  uint64_t reloads_seen = 0;  // reloads_ when it was authenticated
};

SessionKeeper::SessionKeeper(uv_loop_t* loop, store::Store& store, DeviceNotifier& notifier, CloudStatus& cloud,
                             DeviceApiCounters& counters, const DeviceConfig& device,
                             std::function<void(const std::string& route)> on_queued)
    : loop_(loop),
      store_(store),
      notifier_(notifier),
      cloud_(cloud),
      counters_(counters),
      guard_(counters),
      on_queued_(std::move(on_queued)),
      sessions_(device.session_timeout.count()),
      heartbeat_{device.heartbeat_target.count(), 1000},
      liveness_(
          loop, sessions_, continuity_, counters,
          [this](const std::vector<std::string>& expired) {
            for (const auto& id : expired) {
              if (const Session* s = sessions_.ById(id); s && s->confirmed) ++counters_.detections;
              EndSession(id, EndCause::kTimeout);
            }
          },
          [this](int64_t now) { guard_.FlushAuthLog(now); }) {}

SessionKeeper::~SessionKeeper() { Close(); }

void SessionKeeper::Close() {
  if (!scope_.closed()) {
    // A graceful stop writes the records still owed: those changed while their write was in
    // flight (that write's callback does nothing once closed), and those waiting their turn.
    for (auto& [session_id, state] : persisting_) {
      const Session* s = sessions_.ById(session_id);
      if (state != RecordWrite::kWritingChanged || !s) continue;
      state = RecordWrite::kWriting;
      WriteRecord(*s);
    }
    WriteWaitingRecords(SIZE_MAX);
    Checkpoint();  // and every session's last ping (for a new boot)
  }
  scope_.Close();
  opening_.clear();
  liveness_.Close();
}

void SessionKeeper::SetRoutes(std::shared_ptr<const RouteTable> routes) {
  guard_.SetRoutes(*routes);  // throws before anything changed
  routes_ = std::move(routes);
}

int64_t SessionKeeper::RestartGraceMs(int64_t session_timeout_ms) { return std::min<int64_t>(5'000, session_timeout_ms); }

void SessionKeeper::AttachEndpoint(coap::Endpoint* endpoint) {
  endpoint_ = endpoint;
  liveness_.ResetStall();  // startup work (opening the store, restoring sessions) is not a stall
}

// ---- restart ----

void SessionKeeper::RestoreSessions() {
  uv_update_time(loop_);  // opening the store took a while: the loop has not run yet
  const int64_t now = static_cast<int64_t>(uv_now(loop_));
  const int64_t timeout = sessions_.timeout_ms();
  const int64_t grace = RestartGraceMs(timeout);
  const store::ClockReading clock = store::ClockNow();
  liveness_.SetBoottimeOffset(clock.boottime_ms - now);
  size_t n = 0, dated = 0;
  store::WriteBatch checkpoints;  // the advanced Observe checkpoints, durable before first use
  const store::SessionTable& records = store_.sessions();
  const std::vector<store::SessionRecord> all = records.ListAll();
  sessions_.Reserve(sessions_.size() + all.size());
  for (const auto& r : all) {
    Session s = FromRecord(r, now, clock, [&](const Session& restored) {
      // The token is not kept: an hmac session is taken as opened by the secret in force now.
      if (restored.anonymous || restored.addr.secure) return std::string();
      return guard_.RestoredFingerprint(r.app_id, r.device_id);
    });
    const LivenessFile* file = liveness_.file();
    const auto stamp = file ? file->recovered().find(r.session_id)
                            : std::unordered_map<std::string, LivenessFile::Stamp>::const_iterator();
    if (file && stamp != file->recovered().end()) {  // same boot: exact as of the crash
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
    store::SessionRecord advanced = r;
    advanced.observers = EncodeObservers(notifier_.Restore(r.session_id, r.app_id, r.device_id, std::move(obs), *routes_));
    checkpoints.PutSession(std::move(advanced));
  }
  if (n) {
    continuity_.HostLinksUntil(now + SessionContinuity::kEvidenceMs);  // their devices were not answered
    spdlog::info("restored {} device session(s): {} dated by their last datagram before the restart (each declared "
                 "gone {} ms after it, and not before {} ms from now), {} undated ({} ms from now)",
                 n, dated, timeout, grace, n - dated, timeout);
  }
  if (!notifier_.restored_any()) return;
  spdlog::info("restored {} observation(s) of device sessions", notifier_.restored_count());
  store_.Submit(std::move(checkpoints), scope_.Guard([this](const store::BatchResult& res) {
    if (!res.status.ok()) {
      spdlog::error("restored observations: checkpoint not recorded ({}); notifying them anyway",
                    res.status.ToString());
    }
    notifier_.RestoreCommitted();
  }));
}

// ---- open ----

bool SessionKeeper::Open(OpenRequest request, std::function<void(const OpenResult&)> done) {
  auto open = std::make_shared<PendingOpen>();
  open->key = OpenKey(request.app, request.device, request.device.empty(), request.peer);
  open->request = std::move(request);
  open->done = std::move(done);
  open->reloads_seen = reloads_;
  // One open at a time per device, so a second POST /.cs continues the session the first one
  // opens instead of running beside it (and leaving it to time out with the device's operations).
  auto [waiting, first] = opening_.try_emplace(open->key);
  if (!first && waiting->second.size() >= kMaxWaitingOpens) {
    ++counters_.opens_busy;  // the device (or someone with its token) retransmits if it is real
    return false;
  }
  if (!first) {
    waiting->second.push_back(std::move(open));
    return true;
  }
  OpenSession(std::move(open));
  return true;
}

void SessionKeeper::OpenSession(std::shared_ptr<PendingOpen> open) {
  const OpenRequest& c = open->request;
  const bool anonymous = c.device.empty();
  const int64_t now = LoopNow();
  // A new session for this address: requests of the old one are no longer duplicates, so the SDK
  // resending an old request (same message ID and token) after re-authenticating is answered anew.
  if (endpoint_) endpoint_->NewBinding(c.exchange);
  // The device's live sessions end here without running their onDisconnect operations: those move
  // to the new session (the device is alive; the SDK never registers them again by itself).
  std::vector<Session*> preds = continuity_.Predecessors(sessions_, c.app, c.device, anonymous, c.peer, now);
  Session s;
  s.id = RandomToken(16);
  std::string short_token;
  do short_token = RandomToken(8); while (sessions_.ShortTokenInUse(short_token));
  s.tokens = SessionTokens(short_token, RandomToken(32), c.credential);
  s.app = c.app;
  s.anonymous = anonymous;
  // Never the session token: ids are logged. An anonymous device keeps the id it had.
  s.device = !anonymous ? c.device : !preds.empty() ? preds.front()->device : "anon-" + RandomToken(8);
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
      open->done(OpenResult{OpenResult::Kind::kRevoked, {}, {}, {}});
      return FinishOpen(open->key);
    }
    spdlog::debug("session opened: app '{}' device '{}' at {} (kept in memory until its device uses it)", s.app,
                  s.device, s.addr.to_string());
    OpenResult opened{OpenResult::Kind::kOpened, std::string(s.tokens.short_token()), std::string(s.tokens.long_token()), {}};
    AddUnconfirmed(std::move(s));
    open->done(opened);
    return FinishOpen(open->key);
  }
  CommitOpen(std::move(open), std::move(s), std::move(continued), 0);
}

void SessionKeeper::CommitOpen(std::shared_ptr<PendingOpen> open, Session s, std::vector<Session> continued,
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
  store_.Submit(std::move(batch), scope_.Guard([this, open, attempt, s = std::move(s),
                                   continued = std::move(continued)](store::BatchResult res) mutable {
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
      open->done(OpenResult{OpenResult::Kind::kStoreError, {}, {}, res.status});
      return FinishOpen(open->key);
    }
    const int64_t now = LoopNow();
    s.last_seen_ms = now;
    s.checkpointed_ping_ms = s.last_ping_ms;  // PutSession recorded it
    OpenResult opened{OpenResult::Kind::kOpened, std::string(s.tokens.short_token()), std::string(s.tokens.long_token()), {}};
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
      open->done(OpenResult{OpenResult::Kind::kRevoked, {}, {}, {}});
      return FinishOpen(open->key);
    }
    open->done(opened);
    FinishOpen(open->key);
  }));
}

void SessionKeeper::FinishOpen(const std::string& key) {
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

void SessionKeeper::AddUnconfirmed(Session s) {
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
      if (unconfirmed_count_ <= guard_.max_unconfirmed()) break;
      ++counters_.unconfirmed_evicted;
      std::string gone = u->id;
      if (std::optional<Session> old = DetachSession(gone)) continuity_.NoteEnded(*old, LoopNow());
    }
    unconfirmed_.pop_front();  // confirmed, ended, or just evicted
  }
}

void SessionKeeper::Confirm(Session& s) {
  if (s.confirmed) return;
  s.confirmed = true;
  if (unconfirmed_count_) --unconfirmed_count_;
  Stamp(s);
  // Now, not paced: submitted before the confirming request's own batch, the record comes first.
  // (An unconfirmed session has no record write pending: PersistSession skips it.)
  persisting_.try_emplace(s.id, RecordWrite::kWriting);
  WriteRecord(s);
}

// ---- requests ----

void SessionKeeper::NoteTokenFrom(Session& s, const coap::Address& peer) {
  const int64_t now = LoopNow();
  sessions_.Touch(s, now);
  Stamp(s);
  continuity_.NoteTokenFrom(sessions_, s, peer, now);
}

bool SessionKeeper::Ping(Session& s) {
  ++counters_.heartbeats;
  int64_t now = LoopNow();
  bool steer = heartbeat_.ShouldSteerDown(s.last_ping_ms, now);
  // Right after a stall the pings read are the ones that waited in the socket: their answers may
  // reach an SDK that gave up on them, and the SDK then sends the ping again at once. Judged
  // against each other, that second ping would look on time (2.05: the interval grows). So pings
  // read while the backlog drains are judged against the last ping before the stall, not recorded
  // (unless there is none: a first ping is better than no reference at all).
  if (liveness_.RecordsPingAt(now) || !s.last_ping_ms) {
    s.last_ping_ms = now;
    Stamp(s);
  }
  if (s.last_ping_ms && !s.checkpointed_ping_ms) {
    // The store records the session's first ping at once: restored without any (after a crash of
    // the host, when the liveness file is gone), a session would judge the SDK's next ping as a
    // first one and answer 2.05 however late it is. An older recorded ping only makes the first
    // ping after a restart look later (steered: harmless), so later pings are not written.
    store::SessionRecord r;
    SetCheckpoint(&r, s, now, store::ClockNow());
    store::WriteBatch batch;
    batch.TouchSession(s.id, r.last_seen_ms, r.last_seen_boottime_ms, r.boot_id, r.last_ping_ms);
    s.checkpointed_ping_ms = s.last_ping_ms;
    store_.Submit(std::move(batch), [](const store::BatchResult&) {});
  }
  if (steer) ++counters_.steered_pings;
  return steer;
}

store::SessionRecord SessionKeeper::Rebind(Session& s, const coap::Address& peer) {
  // The long token went only to the session's address: whoever shows it got the reply there.
  if (!s.confirmed) Confirm(s);
  sessions_.Rebind(s, peer);
  sessions_.Touch(s, LoopNow());
  Stamp(s);
  // The device reopened its socket (or its NAT mapping changed): its observations move with it.
  notifier_.MoveSession(s, peer);
  return SessionRecordOf(s);
}

void SessionKeeper::OnActivity(const coap::Address& peer) {
  if (const std::vector<Session*>* bound = sessions_.Touch(peer, LoopNow()); bound && liveness_.file()) {
    for (Session* s : *bound) Stamp(*s);
  }
}

bool SessionKeeper::Kick(const std::string& device_or_session) {
  std::vector<std::string> ids;
  sessions_.ForEach([&](const Session& s) {
    if (s.id == device_or_session || s.device == device_or_session) ids.push_back(s.id);
  });
  for (const auto& id : ids) EndSession(id, EndCause::kKicked);
  return !ids.empty();
}

// ---- reload ----

size_t SessionKeeper::RevokeSession(std::string session_id) {
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

std::pair<size_t, size_t> SessionKeeper::RevokeAfterReload() {
  ++reloads_;  // opens authenticated before this are checked again when they commit
  std::vector<std::string> revoked;
  sessions_.ForEach([&](const Session& s) {
    if (!CredentialValid(s)) revoked.push_back(s.id);
  });
  size_t discarded = 0;
  for (const std::string& id : revoked) discarded += RevokeSession(id);
  return {revoked.size(), discarded};
}

// ---- liveness ----

void SessionKeeper::Checkpoint() {
  store::WriteBatch batch = liveness_.Checkpoints();
  if (batch.empty()) return;
  // Every session in the table has its record (see the invariants).
  store_.Submit(std::move(batch), [](const store::BatchResult& r) {
    if (!r.status.ok() && r.status.code != store::StatusCode::kClosed) {
      spdlog::warn("last pings of the sessions not recorded at stop: {}", r.status.ToString());
    }
  });
}

// ---- end ----

std::optional<Session> SessionKeeper::DetachSession(const std::string& session_id) {
  Session* sp = sessions_.ById(session_id);
  if (!sp) return std::nullopt;
  notifier_.DropSession(*sp);  // before the session goes: its observers link through it
  Session s = *sp;
  if (!s.confirmed && unconfirmed_count_) --unconfirmed_count_;
  liveness_.Free(s);
  sessions_.Remove(session_id);
  return s;
}

void SessionKeeper::EndSession(std::string session_id, EndCause cause, std::function<void()> done) {
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

void SessionKeeper::FireOnDisconnect(Session s, std::function<void()> done, int attempt) {
  // The moment the gateway declared the device gone is the event time of everything fired now.
  const int64_t wall = store::WallClockMs();
  const int64_t cloud_now = cloud_.CloudNowMs();
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
        cloud.push_back(cloud_.NextPushId(cloud_now));
        break;
      case store::OnDisconnectOp::Kind::kUpdate: kind = store::OpKind::kUpdate; break;
      case store::OnDisconnectOp::Kind::kRemove: kind = store::OpKind::kRemove; break;
    }
    AddTreeWrite(&batch, kind, TreePath(cloud), value, cloud_now);  // local: byte strings stay bytes
    routes.insert(res->route->name);
    batch.Append(QueueEntryFor(res->route->name, s.device, kind, TreePath(cloud), value, wall, cloud_.offset_ms()));
    ++fired;
  }
  store_.Submit(std::move(batch), scope_.Guard([this, fired, denied, attempt, s = std::move(s), routes = std::move(routes),
                                   done = std::move(done)](const store::BatchResult& res) mutable {
    if (res.status.code == store::StatusCode::kConflict && attempt < 5) {
      return FireOnDisconnect(std::move(s), std::move(done), attempt + 1);
    }
    if (res.status.ok()) {
      ++counters_.sessions_ended;
      counters_.ondisconnect_fired += fired;
      counters_.ondisconnect_denied += denied;
      notifier_.NotifyPaths(res.changed_paths);
      if (on_queued_) {
        for (const auto& r : routes) on_queued_(r);
      }
    } else if (res.status.code != store::StatusCode::kNotFound) {
      spdlog::error("onDisconnect of device '{}' not recorded: {} (the session stays in the store and "
                    "fires after the next restart)", s.device, res.status.ToString());
    }
    if (done) done();
  }));
}

// ---- records ----

store::SessionRecord SessionKeeper::SessionRecordOf(const Session& s) {
  store::SessionRecord r = ToRecord(s, sessions_.timeout_ms(), LoopNow());
  r.observers = notifier_.ObservationEntries(s);
  return r;
}

void SessionKeeper::PersistSession(const std::string& session_id) {
  Session* s = sessions_.ById(session_id);
  if (!s || !s->confirmed) return;  // ended (its record is being removed), not yet committed (Open), or memory only
  // One write per session at a time, at most kRecordWritesInFlight at once (persisting_, header).
  auto [it, first] = persisting_.try_emplace(session_id, RecordWrite::kWaiting);
  if (!first) {
    if (it->second == RecordWrite::kWriting) it->second = RecordWrite::kWritingChanged;
    return;  // a waiting one is encoded when its turn comes: it will hold this change
  }
  if (record_writes_in_flight_ >= kRecordWritesInFlight) return records_waiting_.push_back(session_id);
  it->second = RecordWrite::kWriting;
  WriteRecord(*s);
}

void SessionKeeper::WriteRecord(const Session& s) {
  assert(persisting_.count(s.id) && persisting_.at(s.id) == RecordWrite::kWriting);
  ++record_writes_in_flight_;
  store::WriteBatch batch;
  batch.PutSession(SessionRecordOf(s));
  auto written = scope_.Guard([this, session_id = s.id] {
    --record_writes_in_flight_;
    auto it = persisting_.find(session_id);
    const bool again = it != persisting_.end() && it->second == RecordWrite::kWritingChanged;
    if (it != persisting_.end()) persisting_.erase(it);
    if (again) PersistSession(session_id);
    WriteWaitingRecords(kRecordWritesInFlight);
  });
  store_.Submit(std::move(batch), [device = s.device, written](const store::BatchResult& r) mutable {
    if (!r.status.ok() && r.status.code != store::StatusCode::kClosed) {  // said also after Close
      spdlog::warn("observations of device '{}' not recorded: {} (a restart may lose them)", device,
                   r.status.ToString());
    }
    written();
  });
}

void SessionKeeper::WriteWaitingRecords(size_t max_in_flight) {
  while (record_writes_in_flight_ < max_in_flight && !records_waiting_.empty()) {
    const std::string session_id = std::move(records_waiting_.front());
    records_waiting_.pop_front();
    auto it = persisting_.find(session_id);
    if (it == persisting_.end() || it->second != RecordWrite::kWaiting) continue;
    const Session* s = sessions_.ById(session_id);
    if (!s) { persisting_.erase(it); continue; }  // ended while it waited: its record goes with it
    it->second = RecordWrite::kWriting;
    WriteRecord(*s);
  }
}

}  // namespace tether
