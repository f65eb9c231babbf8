// PersistedObserver: one observation of a device session as the store keeps it
// (store::SessionRecord::observers), so that it survives a gateway restart. The device does not
// know the gateway restarted: it keeps listening on its token, so the gateway re-creates the
// observation in the engine (coap::Endpoint::RestoreObserver) and goes on notifying it.
//
// Observe sequence numbers: the engine's value is checkpointed here (wire.seq) when the session
// record is written, at least every kSeqCheckpointEvery notifications of the session. A restored
// observation continues at checkpoint + kSeqRestartJump: ahead of anything sent before the
// restart (fewer than kSeqCheckpointEvery notifications since the checkpoint, plus the few of a
// checkpoint still committing), and less than 2^23 ahead, so RFC 7641 §3.4 serial arithmetic (the
// SDK's "is newer" test) holds.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "device_proto/endpoint.h"
#include "gateway/model/query.h"

namespace tether {

inline constexpr uint32_t kSeqCheckpointEvery = 1u << 20;
inline constexpr uint32_t kSeqRestartJump = 1u << 22;

struct PersistedObserver {
  std::string device_path;  // as the device named it (unsubscribe key; "path?query" for queries)
  std::string cloud_path;   // observed cloud path ("" = root), or the .info entry
  std::shared_ptr<const Query> query;  // set: observes this query's result
  bool json = false;
  bool native = false;
  coap::ObserverState wire;  // peer, socket, token, checkpointed Observe value, resource
};

// JSON text; "" for no observers.
std::string EncodeObservers(const std::vector<PersistedObserver>& observers);
// One entry of that text, and the text of entries encoded one by one (EncodeObservers ==
// JoinObservers of each EncodeObserver): a session's record is rebuilt from the entries it keeps,
// without encoding every observation again.
std::string EncodeObserver(const PersistedObserver& observer);
std::string JoinObservers(const std::vector<const std::string*>& entries);
// Entries that cannot be read are skipped and counted in *skipped (if given).
std::vector<PersistedObserver> DecodeObservers(std::string_view blob, size_t* skipped = nullptr);

}  // namespace tether
