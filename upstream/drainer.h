// Drainer: uploads each route's outbox ops to the database as multi-path PATCHes, in seq order.
// Per route at most one request is in flight (ordering); routes share `max_parallel` request
// slots round-robin, so one route's backlog never starves another's live writes. Priority: while
// a route of higher RouteTarget::priority has work, a lower one gets a slot only every
// kPriorityShare-th turn (it drains slower, never stops).
// Outcomes: 2xx → confirm; 401 → pause the route, refresh credentials, retry (nothing dropped);
// 400/403/413 → bisect the batch until the bad op is alone, dead-letter it, continue;
// 429/5xx/other/network → exponential backoff with jitter, retry the same ops. A route backing
// off because the cloud could not be reached (no answer, 502/503/504) is woken by LinkUp(): any
// request on the link that got an answer means the cloud is back, and waiting out the backoff
// (up to backoff_max_ms) would only delay the drain.
// A request carries the auth_variable_override of its ops (OutboundOp::auth_override); reads the
// Drainer makes for itself (applied marks, the GET before a conditional write) use the gateway's
// own credential.
// Conditional ops go alone: GET with X-Firebase-ETag, then PUT with if-match while the cloud holds
// the expected value (412: read again, up to 5 rounds); a cloud holding another value is a
// conflict (Outbox::Conflict); a cloud already holding the op's value counts as delivered.
// Loop thread only. The Outbox, HttpClient and Credentials outlive the Drainer.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <uv.h>

#include "upstream/batch_builder.h"
#include "upstream/credentials.h"
#include "upstream/http_client.h"
#include "upstream/outbox.h"
#include "util/callback_scope.h"
#include "util/uv_handle.h"

namespace tether::upstream {

struct RouteTarget {
  std::string route;  // Outbox route name
  std::string root;   // database path the op paths are relative to ("" = database root)
  int priority = 0;   // higher drains first when several routes have work
};

struct DrainerOptions {
  std::string base_url;          // e.g. "https://x.firebaseio.com" (no trailing '/')
  BatchLimits limits;
  size_t max_parallel = 4;       // request slots shared by all routes
  long request_timeout_ms = 30000;
  int64_t backoff_initial_ms = 250;
  int64_t backoff_max_ms = 30000;
  int64_t poll_interval_ms = 500;        // re-peek idle routes even without Notify()
  std::function<void(bool connected)> on_link;  // a response arrived / the network failed
  // Exactly-once for ops that are not idempotent (OutboundOp::exactly_once): a batch holding one
  // is sent as a multi-path PATCH at the database root that also sets the route's applied mark,
  // <applied_path>/<route> = {"seq": batch's last seq, "queue": queue_id}, atomically with the
  // data. After Start() and after any outcome that leaves unknown whether the cloud applied such a
  // batch (network error, timeout, 429, 5xx), the mark is read before the next one, and ops up to
  // its seq (same queue_id) are confirmed instead of sent again. Empty applied_path: off.
  std::string applied_path;      // e.g. "tether-applied/<gateway>" (valid Firebase keys)
  std::string queue_id;          // names the outbox's seq space (a new store restarts seqs)
};

// One route's upload state and counters since start (the queue's own counters: store::RouteQueueStats).
struct RouteUploadStats {
  enum class State { Idle, Uploading, Backoff, AuthPaused, Stopped };
  State state = State::Idle;
  uint64_t uploaded_ops = 0, batches = 0;
  uint64_t auth_errors = 0, rejected_errors = 0, retryable_errors = 0, network_errors = 0;
  uint64_t dead_letters = 0;
  uint64_t mark_reads = 0;       // applied marks read (exactly-once ops)
  uint64_t conflicts = 0;        // conditional ops the cloud's value refused
  uint64_t already_applied = 0;  // ops confirmed from the mark instead of being sent again
  int64_t current_backoff_ms = 0;
  int last_status = 0;
  std::string last_error;
};

class Drainer {
 public:
  static constexpr int kPriorityShare = 4;

  Drainer(uv_loop_t* loop, HttpClient& http, Credentials& creds, Outbox& outbox,
          std::vector<RouteTarget> routes, DrainerOptions options);
  ~Drainer();  // cancels requests; the loop must run once more to close timers
  Drainer(const Drainer&) = delete;
  Drainer& operator=(const Drainer&) = delete;

  void Start();
  void Stop();                          // no new requests; in-flight ones are cancelled
  void Notify(const std::string& route);  // the route has new ops
  void LinkUp();  // a request on the link was answered: routes waiting for the link go now
  // Adds a route (drained at once when running) or changes an existing route's root and priority.
  void set_route(RouteTarget target);
  std::map<std::string, RouteUploadStats> stats() const;

  struct Route;

 private:
  void Schedule();
  Route* NextReady();  // removes and returns the route to get the next slot, if any may
  void Upload(Route& r);
  void ReadMark(Route& r);  // the applied mark: confirm what the cloud already has
  void Conditional(Route& r, OutboundOp op, int round);  // GET + PUT if-match
  void Finished(Route& r, std::vector<OutboundOp> ops, const Batch& batch, HttpResponse resp);
  void BackOff(Route& r, std::string why, bool unreachable = false);
  void MakeReady(Route& r);

  uv_loop_t* loop_;
  HttpClient& http_;
  Credentials& creds_;
  Outbox& outbox_;
  DrainerOptions opt_;
  std::vector<std::unique_ptr<Route>> routes_;
  std::vector<Route*> ready_;   // FIFO of routes waiting for a slot (round-robin within a priority)
  size_t in_flight_ = 0;
  bool running_ = false;
  util::UvHandle<uv_timer_t> poll_timer_;
  // Credential refreshes may complete after destruction; their callbacks do nothing then.
  util::CallbackScope scope_;
};

}  // namespace tether::upstream
