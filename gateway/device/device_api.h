// DeviceApi: the Wilddog-compatible device protocol (docs/device-protocol.md) on the CoAP engine.
//
// Sessions (.cs/.ping/.rst/.off), liveness, onDisconnect, data operations and observe. Writes are
// acknowledged (2.05) only after the store committed them durably; every committed tree change is
// turned into notifications for the observers it concerns. Loop thread only; the endpoint and the
// store must outlive this object.
#pragma once

#include <uv.h>

#include <array>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string_view>
#include <unordered_map>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "device_proto/endpoint.h"
#include "device_proto/source_rate_limiter.h"
#include "gateway/config/device_auth.h"
#include "gateway/device/heartbeat_policy.h"
#include "gateway/device/liveness_file.h"
#include "gateway/device/loop_stall.h"
#include "gateway/device/observer_registry.h"
#include "gateway/device/persisted_observer.h"
#include "gateway/config/route_table.h"
#include "gateway/device/session_continuity.h"
#include "gateway/device/session_table.h"
#include "gateway/model/value_codec.h"
#include "store/store.h"
#include "gateway/model/push_id.h"
#include "gateway/model/query.h"

namespace tether {

struct DeviceApiCounters {
  uint64_t sessions_opened = 0, sessions_ended = 0, detections = 0, go_offline = 0;
  uint64_t heartbeats = 0, steered_pings = 0, ondisconnect_fired = 0, ondisconnect_denied = 0;
  uint64_t writes = 0, writes_rejected = 0, notifications = 0, auth_failures = 0;
  // Compare-and-set writes refused locally (4.12) / found conflicting in the cloud at upload.
  uint64_t cas_refused = 0, transaction_conflicts = 0;
  uint64_t writes_refused_store_full = 0;  // requests answered 5.03 because the store is full
  uint64_t writes_shed = 0;  // writes answered 5.03 because commits were late (device.max_write_wait)
  // Separate (CON) responses the device never acknowledged; observations restored at startup;
  // snapshot reads / encodings done for notifications (one per observed path / distinct view).
  uint64_t responses_failed = 0, observers_restored = 0, notify_reads = 0, notify_encodes = 0;
  // Sessions a device's new session continued (its onDisconnect operations moved on, none ran);
  // loop stalls noticed and their total length (given back to every session's timeout).
  uint64_t sessions_continued = 0, loop_stalls = 0, loop_stalled_ms = 0;
  // Per-session caps: registrations refused (4.03) by device.max_observers_per_session,
  // max_ondisconnect_per_session and max_ondisconnect_bytes_per_session.
  uint64_t observers_refused = 0, ondisconnect_refused_count = 0, ondisconnect_refused_bytes = 0;
  // Reloads: sessions ended because their credential is gone (their onDisconnect operations
  // discarded, not run), and observations ended with 4.03 because the routes no longer allow them.
  uint64_t sessions_revoked = 0, ondisconnect_discarded = 0, observations_revoked = 0;
  std::map<std::string, uint64_t> requests;  // "GET 2.05" -> count (DeviceApi::counters() fills it)
  // Token refusals (4.01/4.00 for a token the request cannot use), by TokenRefusal; [0] answered,
  // [1] dropped unanswered over device.auth_failures_per_second for the source IP.
  uint64_t token_refusals[4][2] = {};
  // POST /.cs left unanswered: over device.opens_per_second for the source IP / another open of the
  // same device already waiting. Unconfirmed sessions (Session::confirmed) dropped: evicted for
  // room / silent past the session timeout.
  uint64_t opens_rate_limited = 0, opens_busy = 0, unconfirmed_evicted = 0, unconfirmed_expired = 0;
  uint64_t auth_log_suppressed = 0;  // failed-authentication log lines folded into a count
};

// Why a request's token was refused (the index of DeviceApiCounters::token_refusals).
enum class TokenRefusal { kUnknownSession, kBoundElsewhere, kBadAuthToken, kUnknownLongToken };

class DeviceApi : public coap::Handler {
 public:
  DeviceApi(uv_loop_t* loop, store::Store& store, std::shared_ptr<const RouteTable> routes);
  ~DeviceApi() override;

  // Also re-creates the observations RestoreSessions() loaded; they are notified (with the current
  // snapshot) once their advanced Observe checkpoints are durable.
  void AttachEndpoint(coap::Endpoint* endpoint);
  // Reads a cloud path from the cloud (rest_query: Query::RestParams, may be empty); done(nullopt)
  // on failure or timeout. Without a reader (local-only mode) the local copy is authoritative.
  // With one, reads follow docs/device-protocol.md: held values (sync roots after their first full
  // sync, remembered cloud results) answer locally, others are read from the cloud while it is
  // reachable, merged into the local copy (the pending writes stay on top) and answered from it.
  using CloudReader = std::function<void(const std::string& cloud_path, const std::string& rest_query,
                                         std::function<void(std::optional<Json>)> done)>;
  void SetCloudReader(CloudReader reader, std::vector<std::string> sync_roots) {
    cloud_reader_ = std::move(reader);
    sync_roots_ = std::move(sync_roots);
  }
  // Called with a cloud path when it gains its first observer (true) or loses its last (false).
  void SetObservedPathHook(std::function<void(const std::string& cloud_path, bool observed)> hook) {
    observers_.SetPathHook(std::move(hook));
  }
  // Queue seqs being uploaded whose effect cloud data may already include (see
  // store::WriteBatch::TreeSetFromCloud). CloudBridge sets it; null = none.
  void SetUploadsInFlight(std::function<std::vector<uint64_t>()> source) { uploads_in_flight_ = std::move(source); }
  // Called with the route name after writes to that route's queue committed (wakes the uploader).
  void SetQueuedHook(std::function<void(const std::string& route)> hook) { on_queued_ = std::move(hook); }
  // Where every session's last datagram and ping survive a crash of the process (set before
  // RestoreSessions; without one, restored sessions get a full timeout).
  void SetLivenessFile(std::unique_ptr<LivenessFile> file) { liveness_file_ = std::move(file); }
  // Loads persisted sessions. One the liveness file dates (a restart in the same boot) is declared
  // gone at max(its last datagram + session_timeout, now + RestartGraceMs); others (a new boot, no
  // file) get a full timeout from now. Their last ping comes back too (the file's, else the one
  // the store recorded), so the first ping after the restart is steered like any other. Persisted
  // observations are re-created by AttachEndpoint (gateway/device/persisted_observer.h).
  void RestoreSessions();
  // min(5 s, session_timeout): time for a live device to be heard from after a restart (while a
  // request is outstanding the SDK sends every 2-4 s, so what was lost while the gateway was
  // down is sent again).
  static int64_t RestartGraceMs(int64_t session_timeout_ms);
  void SetRoutes(std::shared_ptr<const RouteTable> routes);  // reload: applies to new requests
  // Whether a DTLS PSK identity has a key (the daemon's PskStore, which a reload replaces). Unset:
  // every identity the handshake authenticated does.
  void SetPskKnown(std::function<bool(std::string_view identity)> known) { psk_known_ = std::move(known); }
  // After a reload (SetRoutes, and the DTLS keys replaced): ends every session whose credential is
  // gone — app removed, token no longer listed, HMAC secret changed, DTLS identity without a key —
  // without running its onDisconnect operations (they are discarded: whoever held the credential
  // cannot write after its revocation); its next request gets 4.01. Then ends with a final 4.03
  // every observation the new routes no longer let its session read (one whose path now maps to
  // another cloud path follows it). Logs one line with the counts when anything was revoked.
  void RevokeAfterReload();
  // Cloud link state and clock estimate (cloud ms - local wall ms); notifies .info observers.
  void SetCloudLink(bool connected, std::optional<int64_t> offset_ms);
  // The uploader found a compare-and-set write conflicting with the cloud (counted).
  void OnTransactionConflict() { ++counters_.transaction_conflicts; }
  // Committed tree changes from elsewhere (cloud sync) reach observers through here.
  void OnTreeChanged(const std::vector<std::string>& changed_paths);
  // Ends a session as if it timed out (tetherctl kick). False if unknown.
  bool Kick(const std::string& device_or_session);
  void Close();

  const SessionTable& sessions() const { return sessions_; }
  size_t unconfirmed_sessions() const { return unconfirmed_count_; }
  // Remembered pings and re-open evidence dropped to stay within SessionContinuity's bounds.
  uint64_t continuity_evictions() const { return continuity_.evictions(); }
  DeviceApiCounters counters() const;
  int64_t CloudNowMs() const;
  bool cloud_connected() const { return cloud_connected_; }
  // How long writes have been shed (device.max_write_wait) without a pause longer than twice the
  // 5.03's Max-Age, i.e. while devices retrying as told are refused again; nullopt when not.
  std::optional<uint64_t> shedding_for_ms() const;
  std::optional<int64_t> cloud_offset_ms() const;  // cloud - local wall clock, now

  // coap::Handler
  void on_request(const coap::Request& request) override;
  void on_activity(const coap::Address& peer) override;
  void on_observer_dropped(coap::ObserverId id, coap::DropReason reason) override;
  void on_response_failed(coap::ExchangeId id) override;

 private:
  struct Call;  // one request being answered
  enum class EndCause { kTimeout, kGoOffline, kKicked };
  struct PendingOpen;  // a POST /.cs waiting for an earlier one of the same device
  // Registrations of onDisconnect operations submitted and not yet committed, per session.
  struct PendingOnDisconnect {
    uint64_t count = 0, bytes = 0;
  };

  const DeviceAuthenticator& AuthenticatorFor(const std::string& app) const;
  void HandleOpen(Call& c);
  // Opens the session (continuing the device's live ones, SessionContinuity) once no other open
  // of the same device is in flight; then starts the next waiting one.
  void OpenSession(std::shared_ptr<PendingOpen> open);
  // Commits the new session, its predecessors' removal and their onDisconnect operations moved to
  // it (in registration order) in one batch; retries when an operation was registered meanwhile.
  void CommitOpen(std::shared_ptr<PendingOpen> open, Session s, std::vector<Session> continued, int attempt);
  void FinishOpen(const std::string& key);
  // Adds a session no store record backs yet (Session::confirmed false); evicts the oldest such
  // sessions beyond device.max_unconfirmed_sessions.
  void AddUnconfirmed(Session s);
  // Its device used it: from now on it is persisted like any other.
  void Confirm(Session& s);
  // 4.01 (4.00 for an unknown long token) with `diagnostic`, unless the source IP is over
  // device.auth_failures_per_second: then nothing is sent (a guesser or a reflector gets silence).
  void RefuseToken(Call& c, TokenRefusal why, uint8_t code, const std::string& diagnostic);
  // At most one line per kAuthLogEveryMs; the rest are counted and summed up in one line.
  void LogAuthFailure(const Call& c);
  void FlushAuthLog(int64_t now);
  void HandlePing(Call& c, Session* s);
  void HandleRebind(Call& c);
  void HandleOffline(Call& c, Session* s);
  void HandleInfo(Call& c, const std::vector<std::string>& path);
  void HandleRead(Call& c, Session& s, const std::vector<std::string>& path);
  bool InSyncRoot(const std::string& cloud_path) const;
  bool Holds(const std::string& cloud_path, const std::string& query) const;  // complete locally
  // True (and noted) when the held result of path + query was not read from the cloud within
  // kRefreshIntervalMs.
  bool RefreshDue(const std::string& cloud_path, const std::string& query);
  std::vector<uint64_t> InFlight() const;
  // The local copy when it is complete or holds anything at all; else 5.03 + Max-Age.
  void ReplyHeld(Call& c, const std::string& cloud, bool held, const std::string& diagnostic);
  // A GET with a query: from the local tree when it holds the result completely (sync root after
  // its first sync, remembered cloud result, or no cloud configured), else from the cloud.
  void HandleQuery(Call& c, Session& s, const std::string& cloud, const std::string& dev_path,
                   const std::string& route, std::shared_ptr<const Query> q);
  void AnswerQuery(Call& c, Session& s, const std::string& cloud, const std::string& dev_path,
                   const std::string& route, std::shared_ptr<const Query> q, const Json& result);
  // Reads the value (FetchValue) or the query's result (FetchQuery) from the cloud, writes it into
  // the local tree with the pending writes on top and marks it complete; a query's result also
  // removes the local children it proves gone (StaleKeys). done(what the local copy now answers),
  // done(nullopt) when the cloud did not answer. Observers hear the change. A sync root that got
  // its full sync meanwhile is not overwritten (its stream's copy is as new).
  void FetchValue(const std::string& cloud, std::function<void(std::optional<Json>)> done);
  void FetchQuery(const std::string& cloud, std::shared_ptr<const Query> q,
                  std::function<void(std::optional<Json>)> done);
  void HandleWrite(Call& c, Session& s, const std::vector<std::string>& path);
  void HandleOnDisconnect(Call& c, Session& s, const std::vector<std::string>& path, bool cancel);
  // 4.03 (and true) when s already has device.max_observers_per_session observations and this one
  // would not replace one of them.
  bool RefuseOverObserverCap(Call& c, const Session& s, const std::string& dev_path);
  // False when the configuration in force would not open s again (RevokeAfterReload).
  bool CredentialValid(const Session& s) const;
  // Ends s without running its onDisconnect operations; returns how many were discarded.
  size_t RevokeSession(std::string session_id);  // by value: callers pass Session::id of the session it removes

  // Takes the id by value: callers often pass Session::id of the session this removes.
  void EndSession(std::string session_id, EndCause cause, std::function<void()> done = {});
  // Removes the session from the table and ends its observations; returns it (nullopt: unknown).
  std::optional<Session> DetachSession(const std::string& session_id);
  // The loop clock, after giving any loop stall it reveals back to every session.
  int64_t LoopNow();
  // Sweeps expired sessions after the loop has read the sockets (a datagram that arrived before a
  // deadline keeps its session alive even if the tick ran first).
  void ArmSweep();
  static void OnSweep(uv_check_t* h);
  // Records s's last datagram and ping in the liveness file (at every change).
  void Stamp(Session& s);
  // Writes the liveness fields of every session's record (a graceful stop).
  void Checkpoint();
  // Runs the ended session's onDisconnect operations; retries when an operation registered just
  // before the end was still being committed (the store refuses to drop it).
  void FireOnDisconnect(Session s, std::function<void()> done, int attempt);
  void CountAnswer(uint8_t method, uint8_t code);
  void Reply(Call& c, uint8_t code, std::string payload = {}, std::optional<uint32_t> max_age = {},
             std::optional<uint32_t> size1 = {});
  void ReplyError(Call& c, uint8_t code, const std::string& diagnostic, std::optional<uint32_t> max_age = {},
                  std::optional<uint32_t> size1 = {});
  void ReplyStoreStatus(Call& c, const store::Status& st);
  // Submits the batch; answers 2.05 once it is durable, or the store's refusal.
  void CommitThenReply(Call& c, store::WriteBatch batch);
  bool DecodePayload(Call& c, Json* value);  // false: a 4.00 was sent
  void Unobserve(Call& c, const Session& s, const std::string& device_path);
  // The cloud came back: re-read what observers outside sync roots see (queries and values).
  void RefreshObservedQueries();
  // Registers o; a registration of the same session at the same path + query goes away.
  // Observations are persisted with their session (PersistSession) whenever one is added or
  // removed, on rebinding, and every kSeqCheckpointEvery notifications of the session.
  void AddObserver(Observer o);
  void RemoveObserver(coap::ObserverId id);
  void CountNotification(const std::string& session_id);
  store::SessionRecord SessionRecordOf(const Session& s);
  // The session's observation entries are encoded again at its next write, with the engine's
  // current Observe values and addresses (every kSeqCheckpointEvery notifications, on /.rst).
  void ReencodeObservers(Session& s);
  void PersistSession(const std::string& session_id);
  void ReleaseRestored();  // restored observations may be notified now
  store::QueueEntry QueueEntryFor(const std::string& route, const std::string& device, store::OpKind kind,
                                  const std::string& tree_path, const Json& value, int64_t wall_ms) const;
  std::string Encode(const Json& v, bool json) const;
  void NotifyPaths(const std::vector<std::string>& cloud_paths);
  void NotifyInfo();
  Json InfoValue(const std::string& leaf) const;
  static void OnLivenessTick(uv_timer_t* t);

  uv_loop_t* loop_;
  store::Store& store_;
  coap::Endpoint* endpoint_ = nullptr;
  std::shared_ptr<const RouteTable> routes_;
  std::map<std::string, std::unique_ptr<DeviceAuthenticator>> auth_;
  SessionTable sessions_;
  ObserverRegistry observers_;
  HeartbeatPolicy heartbeat_;
  PushIdGenerator push_ids_;
  bool cloud_connected_ = false;
  std::optional<int64_t> cloud_boot_offset_ms_;  // cloud - CLOCK_BOOTTIME: wall clock steps leave it right
  int64_t wall_anchor_ms_ = 0;                   // wall - CLOCK_BOOTTIME when it was last set
  uv_timer_t liveness_;
  std::unique_ptr<LivenessFile> liveness_file_;
  int64_t boottime_minus_loop_ms_ = 0;  // CLOCK_BOOTTIME - loop clock, as of the last liveness tick
  int64_t pings_judged_from_ms_ = 0;    // pings before this (a stall's backlog) do not become last_ping
  uv_idle_t sweep_idle_;    // while armed: the loop polls without blocking, then OnSweep runs
  uv_check_t sweep_check_;
  bool sweep_armed_ = false;
  LoopStallDetector stall_;
  SessionContinuity continuity_;
  std::map<std::string, std::vector<std::shared_ptr<PendingOpen>>> opening_;  // open key -> waiting
  std::unordered_map<std::string, PendingOnDisconnect> ondisconnect_pending_;  // session id -> in flight
  // Sessions whose record is being written: true when it changed again meanwhile (written once
  // more when the write commits), so a burst of registrations costs one write per commit.
  std::unordered_map<std::string, bool> persisting_;
  std::function<bool(std::string_view)> psk_known_;
  uint64_t reloads_ = 0;  // RevokeAfterReload calls
  DeviceApiCounters counters_;
  coap::SourceRateLimiter opens_limiter_, refusals_limiter_;  // per source IP (DeviceConfig)
  size_t max_unconfirmed_ = 4096;
  size_t unconfirmed_count_ = 0;
  std::deque<std::string> unconfirmed_;  // ids in opening order; confirmed or ended ones are skipped
  int64_t auth_logged_at_ms_ = INT64_MIN / 2;  // loop clock of the last failed-auth line
  uint64_t auth_log_suppressed_ = 0;           // lines not written since
  uint64_t shed_first_ms_ = 0, shed_last_ms_ = 0;  // uv_now: the shedding episode's first / latest 5.03
  // Answers by method (GET, POST, PUT, DELETE, FETCH, PATCH, other) and code: an array increment
  // per answer; counters() turns them into DeviceApiCounters::requests.
  static constexpr size_t kOtherMethod = 6;
  std::array<std::array<uint64_t, 256>, 7> answered_{};
  std::function<void(const std::string& route)> on_queued_;
  CloudReader cloud_reader_;
  std::vector<std::string> sync_roots_;
  std::function<std::vector<uint64_t>()> uploads_in_flight_;
  std::map<std::string, uint64_t> refreshed_ms_;  // path + '?' + query -> uv_now of the last cloud read
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);  // guards store callbacks after Close
  // Restart: observations loaded by RestoreSessions (session id, record) until AttachEndpoint;
  // then the re-created ones are held (not notified) until their advanced checkpoints committed.
  std::vector<std::pair<std::string, PersistedObserver>> restored_;
  std::vector<coap::ObserverState> restored_denied_;  // no longer readable: ended with 4.03
  std::unordered_set<coap::ObserverId> restoring_;
  bool restore_committed_ = false;
};

}  // namespace tether
