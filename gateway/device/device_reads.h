// DeviceReads: device GETs — values, queries, .info — and the observations they open.
//
// Reads follow docs/device-protocol.md, "Reads and the local copy": without a cloud (local-only
// mode) the tree is authoritative; with one, what the tree holds completely (a sync root after
// its first full sync, a remembered cloud result) answers at once, anything else is read from the
// cloud while it answers — through the LocalCopy, which writes the result into the tree with the
// pending writes on top — and answered from the tree; offline, what is held, else 5.03 + Max-Age.
// An observation answers its first snapshot here and is registered with the DeviceNotifier.
//
// Thread: loop thread only. Ownership: DeviceApi owns it; the store, the local copy, the notifier,
// the session keeper (ObservationOwner) and the replier outlive it; cloud answers arriving after
// Close() are dropped. Failure: a cloud that does not answer gets the held value or a 5.03; a
// device over device.max_observers_per_session gets 4.03.
//
// Invariants:
// - A remembered result answered from the tree is re-read from the cloud in the background at
//   most every 30 s per path and query (LocalCopy::RefreshDue); sync roots never (their stream).
// - An observed query is named by path + query: the same path may be observed with others.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "gateway/device/cloud_status.h"
#include "gateway/device/device_counters.h"
#include "gateway/device/device_notifier.h"
#include "gateway/device/device_reply.h"
#include "gateway/device/local_copy.h"
#include "gateway/config/route_table.h"
#include "store/store.h"
#include "util/callback_scope.h"

namespace tether {

class DeviceReads {
 public:
  DeviceReads(store::Store& store, LocalCopy& local, DeviceNotifier& notifier, ObservationOwner& owner,
              const CloudStatus& cloud, DeviceReplier& replier, DeviceApiCounters& counters);

  void SetRoutes(std::shared_ptr<const RouteTable> routes) { routes_ = std::move(routes); }
  void AttachEndpoint(coap::Endpoint* endpoint) { endpoint_ = endpoint; }
  void Close() { scope_.Close(); }

  // GET /.info/connected|serverTimeOffset|serverTime of session s (also observe / unobserve).
  void HandleInfo(DeviceCall& c, Session& s, const std::vector<std::string>& path);
  // GET of a data path (c.query: a query), also observe / unobserve.
  void HandleRead(DeviceCall& c, Session& s, const std::vector<std::string>& path);
  // The cloud came back: re-read what observers outside sync roots see (queries and values).
  void RefreshObserved();

 private:
  // The local copy when it is complete or holds anything at all; else 5.03 + Max-Age.
  void ReplyHeld(DeviceCall& c, const std::string& cloud, bool held, const std::string& diagnostic);
  void HandleQuery(DeviceCall& c, Session& s, const std::string& cloud, const std::string& dev_path,
                   std::shared_ptr<const Query> q);
  void AnswerQuery(DeviceCall& c, Session& s, const std::string& cloud, const std::string& dev_path,
                   std::shared_ptr<const Query> q, const Json& result);
  // Answers 2.05 with the first snapshot (body) and registers o as observing cloud_path when the
  // engine took it (returns its id; 0: not registered).
  coap::ObserverId RespondObserve(DeviceCall& c, Observer o, std::string cloud_path, const std::string& body);
  // 4.03 (and true) when s already has device.max_observers_per_session observations and this one
  // would not replace one of them.
  bool RefuseOverObserverCap(DeviceCall& c, const Session& s, const std::string& dev_path);

  store::Store& store_;
  LocalCopy& local_;
  DeviceNotifier& notifier_;
  ObservationOwner& owner_;
  const CloudStatus& cloud_;
  DeviceReplier& replier_;
  DeviceApiCounters& counters_;
  coap::Endpoint* endpoint_ = nullptr;
  std::shared_ptr<const RouteTable> routes_;
  util::CallbackScope scope_;  // guards cloud answers after Close
};

}  // namespace tether
