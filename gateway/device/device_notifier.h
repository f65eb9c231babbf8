// DeviceNotifier: the observations of device sessions and the notifications they get.
//
// Holds every observation (ObserverRegistry), turns each committed tree change (NotifyPaths) and
// each change of the cloud link (.info, NotifyInfo) into notifications through the engine, keeps
// the observations' Observe checkpoints in their sessions' store records, and re-creates the
// observations persisted before a restart.
//
// Thread: loop thread only. Ownership: DeviceApi owns it, next to the session keeper (the
// ObservationOwner: its sessions, and the writer of their records); the store and the engine
// must outlive it. Failure: a notification the engine cannot send ends its observation; a record
// write that fails is logged by the owner (a restart may then lose the observation).
//
// Invariants:
// - One read of the tree per observed path and one encoding per distinct query per NotifyPaths,
//   however many observers share them; an observer hears a snapshot only when its digest changed.
// - A session's observations are written with its record whenever one is added or removed, when
//   the session moves, and every kSeqCheckpointEvery notifications (each entry re-encoded first),
//   so a restored Observe value (+ kSeqRestartJump) is ahead of anything sent before the restart.
// - Restored observations are held (not notified) until their advanced checkpoints committed;
//   then each hears the current snapshot once.
#pragma once

#include <memory>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "device_proto/endpoint.h"
#include "gateway/device/cloud_status.h"
#include "gateway/device/device_counters.h"
#include "gateway/device/observer_registry.h"
#include "gateway/device/persisted_observer.h"
#include "gateway/config/route_table.h"
#include "gateway/device/session_table.h"
#include "store/store.h"

namespace tether {

// What the notifier needs of the sessions' keeper.
class ObservationOwner {
 public:
  virtual ~ObservationOwner() = default;
  virtual Session* FindSession(const std::string& session_id) = 0;
  // Writes the session's record again (with its observations' entries, ObservationEntries).
  virtual void PersistSession(const std::string& session_id) = 0;
};

class DeviceNotifier {
 public:
  DeviceNotifier(store::Store& store, ObservationOwner& owner, const CloudStatus& cloud, DeviceApiCounters& counters);

  // Called with a cloud path when it gains its first observer (true) or loses its last (false).
  [[nodiscard]] util::Subscription SetPathHook(std::function<void(const std::string& cloud_path, bool observed)> hook) {
    return observers_.SetPathHook(std::move(hook));
  }
  // Re-creates the observations Restore() kept; those the routes no longer allow end with 4.03.
  void AttachEndpoint(coap::Endpoint* endpoint);

  // Restart: the persisted observations of one session, checked against the routes in force and
  // advanced by kSeqRestartJump; returns what its record must hold now (committed by the caller,
  // who then calls RestoreCommitted).
  std::vector<PersistedObserver> Restore(const std::string& session_id, const std::string& app,
                                         const std::string& device, std::vector<PersistedObserver> persisted,
                                         const RouteTable& routes);
  bool restored_any() const { return !restored_.empty() || !restored_denied_.empty(); }
  size_t restored_count() const { return restored_.size(); }
  void RestoreCommitted();

  // Registers o (o.session set) as observing cloud_path; a registration of the same session at
  // the same device path goes away.
  void Add(Observer o, std::string cloud_path);
  void Remove(coap::ObserverId id);
  // The engine dropped an observation (device gone, snapshot too large): forget it.
  void OnDropped(coap::ObserverId id, coap::DropReason reason);
  // Ends the session's observation of device_path (if any) at the engine and here.
  void Unobserve(const Session& s, const std::string& device_path);
  // The session ends: its observations end without a record write (the record goes with it).
  // Called before the session leaves the table (their list runs through it).
  void DropSession(Session& s);
  // The session's device moved to `peer`: its observations follow (entries re-encoded).
  void MoveSession(Session& s, const coap::Address& peer);
  // s has max observations and device_path would not replace one of them.
  bool AtCap(const Session& s, const std::string& device_path, uint32_t max);
  // A session with at least this many observations keeps their entries once encoded.
  static constexpr size_t kKeepEntriesFrom = 8;
  // The entries of the session's observations for its record: encoded now, or copied when the
  // session keeps them (kKeepEntriesFrom).
  std::string ObservationEntries(const Session& s);
  // Cloud paths and queries observed outside .info (one per distinct pair).
  std::vector<std::pair<std::string, std::shared_ptr<const Query>>> ObservedReads();
  // After a reload: ends with a final 4.03 every observation the routes no longer allow its
  // session; one whose path now maps elsewhere follows it. Returns how many ended.
  size_t RevokeAfterReload(const RouteTable& routes);

  void NotifyPaths(const std::vector<std::string>& cloud_paths);
  void NotifyInfo();
  Json InfoValue(const std::string& leaf) const;

 private:
  void ReleaseRestored();  // restored observations may be notified now
  void CountNotification(Session& s);
  void Reencode(Session& s);
  void EndWith403(coap::ObserverId id);

  store::Store& store_;
  ObservationOwner& owner_;
  const CloudStatus& cloud_;
  DeviceApiCounters& counters_;
  coap::Endpoint* endpoint_ = nullptr;
  ObserverRegistry observers_;
  // Restart: observations loaded by Restore (session id, record) until AttachEndpoint; then the
  // re-created ones are held (not notified) until their advanced checkpoints committed.
  std::vector<std::pair<std::string, PersistedObserver>> restored_;
  std::vector<coap::ObserverState> restored_denied_;  // no longer readable: ended with 4.03
  std::unordered_set<coap::ObserverId> restoring_;
  bool restore_committed_ = false;
};

}  // namespace tether
