// SessionKeeper: the life of device sessions — open, confirm, rebind, ping, end, fire their
// onDisconnect operations, restore them after a restart, revoke them after a reload — and the
// guard around them (per-source rate limits, unconfirmed sessions, failed-authentication log).
//
// Thread: loop thread only. Ownership: DeviceApi owns it, next to the notifier (which it tells
// when a session's observations end or move, and which tells it when a session's record must be
// written again); the store, the engine and the liveness file outlive its use of them; callbacks
// arriving after Close() do nothing. Failure: a store refusal while opening leaves the
// predecessors as they were (the open is answered with the refusal); onDisconnect operations not
// recorded stay in the store and fire after the next restart; record writes that fail are logged.
//
// Invariants:
// - Every confirmed session in the table has its store record: it is added once its PutSession
//   committed and removed before the batch that deletes the record is submitted.
// - An unconfirmed session has no record, no liveness slot and no operations; the oldest go first
//   beyond device.max_unconfirmed_sessions.
// - Opens of one device (OpenKey) run one at a time; at most kMaxWaitingOpens wait.
// - Ending a session removes its record and appends its operations' writes in one batch: they run
//   exactly once, also across crashes.
// - Deadlines, loop stalls and the liveness file are SessionLiveness's (see its invariants).
#pragma once

#include <uv.h>

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "device_proto/endpoint.h"
#include "gateway/device/cloud_status.h"
#include "gateway/device/device_counters.h"
#include "gateway/device/device_notifier.h"
#include "gateway/device/heartbeat_policy.h"
#include "gateway/device/liveness_file.h"
#include "gateway/config/route_table.h"
#include "gateway/device/session_continuity.h"
#include "gateway/device/session_guard.h"
#include "gateway/device/session_liveness.h"
#include "gateway/device/session_table.h"
#include "store/store.h"
#include "util/callback_scope.h"

namespace tether {

class SessionKeeper : public ObservationOwner {
 public:
  enum class EndCause { kTimeout, kGoOffline, kKicked };
  // A POST /.cs that authenticated.
  struct OpenRequest {
    std::string app;
    std::string device;      // empty: anonymous (an id is generated, or taken over from its predecessor)
    std::string credential;  // DeviceAuthenticator::Fingerprint of the token (empty over DTLS)
    coap::Address peer;
    coap::ExchangeId exchange = 0;
  };
  struct OpenResult {
    enum class Kind { kOpened, kRevoked, kStoreError } kind = Kind::kOpened;
    std::string short_token, long_token;  // kOpened
    store::Status status;                 // kStoreError
  };

  // `notifier` is only stored here (DeviceApi constructs it right after this object).
  // `on_queued` runs with the route name after onDisconnect writes to its queue committed.
  SessionKeeper(uv_loop_t* loop, store::Store& store, DeviceNotifier& notifier, CloudStatus& cloud,
                DeviceApiCounters& counters, const DeviceConfig& device,
                std::function<void(const std::string& route)> on_queued);
  ~SessionKeeper() override;
  void Close();  // records every session's last ping, stops the timers

  void SetRoutes(std::shared_ptr<const RouteTable> routes);
  void SetPskKnown(std::function<bool(std::string_view identity)> known) { guard_.SetPskKnown(std::move(known)); }
  void SetLivenessFile(std::unique_ptr<LivenessFile> file) { liveness_.SetFile(std::move(file)); }
  void AttachEndpoint(coap::Endpoint* endpoint);
  // See DeviceApi::RestoreSessions.
  void RestoreSessions();
  static int64_t RestartGraceMs(int64_t session_timeout_ms);

  // ---- the guard (SessionGuard), on the loop clock ----
  // False when the source IP is over device.opens_per_second / auth_failures_per_second.
  bool TakeOpen(const coap::Address& peer) { return guard_.TakeOpen(peer, LoopNow()); }
  bool TakeRefusal(const coap::Address& peer) { return guard_.TakeRefusal(peer, LoopNow()); }
  AuthOutcome Authenticate(const std::string& app, const std::string& payload, const coap::Address& peer,
                           const std::string& identity) const {
    return guard_.Authenticate(app, payload, peer, identity);
  }
  void LogAuthFailure(const coap::Address& peer, const std::string& app) { guard_.LogAuthFailure(peer, app, LoopNow()); }

  // ---- requests ----
  // Opens the session (continuing the device's live ones, SessionContinuity); done runs once.
  // False (done not run) when another open of the device already waits.
  bool Open(OpenRequest request, std::function<void(const OpenResult&)> done);
  // The token came from another address than the session's: a sign of life and evidence for
  // SessionContinuity, nothing more.
  void NoteTokenFrom(Session& s, const coap::Address& peer);
  // Its device used it: from now on it is persisted like any other.
  void Confirm(Session& s);
  // Records a ping; true when it came later than the heartbeat target (answer: steer down).
  bool Ping(Session& s);
  // /.rst: the session moves to peer (its observations follow); returns its record to commit.
  store::SessionRecord Rebind(Session& s, const coap::Address& peer);
  void OnActivity(const coap::Address& peer);
  // Takes the id by value: callers often pass Session::id of the session this removes.
  void EndSession(std::string session_id, EndCause cause, std::function<void()> done = {});
  bool Kick(const std::string& device_or_session);  // false if unknown
  // Ends every session whose credential the configuration in force no longer accepts, without
  // running its onDisconnect operations. Returns {sessions, operations discarded}.
  std::pair<size_t, size_t> RevokeAfterReload();

  // ObservationOwner
  Session* FindSession(const std::string& session_id) override { return sessions_.ById(session_id); }
  void PersistSession(const std::string& session_id) override;

  SessionTable& sessions() { return sessions_; }
  const SessionTable& sessions() const { return sessions_; }
  size_t unconfirmed_sessions() const { return unconfirmed_count_; }
  // Sessions whose changed record waits for a write slot (kRecordWritesInFlight in flight).
  size_t records_waiting() const { return records_waiting_.size(); }
  static constexpr size_t kRecordWritesInFlight = 1024;
  uint64_t continuity_evictions() const { return continuity_.evictions(); }
  // The loop clock, after giving any loop stall it reveals back to every session.
  int64_t LoopNow() { return liveness_.Now(); }

 private:
  struct PendingOpen;
  void OpenSession(std::shared_ptr<PendingOpen> open);
  // Commits the new session, its predecessors' removal and their onDisconnect operations moved to
  // it (in registration order) in one batch; retries when an operation was registered meanwhile.
  void CommitOpen(std::shared_ptr<PendingOpen> open, Session s, std::vector<Session> continued, int attempt);
  void FinishOpen(const std::string& key);
  void AddUnconfirmed(Session s);
  bool CredentialValid(const Session& s) const { return guard_.CredentialValid(s, *routes_); }
  size_t RevokeSession(std::string session_id);  // returns the operations discarded
  std::optional<Session> DetachSession(const std::string& session_id);
  void FireOnDisconnect(Session s, std::function<void()> done, int attempt);
  store::SessionRecord SessionRecordOf(const Session& s);
  void Stamp(Session& s) { liveness_.Stamp(s); }  // s's last datagram and ping into the liveness file
  void Checkpoint();  // every session's liveness fields into its record (a graceful stop)

  uv_loop_t* loop_;
  store::Store& store_;
  DeviceNotifier& notifier_;
  CloudStatus& cloud_;
  DeviceApiCounters& counters_;
  coap::Endpoint* endpoint_ = nullptr;
  std::shared_ptr<const RouteTable> routes_;
  SessionGuard guard_;
  std::function<void(const std::string& route)> on_queued_;
  uint64_t reloads_ = 0;  // RevokeAfterReload calls
  SessionTable sessions_;
  HeartbeatPolicy heartbeat_;
  SessionContinuity continuity_;
  SessionLiveness liveness_;  // after sessions_ and continuity_, which it adjusts
  std::map<std::string, std::vector<std::shared_ptr<PendingOpen>>> opening_;  // open key -> waiting
  // Record writes (PersistSession): at most kRecordWritesInFlight go to the store at once; more
  // sessions wait in order, each once, and their record is encoded when its turn comes.
  // - A burst of observe registrations (100k devices re-observing after an outage) keeps ~1 KB
  //   of batch per session in flight otherwise, and leaves the freed space spread through the
  //   heap (docs/benchmarks.md, "Memory per device").
  // - A session's record changed while its write is in flight is written once more after it.
  enum class RecordWrite : uint8_t { kWaiting, kWriting, kWritingChanged };
  void WriteRecord(const Session& s);
  void WriteWaitingRecords(size_t max_in_flight);  // in order, while fewer are in flight
  std::unordered_map<std::string, RecordWrite> persisting_;  // session id -> its record write
  std::deque<std::string> records_waiting_;                  // kWaiting ones, in order
  size_t record_writes_in_flight_ = 0;
  size_t unconfirmed_count_ = 0;
  std::deque<std::string> unconfirmed_;  // ids in opening order; confirmed or ended ones are skipped
  util::CallbackScope scope_;  // guards store callbacks after Close
};

}  // namespace tether
