// Fault-suite harness: a fleet of SDK devices writing to a real tetherd from their own threads
// while a suite injects faults, a record of what the gateway answered, and an audit of what
// reached tests/fakecloud against that record. Every invariant check is counted in a Tally, which
// prints the suite's one summary line "<suite>: N passed, N failed".
// Code: fault_harness.cc (Tally, the gateway's config), fault_fleet.cc (Fleet, FleetDevice),
// cloud_audit.cc (CloudAudit).
//
// Each device d<i> writes under devices/d<i>/ (route "devs" -> cloud fleet/d<i>/), with a value k
// that grows with every request it sends:
//   push  POST  devices/d<i>/log   {"v":k,"at":{".sv":"timestamp"}[,"pad":...]}
//   set   PUT   devices/d<i>/state {"v":k}
//   count PATCH devices/d<i>       {"count":{".sv":{"increment":1}},"seen/k<k>":true}
// and each of its sessions registers onDisconnect POST devices/d<i>/gone {"s":<token>,"at":ts}.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/integration/sdk_client.h"
#include "tests/upstream/fakecloud_process.h"

namespace tether::testing {

// The test's own wall clock (never faked), in ms.
int64_t TrueWallMs();
bool SoakMode();  // TETHER_SOAK is set

class Tally {
 public:
  explicit Tally(std::string suite) : suite_(std::move(suite)) {}
  ~Tally() { Print(); }
  // Counts one invariant check; a failed one is also a gtest failure (the first 20 are described).
  bool Check(bool ok, const std::string& what);
  void Print();
  int passed() const { return passed_; }
  int failed() const { return failed_; }

 private:
  std::string suite_;
  int passed_ = 0, failed_ = 0;
  bool printed_ = false;
};

struct GatewayOptions {
  uint16_t port = 0;          // CoAP port (FreePort() when 0)
  std::string cloud_url;      // upstream.url
  std::string heartbeat = "2s", session_timeout = "4s";
  std::string store_yaml;     // extra lines under `store:` (each "  key: value\n")
  bool sync_config = false;   // a route "cfg": config/** read-only, synced from the cloud
};
std::string FaultGatewayYaml(GatewayOptions* o);  // fills o->port
// Polls .info/serverTimeOffset through `probe` (an open session) for up to 10 s: true once the
// gateway reports skew_ms within tolerance_ms.
bool WaitForCloudOffset(SdkClient& probe, int64_t skew_ms, int64_t tolerance_ms);

enum class Outcome { kAcked, kUnknown, kRefused };

struct WriteRecord {
  enum Kind { kPush, kSet, kCount } kind = kPush;
  uint64_t k = 0;
  Outcome outcome = Outcome::kUnknown;
  std::string code;       // "2.05", "5.03", ... ("timeout")
  std::string push_key;   // acknowledged pushes
  std::optional<uint32_t> max_age;
  std::string diagnostic; // payload of an error reply
  int64_t sent_ms = 0, done_ms = 0;  // TrueWallMs
  std::chrono::steady_clock::time_point sent, done;
};

struct SessionRecord {
  std::string token;
  Outcome on_disconnect = Outcome::kUnknown;  // registration of its "gone" push
  enum class End { kOpen, kOffline, kSilent, kLost } end = End::kOpen;
  // When the gateway should fire its onDisconnect (TrueWallMs; 0 = not known).
  int64_t fire_from_ms = 0, fire_to_ms = 0;
  int64_t opened_ms = 0;  // TrueWallMs when its POST /.cs was sent
  // The first of the device's unanswered POST /.cs before this one (else opened_ms): an open the
  // gateway committed but could not answer (kill -9) may have continued the previous session.
  int64_t first_attempt_ms = 0;
  // Its .off went unanswered three times: ended then, or (the gateway never saw it) continued by
  // the device's next open before its deadline.
  bool off_unanswered = false;
  std::chrono::steady_clock::time_point end_sent, end_done;  // kOffline: the .off exchange
};

// A session that fell silent and was followed by the same device's next POST /.cs well before
// its timeout was continued, not ended (docs/device-protocol.md, "Which session a POST /.cs
// replaces"): its onDisconnect operation moved to `next`, whose acknowledged registration at the
// same path replaced it, so it never fires.
bool ContinuedBy(const SessionRecord& s, const SessionRecord* next);
// An unanswered open of the device before `s`'s deadline, or the device's next open after an
// unanswered .off, may have continued it unseen (and the device's next registration then
// replaced its operation): it fires at most once.
bool MaybeContinuedBy(const SessionRecord& s, const SessionRecord* next);

struct LoadOptions {
  int depth = 1;                            // requests in flight per device
  std::chrono::milliseconds think{10};      // pause between steps
  double end_session_chance = 0;            // per step: go offline or fall silent, then reopen
  int pad_bytes = 0;                        // padding in pushes
  double mix_push = 0.5, mix_set = 0.3;     // the rest are counts
  int max_steps = 0;                        // per device; 0 = until stopped
  uint32_t seed = 1;
};

class FleetDevice {
 public:
  FleetDevice(int index, uint16_t port, std::chrono::milliseconds request_timeout, int64_t session_timeout_ms);
  const std::string& id() const { return id_; }
  SdkClient& client() { return *client_; }
  void SetRetransmit(std::chrono::milliseconds first, int max);

  // Opens a session if it has none, or probes one in doubt; false while the gateway is unreachable.
  bool EnsureSession();
  // `depth` pipelined writes; kinds drawn from the mix.
  void Step(const LoadOptions& o, std::mt19937& rng);
  // Ends the current session: .off, or silence (a new source port; the old session times out).
  void EndSession(bool go_offline);
  bool has_session() const { return !token_.empty(); }

  const std::vector<WriteRecord>& writes() const { return writes_; }
  const std::vector<SessionRecord>& sessions() const { return sessions_; }
  int64_t session_timeout_ms() const { return session_timeout_ms_; }

 private:
  void Classify(WriteRecord& w, const CoapReply& r);
  bool Open();

  std::string id_;
  uint16_t port_;
  std::unique_ptr<SdkClient> client_;
  std::chrono::milliseconds request_timeout_;
  std::chrono::milliseconds retransmit_first_{0};
  int max_retransmit_ = 0;
  int64_t session_timeout_ms_;
  std::string token_;
  bool suspect_ = false;      // a request went unanswered: the session may be gone
  int64_t last_sent_ms_ = 0;  // TrueWallMs of the latest datagram from this port
  int64_t first_unanswered_open_ms_ = 0;  // since the last answered open; 0 = none
  uint64_t next_k_ = 0;
  std::vector<WriteRecord> writes_;
  std::vector<SessionRecord> sessions_;
};

class Fleet {
 public:
  Fleet(int devices, uint16_t port, std::chrono::milliseconds request_timeout, int64_t session_timeout_ms);
  ~Fleet() { Stop(); }
  void Start(const LoadOptions& o);  // one thread per device, until Stop() or max_steps
  void Stop();
  void Join();                       // waits for max_steps to be reached
  // Ends every open session: even devices go offline, odd ones fall silent.
  void EndAll();
  size_t Count(Outcome o) const;
  std::string CodeHistogram() const;
  std::string LatencySummary() const;  // "p50 X ms, p99 Y ms, max Z ms" of answered writes
  std::vector<std::unique_ptr<FleetDevice>>& devices() { return devices_; }
  const std::vector<std::unique_ptr<FleetDevice>>& devices() const { return devices_; }

 private:
  std::vector<std::unique_ptr<FleetDevice>> devices_;
  std::vector<std::thread> threads_;
  std::atomic<bool> stop_{false};
};

struct AuditOptions {
  int64_t cloud_skew_ms = 0;             // the fake cloud's clock minus the test's
  int64_t timestamp_tolerance_ms = 0;    // > 0: check {".sv":"timestamp"} of acknowledged pushes
  bool check_fire_time = false;          // also the "at" of onDisconnect pushes (fire windows)
  bool check_push_id_time = false;       // push ids encode the cloud time of the write
};

class CloudAudit {
 public:
  CloudAudit(const upstream::testing::FakeCloud& cloud, AuditOptions o) : cloud_(cloud), o_(o) {}
  // Polls the cloud until every acknowledged write and every due onDisconnect is there; gives up
  // once `stall` passes without one more of them arriving.
  bool WaitDelivered(const Fleet& fleet, std::chrono::milliseconds stall);
  // Final dump + write log against the fleet's records.
  void Verify(const Fleet& fleet, Tally& tally);
  std::string Missing() const { return missing_; }  // what WaitDelivered last waited for

 private:
  size_t Delivered(const Fleet& fleet, const nlohmann::json& root, bool* all);  // how many are there
  const upstream::testing::FakeCloud& cloud_;
  AuditOptions o_;
  std::string missing_;
};

}  // namespace tether::testing
