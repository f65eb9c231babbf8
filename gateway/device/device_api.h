// DeviceApi: the Wilddog-compatible device protocol (docs/device-protocol.md) on the CoAP engine.
//
// Dispatches each request (app, session token, overload shedding, control paths), answers reads
// (through the local copy), makes writes, compare-and-sets and onDisconnect registrations into
// store batches, and replies. Writes are acknowledged (2.05) only after the store committed them
// durably. The parts it owns do the rest:
// - SessionKeeper: opening, confirming, ending sessions, onDisconnect firing, restart, revocation;
// - DeviceNotifier: observations and notifications (committed tree changes, .info), checkpoints;
// - CloudStatus: whether the cloud answers, its clock, push ids.
// Cloud data comes in only through the LocalCopy (the daemon's); the cloud link reaches this
// object only as a CloudLinkListener.
//
// Thread: loop thread only. Ownership: the endpoint, the store and the local copy must outlive
// this object; callbacks arriving after Close() do nothing (util::CallbackScope). The observed-path
// and queued hooks are registrations that last as long as the util::Subscription they return. Failure: every refusal is a CoAP
// error with a short diagnostic (a store refusal: 5.03 + Max-Age, 4.00, or 5.00); nothing a
// device sends takes the daemon down.
#pragma once

#include <uv.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "device_proto/endpoint.h"
#include "gateway/device/cloud_link_listener.h"
#include "gateway/device/cloud_status.h"
#include "gateway/device/device_counters.h"
#include "gateway/device/device_notifier.h"
#include "gateway/device/device_reads.h"
#include "gateway/device/device_reply.h"
#include "gateway/device/liveness_file.h"
#include "gateway/device/local_copy.h"
#include "gateway/config/route_table.h"
#include "gateway/device/session_keeper.h"
#include "gateway/device/session_table.h"
#include "store/store.h"
#include "util/callback_scope.h"
#include "util/episode.h"

namespace tether {

class DeviceApi : public coap::Handler, public CloudLinkListener {
 public:
  // Reads cloud data through `local` (registers for its changed hook until destroyed).
  DeviceApi(uv_loop_t* loop, store::Store& store, LocalCopy& local, std::shared_ptr<const RouteTable> routes);
  ~DeviceApi() override;

  // Also re-creates the observations RestoreSessions() loaded; they are notified (with the current
  // snapshot) once their advanced Observe checkpoints are durable.
  void AttachEndpoint(coap::Endpoint* endpoint);
  // Called with a cloud path when it gains its first observer (true) or loses its last (false).
  [[nodiscard]] util::Subscription SetObservedPathHook(std::function<void(const std::string& cloud_path, bool observed)> hook) {
    return notifier_.SetPathHook(std::move(hook));
  }
  // Called with the route name after writes to that route's queue committed (wakes the uploader).
  [[nodiscard]] util::Subscription SetQueuedHook(std::function<void(const std::string& route)> hook);
  // Where every session's last datagram and ping survive a crash of the process (set before
  // RestoreSessions; without one, restored sessions get a full timeout).
  void SetLivenessFile(std::unique_ptr<LivenessFile> file) { keeper_.SetLivenessFile(std::move(file)); }
  // Loads persisted sessions. One the liveness file dates (a restart in the same boot) is declared
  // gone at max(its last datagram + session_timeout, now + RestartGraceMs); others (a new boot, no
  // file) get a full timeout from now. Their last ping comes back too (the file's, else the one
  // the store recorded), so the first ping after the restart is steered like any other. Persisted
  // observations are re-created by AttachEndpoint (gateway/device/persisted_observer.h).
  void RestoreSessions() { keeper_.RestoreSessions(); }
  // min(5 s, session_timeout): time for a live device to be heard from after a restart (while a
  // request is outstanding the SDK sends every 2-4 s, so what was lost while the gateway was
  // down is sent again).
  static int64_t RestartGraceMs(int64_t session_timeout_ms) { return SessionKeeper::RestartGraceMs(session_timeout_ms); }
  void SetRoutes(std::shared_ptr<const RouteTable> routes);  // reload: applies to new requests
  // Whether a DTLS PSK identity has a key (the daemon's PskStore, which a reload replaces). Unset:
  // every identity the handshake authenticated does.
  void SetPskKnown(std::function<bool(std::string_view identity)> known) { keeper_.SetPskKnown(std::move(known)); }
  // After a reload (SetRoutes, and the DTLS keys replaced): ends every session whose credential is
  // gone — app removed, token no longer listed, HMAC secret changed, DTLS identity without a key —
  // without running its onDisconnect operations (they are discarded: whoever held the credential
  // cannot write after its revocation); its next request gets 4.01. Then ends with a final 4.03
  // every observation the new routes no longer let its session read (one whose path now maps to
  // another cloud path follows it). Logs one line with the counts when anything was revoked.
  void RevokeAfterReload();
  // CloudLinkListener: notifies .info observers; when the cloud comes back, re-reads what
  // observers outside sync roots see. Conflicts are counted.
  void SetCloudLink(bool connected, std::optional<int64_t> offset_ms) override;
  void OnTransactionConflict() override { ++counters_.transaction_conflicts; }
  // Ends a session as if it timed out (tetherctl kick). False if unknown.
  bool Kick(const std::string& device_or_session) { return keeper_.Kick(device_or_session); }
  void Close();

  const SessionTable& sessions() const { return keeper_.sessions(); }
  size_t unconfirmed_sessions() const { return keeper_.unconfirmed_sessions(); }
  size_t session_records_waiting() const { return keeper_.records_waiting(); }
  // Remembered pings and re-open evidence dropped to stay within SessionContinuity's bounds.
  uint64_t continuity_evictions() const { return keeper_.continuity_evictions(); }
  DeviceApiCounters counters() const;
  int64_t CloudNowMs() const { return cloud_.CloudNowMs(); }
  bool cloud_connected() const { return cloud_.connected(); }
  // How long writes have been shed (device.max_write_wait) without a pause longer than twice the
  // 5.03's Max-Age, i.e. while devices retrying as told are refused again; nullopt when not.
  std::optional<uint64_t> shedding_for_ms() const;
  std::optional<int64_t> cloud_offset_ms() const { return cloud_.offset_ms(); }  // cloud - local wall clock, now

  // coap::Handler
  void OnRequest(const coap::Request& request) override;
  void OnActivity(const coap::Address& peer) override { keeper_.OnActivity(peer); }
  void OnObserverDropped(coap::ObserverId id, coap::DropReason reason) override { notifier_.OnDropped(id, reason); }
  void OnResponseFailed(coap::ExchangeId id) override;

 private:
  using Call = DeviceCall;
  // Registrations of onDisconnect operations submitted and not yet committed, per session.
  struct PendingOnDisconnect {
    uint64_t count = 0, bytes = 0;
  };

  void HandleOpen(Call& c);
  // 4.01 (4.00 for an unknown long token) with `diagnostic`, unless the source IP is over
  // device.auth_failures_per_second: then nothing is sent (a guesser or a reflector gets silence).
  void RefuseToken(Call& c, TokenRefusal why, const Diagnostic& diagnostic);
  void HandlePing(Call& c, Session* s);
  void HandleRebind(Call& c);
  void HandleOffline(Call& c, Session* s);
  void HandleWrite(Call& c, Session& s, const std::vector<std::string>& path);
  void HandleOnDisconnect(Call& c, Session& s, const std::vector<std::string>& path, bool cancel);
  // Submits the batch; answers 2.05 once it is durable, or the store's refusal.
  void CommitThenReply(Call& c, store::WriteBatch batch);
  bool DecodePayload(Call& c, Json* value);  // false: a 4.00 was sent

  uv_loop_t* loop_;
  store::Store& store_;
  LocalCopy& local_;
  coap::Endpoint* endpoint_ = nullptr;
  std::shared_ptr<const RouteTable> routes_;
  DeviceApiCounters counters_;  // each part writes its own fields
  CloudStatus cloud_;
  // The keeper only stores its reference to the notifier while both are constructed; the notifier
  // asks the keeper for sessions and record writes (ObservationOwner).
  SessionKeeper keeper_;
  DeviceNotifier notifier_;
  DeviceReplier replier_;
  DeviceReads reads_;
  std::unordered_map<std::string, PendingOnDisconnect> ondisconnect_pending_;  // session id -> in flight
  util::Episode shedding_;  // uv_now of the 5.03s sent for overload
  util::Hook<void(const std::string& route)> on_queued_;  // also run by keeper_ (onDisconnect writes)
  util::Subscription changed_;  // on local_'s changed hook
  util::CallbackScope scope_;   // guards store callbacks after Close
};

}  // namespace tether
