// ObserverRegistry: which device observes which cloud path, for notification fan-out.
//
// Paths are cloud paths without leading '/' ("" is the root). A change at path P concerns the
// observers of P, of every ancestor of P and of every descendant of P; Affected() finds them with
// O(depth) hash lookups plus one ordered range scan. Each observer remembers a digest of the last
// snapshot it was sent so unchanged snapshots are not re-sent. Loop thread only.
//
// Invariants:
// - A session has at most one observer per device path (path + query).
// - Each observation is one record, its node in by_id_. Nothing in it is copied elsewhere:
//   - its cloud path is the key of its by_path_ entry (Observer::path() points there);
//   - its session is the Session itself, which lists its observers through them
//     (Session::first_observer, then Observer::next_of_session_), in registration order.
//   Finding one by device path walks that list: O(n) for a session with n (256 at most by
//   default), as writing its record copies n entries anyway. (Memory per observing device:
//   docs/benchmarks.md, "Memory per device".)
// - An observer's session outlives it: the session's owner ends them (DropSession) before it
//   removes the session.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "device_proto/endpoint.h"
#include "gateway/device/session_table.h"
#include "gateway/model/query.h"
#include "util/callback_scope.h"

namespace tether {

struct Observer {
  coap::ObserverId id = 0;
  Session* session = nullptr;  // its session (see the invariants)
  std::string device_path;     // as the device named it (for unsubscribe by path)
  bool json = false;           // device asked for application/json
  bool native = false;         // send Content-Format (the SDK gets none, as in the traces)
  uint64_t last_digest = 0;    // digest of the last snapshot sent
  std::shared_ptr<const Query> query;  // set: the device observes this query's result at path
  // Its entry in the session's store record (EncodeObserver), kept only by a session with many
  // observations (DeviceNotifier::kKeepEntriesFrom), so that writing the record does not encode
  // every observation again; null: not kept. A kept entry's Observe value may lag the engine's
  // by the notifications since it was encoded (DeviceNotifier re-encodes them all before that
  // reaches kSeqCheckpointEvery, and when the session moves).
  std::unique_ptr<std::string> persisted;

  // The cloud path observed; valid once registered (ObserverRegistry::Add).
  const std::string& path() const { return *path_; }

 private:
  friend class ObserverRegistry;
  const std::string* path_ = nullptr;    // the key of its ObserverRegistry::by_path_ entry
  coap::ObserverId next_of_session_ = 0;  // the session's next observer; 0: the last
};

class ObserverRegistry {
 public:
  // Registers o as observing cloud `path` (an id already known is replaced). One registration
  // per session and device path (path + query): a session observing the same again with a new
  // token (the SDK does after re-authenticating) replaces the older ones, whose ids are returned
  // for the caller to cancel. o.session must be set.
  std::vector<coap::ObserverId> Add(Observer o, std::string path);
  void Remove(coap::ObserverId id);
  Observer* Find(coap::ObserverId id);
  // The observer of this session at this device path, if any.
  Observer* FindBySessionPath(const Session& session, const std::string& device_path);
  // The session's observers in registration order.
  std::vector<coap::ObserverId> OfSession(const Session& session) const;
  size_t CountOfSession(const Session& session) const;

  // Distinct observed paths affected by a change at `changed`, each with its observers.
  std::map<std::string, std::vector<coap::ObserverId>> Affected(const std::string& changed) const;
  std::map<std::string, std::vector<coap::ObserverId>> All() const;

  size_t size() const { return by_id_.size(); }
  // Called with a cloud path when it gains its first observer (true) or loses its last (false),
  // while the returned Subscription lives.
  [[nodiscard]] util::Subscription SetPathHook(std::function<void(const std::string& path, bool observed)> hook) {
    return on_path_.Set(std::move(hook));
  }

 private:
  void Unlink(const Observer& o);  // from its session's list

  util::Hook<void(const std::string&, bool)> on_path_;
  std::unordered_map<coap::ObserverId, Observer> by_id_;
  std::map<std::string, std::vector<coap::ObserverId>> by_path_;  // ordered: descendant ranges
};

// 64-bit FNV-1a of a snapshot's encoding.
uint64_t SnapshotDigest(const std::string& bytes);

}  // namespace tether
