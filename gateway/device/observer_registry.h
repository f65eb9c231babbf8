// ObserverRegistry: which device observes which cloud path, for notification fan-out.
//
// Paths are cloud paths without leading '/' ("" is the root). A change at path P concerns the
// observers of P, of every ancestor of P and of every descendant of P; Affected() finds them with
// O(depth) hash lookups plus one ordered range scan. Each observer remembers a digest of the last
// snapshot it was sent so unchanged snapshots are not re-sent. Loop thread only.
//
// Invariants:
// - A session has at most one observer per device path (path + query).
// - by_session_ lists each session's observers in registration order. Finding one by device path
//   scans that list: O(n) id lookups for a session with n (256 at most by default), as writing
//   its record copies n entries anyway. Counting is O(1). A list costs one 32 B block for the
//   common one or two observations, where a map per session cost ~250 B.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "device_proto/endpoint.h"
#include "gateway/model/query.h"
#include "util/callback_scope.h"

namespace tether {

struct Observer {
  coap::ObserverId id = 0;
  std::string session_id;
  std::string path;          // cloud path observed
  std::string device_path;   // as the device named it (for unsubscribe by path)
  bool json = false;         // device asked for application/json
  bool native = false;       // send Content-Format (the SDK gets none, as in the traces)
  uint64_t last_digest = 0;  // digest of the last snapshot sent
  std::shared_ptr<const Query> query;  // set: the device observes this query's result at path
  std::string route;                   // route that serves path (for cloud refreshes of queries)
  // Its entry in the session's store record (EncodeObserver), kept only by a session with many
  // observations (DeviceNotifier::kKeepEntriesFrom), so that writing the record does not encode
  // every observation again; empty: not kept. A kept entry's Observe value may lag the engine's
  // by the notifications since it was encoded (DeviceNotifier re-encodes them all before that
  // reaches kSeqCheckpointEvery, and when the session moves).
  std::string persisted;
};

class ObserverRegistry {
 public:
  // Registers o (an id already known is replaced). One registration per session and device path
  // (path + query): a session observing the same again with a new token (the SDK does after
  // re-authenticating) replaces the older ones, whose ids are returned for the caller to cancel.
  std::vector<coap::ObserverId> Add(Observer o);
  void Remove(coap::ObserverId id);
  Observer* Find(coap::ObserverId id);
  // The observer of this session at this device path, if any.
  Observer* FindBySessionPath(const std::string& session_id, const std::string& device_path);
  std::vector<coap::ObserverId> OfSession(const std::string& session_id) const;
  size_t CountOfSession(const std::string& session_id) const;

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
  util::Hook<void(const std::string&, bool)> on_path_;
  std::unordered_map<coap::ObserverId, Observer> by_id_;
  std::map<std::string, std::vector<coap::ObserverId>> by_path_;  // ordered: descendant ranges
  std::unordered_map<std::string, std::vector<coap::ObserverId>> by_session_;  // session id -> its observers
};

// 64-bit FNV-1a of a snapshot's encoding.
uint64_t SnapshotDigest(const std::string& bytes);

}  // namespace tether
