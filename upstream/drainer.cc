#include "upstream/drainer.h"

#include <algorithm>
#include <climits>
#include <random>

#include "upstream/db_url.h"
#include "util/percent_encoding.h"

namespace tether::upstream {

struct Drainer::Route {
  RouteTarget target;
  RouteUploadStats stats;
  bool queued = false;                // in ready_
  HttpClient::RequestId request = 0;  // non-zero while a PATCH is in flight
  int attempt = 0;                    // consecutive failures, for backoff
  size_t split_limit = 0;             // 0 = none; else max ops per batch while bisecting
  uint64_t split_until_seq = 0;       // bisecting ends once ops up to here are settled
  bool mark_known = false;            // no exactly-once batch of unknown outcome since the mark was read
  bool once_in_flight = false;        // the request in flight carries the applied mark
  util::UvHandle<uv_timer_t> timer;   // backoff
  int passed_over = 0;                // slots given to higher-priority routes while this one waited
  bool unreachable = false;           // backing off because the cloud did not answer (LinkUp wakes it)
  Drainer* owner = nullptr;
};

Drainer::Drainer(uv_loop_t* loop, HttpClient& http, Credentials& creds, Outbox& outbox,
                 std::vector<RouteTarget> routes, DrainerOptions options)
    : loop_(loop), http_(http), creds_(creds), outbox_(outbox), opt_(std::move(options)) {
  for (auto& t : routes) set_route(std::move(t));
  poll_timer_ = util::UvTimer(loop_, this);
}

Drainer::~Drainer() {
  Stop();  // the timers close with their routes and members
}

void Drainer::Start() {
  running_ = true;
  for (auto& r : routes_) {
    r->stats.state = RouteUploadStats::State::Idle;
    r->mark_known = false;  // a batch may have been applied just before a crash or Stop()
    MakeReady(*r);
  }
  uv_timer_start(poll_timer_, [](uv_timer_t* t) {
    auto* self = static_cast<Drainer*>(t->data);
    for (auto& r : self->routes_)
      if (r->stats.state == RouteUploadStats::State::Idle) self->MakeReady(*r);
    self->Schedule();
  }, opt_.poll_interval_ms, opt_.poll_interval_ms);
  Schedule();
}

void Drainer::Stop() {
  running_ = false;
  uv_timer_stop(poll_timer_);
  for (auto& r : routes_) {
    uv_timer_stop(r->timer);
    if (r->request) http_.Cancel(r->request);
    r->request = 0;
    r->queued = false;
    r->stats.state = RouteUploadStats::State::Stopped;
  }
  ready_.clear();
  in_flight_ = 0;
}

void Drainer::set_route(RouteTarget target) {
  for (auto& r : routes_) {
    if (r->target.route == target.route) {
      r->target = std::move(target);  // a batch in flight keeps the URL it was sent to
      return;
    }
  }
  auto r = std::make_unique<Route>();
  r->target = std::move(target);
  r->owner = this;
  r->timer = util::UvTimer(loop_, r.get());
  routes_.push_back(std::move(r));
  if (running_) {
    MakeReady(*routes_.back());
    Schedule();
  }
}

void Drainer::Notify(const std::string& route) {
  for (auto& r : routes_)
    if (r->target.route == route && r->stats.state == RouteUploadStats::State::Idle) MakeReady(*r);
  Schedule();
}

void Drainer::LinkUp() {
  if (!running_) return;
  bool woke = false;
  for (auto& r : routes_) {
    if (r->stats.state != RouteUploadStats::State::Backoff || !r->unreachable) continue;
    uv_timer_stop(r->timer);
    r->unreachable = false;
    r->stats.state = RouteUploadStats::State::Idle;
    r->stats.current_backoff_ms = 0;
    MakeReady(*r);
    woke = true;
  }
  if (woke) Schedule();
}

std::map<std::string, RouteUploadStats> Drainer::stats() const {
  std::map<std::string, RouteUploadStats> out;
  for (auto& r : routes_) out[r->target.route] = r->stats;
  return out;
}

void Drainer::MakeReady(Route& r) {
  if (!running_ || r.queued || r.request) return;
  r.queued = true;
  ready_.push_back(&r);
}

void Drainer::Schedule() {
  while (running_ && in_flight_ < opt_.max_parallel && !ready_.empty()) {
    Route* r = NextReady();
    if (!r) return;  // only lower-priority routes wait; a completion calls Schedule() again
    r->queued = false;
    Upload(*r);
  }
}

Drainer::Route* Drainer::NextReady() {
  int top = INT_MIN;  // highest priority with work: waiting for a slot or uploading
  for (auto& r : routes_)
    if (r->queued || r->request) top = std::max(top, r->target.priority);
  for (size_t i = 0; i < ready_.size(); ++i) {
    Route* r = ready_[i];
    if (r->target.priority < top && r->passed_over < kPriorityShare - 1) continue;
    ready_.erase(ready_.begin() + static_cast<long>(i));
    r->passed_over = 0;
    for (Route* waiting : ready_)
      if (waiting->target.priority < r->target.priority) waiting->passed_over++;
    return r;
  }
  return nullptr;
}

void Drainer::Upload(Route& r) {
  size_t max_ops = r.split_limit ? r.split_limit : opt_.limits.max_ops;
  std::vector<OutboundOp> ops = outbox_.Peek(r.target.route, max_ops);
  if (ops.empty()) {
    r.stats.state = RouteUploadStats::State::Idle;
    return;
  }
  if (ops[0].kind == OutboundOp::Kind::Conditional) return Conditional(r, std::move(ops[0]), 0);
  for (size_t i = 1; i < ops.size(); ++i) {
    if (ops[i].kind == OutboundOp::Kind::Conditional || ops[i].root != ops[0].root) {  // a batch ends before it
      ops.resize(i);
      break;
    }
  }
  BatchLimits limits = opt_.limits;
  limits.max_ops = max_ops;
  Batch batch = BuildBatch(ops, limits);
  if (batch.op_count == 0) {  // the first op's payload is not JSON: the cloud would refuse it too
    r.stats.dead_letters++;
    r.stats.last_error = "payload is not valid JSON";
    outbox_.DeadLetter(ops[0], 0, "payload is not valid JSON");
    MakeReady(r);
    return;
  }
  ops.resize(batch.op_count);
  const std::string root = ops[0].root.value_or(r.target.root);
  bool once = !opt_.applied_path.empty() && !(batch.replace_root && root.empty()) &&
              std::any_of(ops.begin(), ops.end(), [](const OutboundOp& op) { return op.exactly_once; });
  if (once && !r.mark_known) return ReadMark(r);
  HttpRequest req;
  req.method = batch.replace_root ? "PUT" : "PATCH";
  if (once) {  // the same writes with absolute keys, plus the mark, at the database root
    nlohmann::json body = nlohmann::json::object();
    if (batch.replace_root) {
      body[root] = std::move(batch.body);
    } else {
      for (auto& [k, v] : batch.body.items()) body[root.empty() ? k : root + "/" + k] = std::move(v);
    }
    body[opt_.applied_path + "/" + r.target.route] = {{"seq", batch.last_seq}, {"queue", opt_.queue_id}};
    batch.body = std::move(body);
    req.method = "PATCH";
    req.fresh_connection = true;
  }
  r.once_in_flight = once;
  std::string query = "print=silent";
  if (std::string q = creds_.Query(); !q.empty()) query += "&" + q;
  if (!ops[0].auth_override.empty()) query += "&auth_variable_override=" + util::PercentEncode(ops[0].auth_override);
  req.url = DatabaseUrl(opt_.base_url, once ? std::string() : root, query);
  req.headers = {"Content-Type: application/json"};
  req.body = batch.body.dump();
  req.timeout_ms = opt_.request_timeout_ms;
  r.stats.state = RouteUploadStats::State::Uploading;
  ++in_flight_;
  uint64_t last_seq = batch.last_seq;
  size_t count = batch.op_count;
  r.request = http_.Start(std::move(req), [this, &r, ops = std::move(ops), last_seq,
                                           count](HttpResponse resp) mutable {
    r.request = 0;
    --in_flight_;
    Batch summary;
    summary.last_seq = last_seq;
    summary.op_count = count;
    Finished(r, std::move(ops), summary, std::move(resp));
    Schedule();
  });
}

void Drainer::ReadMark(Route& r) {
  HttpRequest req;
  req.url = DatabaseUrl(opt_.base_url, opt_.applied_path + "/" + r.target.route, creds_.Query());
  req.timeout_ms = opt_.request_timeout_ms;
  r.stats.state = RouteUploadStats::State::Uploading;
  r.stats.mark_reads++;
  ++in_flight_;
  r.request = http_.Start(std::move(req), [this, &r](HttpResponse resp) {
    r.request = 0;
    --in_flight_;
    if (opt_.on_link) opt_.on_link(!resp.transport_error);
    auto mark = nlohmann::json::parse(resp.body, nullptr, false);
    if (resp.transport_error || resp.status != 200 || mark.is_discarded()) {
      if (resp.status == 401) creds_.Refresh([](bool) {});
      r.stats.network_errors += resp.transport_error ? 1 : 0;
      BackOff(r, "reading the applied mark: " + (resp.transport_error ? resp.error : "HTTP " + std::to_string(resp.status)),
               resp.transport_error);
      return Schedule();
    }
    r.mark_known = true;
    r.attempt = 0;  // the cloud answers: the next failure backs off from the start
    r.stats.last_error.clear();
    if (mark.is_object() && mark.value("queue", "") == opt_.queue_id && mark.contains("seq") &&
        mark["seq"].is_number_unsigned()) {
      uint64_t applied = mark["seq"].get<uint64_t>();
      std::vector<OutboundOp> head = outbox_.Peek(r.target.route, opt_.limits.max_ops);
      size_t n = 0;
      while (n < head.size() && head[n].seq <= applied) ++n;
      if (n > 0) {  // the cloud applied them before we learnt it: never send them twice
        outbox_.Confirmed(r.target.route, head[n - 1].seq);
        r.stats.already_applied += n;
        r.stats.uploaded_ops += n;
      }
    }
    r.stats.state = RouteUploadStats::State::Idle;
    MakeReady(r);
    Schedule();
  });
}

void Drainer::Conditional(Route& r, OutboundOp op, int round) {
  auto payload = nlohmann::json::parse(op.json, nullptr, false);
  if (!payload.is_object() || !payload.contains("value")) {
    r.stats.dead_letters++;
    outbox_.DeadLetter(op, 0, "conditional payload is not {expect, value}");
    return MakeReady(r);
  }
  if (op.event_time_ms) ResolveServerTimestamps(payload["value"], *op.event_time_ms);
  std::string path = op.root.value_or(r.target.root);
  if (!op.path.empty()) path += (path.empty() ? "" : "/") + op.path;
  // The read is the gateway's (it implements the compare); the write is evaluated as the device.
  HttpRequest get;
  get.url = DatabaseUrl(opt_.base_url, path, creds_.Query());
  get.headers = {"X-Firebase-ETag: true"};
  get.timeout_ms = opt_.request_timeout_ms;
  r.stats.state = RouteUploadStats::State::Uploading;
  ++in_flight_;
  auto fail = [this, &r](const HttpResponse& resp, const std::string& what) {
    if (resp.status == 401) creds_.Refresh([](bool) {});
    if (resp.transport_error) r.stats.network_errors++;
    else r.stats.retryable_errors++;
    BackOff(r, what + ": " + (resp.transport_error ? resp.error : "HTTP " + std::to_string(resp.status)),
             resp.transport_error);
    Schedule();
  };
  r.request = http_.Start(std::move(get), [this, &r, op = std::move(op), payload = std::move(payload), path,
                                           round, fail](HttpResponse resp) mutable {
    r.request = 0;
    --in_flight_;
    if (opt_.on_link) opt_.on_link(!resp.transport_error);
    auto cloud = nlohmann::json::parse(resp.body, nullptr, false);
    auto etag = resp.headers.find("etag");
    if (resp.transport_error || resp.status != 200 || cloud.is_discarded() || etag == resp.headers.end()) {
      return fail(resp, "reading before a conditional write");
    }
    const nlohmann::json expect = payload.value("expect", nlohmann::json());
    if (cloud == payload["value"] && cloud != expect) {  // ours, applied before a lost reply
      outbox_.Confirmed(r.target.route, op.seq);
      r.stats.uploaded_ops++;
    } else if (cloud != expect) {
      r.stats.conflicts++;
      outbox_.Conflict(op, cloud.dump());
    } else {
      HttpRequest put;
      put.method = payload["value"].is_null() ? "DELETE" : "PUT";
      std::string query = "print=silent";
      if (std::string q = creds_.Query(); !q.empty()) query += "&" + q;
      if (!op.auth_override.empty()) query += "&auth_variable_override=" + util::PercentEncode(op.auth_override);
      put.url = DatabaseUrl(opt_.base_url, path, query);
      put.headers = {"Content-Type: application/json", "if-match: " + etag->second};
      if (!payload["value"].is_null()) put.body = payload["value"].dump();
      put.timeout_ms = opt_.request_timeout_ms;
      put.fresh_connection = true;
      ++in_flight_;
      r.request = http_.Start(std::move(put), [this, &r, op, round, fail](HttpResponse resp) mutable {
        r.request = 0;
        --in_flight_;
        if (opt_.on_link) opt_.on_link(!resp.transport_error);
        int s = resp.transport_error ? 0 : resp.status;
        if (s >= 200 && s < 300) {
          outbox_.Confirmed(r.target.route, op.seq);
          r.stats.uploaded_ops++;
          r.attempt = 0;
          r.stats.last_error.clear();
        } else if (s == 412 && round < 4) {
          return Conditional(r, std::move(op), round + 1);  // changed under us: compare again
        } else if (s == 412) {
          r.stats.conflicts++;
          outbox_.Conflict(op, resp.body);
        } else if (s == 400 || s == 403) {
          r.stats.dead_letters++;
          outbox_.DeadLetter(op, s, "HTTP " + std::to_string(s) + ": " + resp.body.substr(0, 200));
        } else {
          return fail(resp, "conditional write");
        }
        r.stats.state = RouteUploadStats::State::Idle;
        MakeReady(r);
        Schedule();
      });
      return;
    }
    r.attempt = 0;
    r.stats.state = RouteUploadStats::State::Idle;
    MakeReady(r);
    Schedule();
  });
}

void Drainer::Finished(Route& r, std::vector<OutboundOp> ops, const Batch& batch,
                       HttpResponse resp) {
  r.stats.last_status = resp.status;
  if (opt_.on_link) opt_.on_link(!resp.transport_error);
  int code = resp.transport_error ? 0 : resp.status;
  bool outcome_known = (code >= 200 && code < 300) || code == 400 || code == 401 || code == 403 || code == 413;
  if (r.once_in_flight && !outcome_known) r.mark_known = false;  // it may have been applied
  if (resp.transport_error) {
    r.stats.network_errors++;
    return BackOff(r, resp.error, true);
  }
  int s = resp.status;
  if (s >= 200 && s < 300) {
    outbox_.Confirmed(r.target.route, batch.last_seq);
    r.stats.uploaded_ops += batch.op_count;
    r.stats.batches++;
    r.attempt = 0;
    r.stats.current_backoff_ms = 0;
    r.stats.last_error.clear();  // an error of the past no longer describes the route
    if (r.split_limit && batch.last_seq >= r.split_until_seq) r.split_limit = 0;
    r.stats.state = RouteUploadStats::State::Idle;
    return MakeReady(r);
  }
  std::string why = "HTTP " + std::to_string(s) + ": " + resp.body.substr(0, 200);
  if (s == 401) {
    r.stats.auth_errors++;
    r.stats.last_error = why;
    r.stats.state = RouteUploadStats::State::AuthPaused;
    creds_.Refresh(scope_.Guard([this, &r](bool changed) {
      if (!running_ || r.stats.state != RouteUploadStats::State::AuthPaused) return;
      if (changed) {
        r.attempt = 0;
        r.stats.state = RouteUploadStats::State::Idle;
        MakeReady(r);
        Schedule();
      } else {
        BackOff(r, "credential refresh gave no new credential");
        r.stats.state = RouteUploadStats::State::AuthPaused;
      }
    }));
    return;
  }
  if (s == 400 || s == 403 || s == 413) {
    r.stats.rejected_errors++;
    r.stats.last_error = why;
    if (ops.size() == 1) {
      r.stats.dead_letters++;
      outbox_.DeadLetter(ops[0], s, why);
    } else {
      r.split_limit = std::max<size_t>(1, ops.size() / 2);
      r.split_until_seq = std::max(r.split_until_seq, batch.last_seq);
    }
    r.stats.state = RouteUploadStats::State::Idle;
    return MakeReady(r);
  }
  r.stats.retryable_errors++;
  BackOff(r, why, s == 502 || s == 503 || s == 504);  // a proxy or load balancer without its cloud
}

void Drainer::BackOff(Route& r, std::string why, bool unreachable) {
  r.unreachable = unreachable;
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  int shift = std::min(r.attempt, 20);
  ++r.attempt;
  int64_t cap = std::min(opt_.backoff_max_ms, opt_.backoff_initial_ms << shift);
  int64_t delay = cap / 2 + static_cast<int64_t>(rng() % static_cast<uint64_t>(cap / 2 + 1));
  r.stats.current_backoff_ms = delay;
  r.stats.last_error = std::move(why);
  r.stats.state = RouteUploadStats::State::Backoff;
  uv_timer_start(r.timer, [](uv_timer_t* t) {
    auto* route = static_cast<Route*>(t->data);
    route->stats.state = RouteUploadStats::State::Idle;
    route->owner->MakeReady(*route);
    route->owner->Schedule();
  }, static_cast<uint64_t>(delay), 0);
}

}  // namespace tether::upstream
