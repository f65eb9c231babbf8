#include "upstream/sync_stream.h"

#include <algorithm>
#include <random>

#include "upstream/db_url.h"

namespace tether::upstream {
namespace {
uv_timer_t* NewTimer(uv_loop_t* loop, void* data) {
  auto* t = new uv_timer_t;
  uv_timer_init(loop, t);
  t->data = data;
  return t;
}
void CloseTimer(uv_timer_t* t) {
  uv_timer_stop(t);
  uv_close(reinterpret_cast<uv_handle_t*>(t),
           [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
}
}  // namespace

SyncStream::SyncStream(uv_loop_t* loop, HttpClient& http, Credentials& creds, SyncStreamOptions opt,
                       OnEvent on_event, OnCancelled on_cancelled, OnLink on_link)
    : loop_(loop), http_(http), creds_(creds), opt_(std::move(opt)),
      on_event_(std::move(on_event)), on_cancelled_(std::move(on_cancelled)),
      on_link_(std::move(on_link)), parser_([this](const SseEvent& e) { on_sse(e); }),
      watchdog_(NewTimer(loop, this)), retry_(NewTimer(loop, this)) {}

SyncStream::~SyncStream() {
  stop();
  CloseTimer(watchdog_);
  CloseTimer(retry_);
}

void SyncStream::start() {
  if (running_) return;
  running_ = true;
  attempt_ = 0;
  connect();
  uint64_t period = static_cast<uint64_t>(std::max<int64_t>(50, opt_.idle_timeout_ms / 4));
  uv_timer_start(watchdog_, [](uv_timer_t* t) {
    auto* self = static_cast<SyncStream*>(t->data);
    if (self->request_ &&
        uv_now(self->loop_) - self->last_bytes_ms_ > static_cast<uint64_t>(self->opt_.idle_timeout_ms))
      self->drop_and_retry(false);
  }, period, period);
}

void SyncStream::stop() {
  running_ = false;
  ++generation_;
  uv_timer_stop(watchdog_);
  uv_timer_stop(retry_);
  if (request_) http_.cancel(request_);
  request_ = 0;
  open_ = false;
}

void SyncStream::connect() {
  uint64_t gen = ++generation_;
  parser_.reset();
  resync_pending_ = true;
  last_bytes_ms_ = uv_now(loop_);
  HttpRequest req;
  req.url = DatabaseUrl(opt_.base_url, opt_.root, creds_.query());
  req.headers = {"Accept: text/event-stream"};
  req.stream = true;
  req.follow_redirects = true;
  req.on_headers = [this, gen](int status) {
    if (gen != generation_ || status < 200 || status >= 300) return;
    open_ = true;
    attempt_ = 0;
    ++connects_;
    if (on_link_) on_link_(true);
  };
  req.on_data = [this, gen](std::string_view bytes) {
    if (gen != generation_) return;
    last_bytes_ms_ = uv_now(loop_);
    parser_.feed(bytes);  // events after a stop/reconnect inside this chunk are dropped
  };
  request_ = http_.start(std::move(req), [this, gen](HttpResponse resp) {
    if (gen != generation_) return;
    request_ = 0;
    if (resp.transport_error && on_link_) on_link_(false);
    drop_and_retry(resp.status == 401);
  });
}

void SyncStream::on_sse(const SseEvent& raw) {
  FirebaseEvent e = DecodeFirebaseEvent(raw);
  switch (e.kind) {
    case FirebaseEvent::Kind::Put:
    case FirebaseEvent::Kind::Patch: {
      bool full = e.kind == FirebaseEvent::Kind::Put && resync_pending_;
      if (e.kind == FirebaseEvent::Kind::Put) resync_pending_ = false;
      on_event_(e, full);
      break;
    }
    case FirebaseEvent::Kind::Cancel:
      stop();
      if (on_cancelled_) on_cancelled_(e.data.is_string() ? e.data.get<std::string>() : e.data.dump());
      break;
    case FirebaseEvent::Kind::AuthRevoked:
      drop_and_retry(true);
      break;
    default:
      break;  // keep-alive (the byte counter already noticed it) and unknown events
  }
}

void SyncStream::drop_and_retry(bool refresh_credentials) {
  if (!running_) return;
  ++generation_;
  if (request_) http_.cancel(request_);
  request_ = 0;
  open_ = false;
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  int64_t cap = std::min(opt_.backoff_max_ms, opt_.backoff_initial_ms << std::min(attempt_, 20));
  ++attempt_;
  int64_t delay = cap / 2 + static_cast<int64_t>(rng() % static_cast<uint64_t>(cap / 2 + 1));
  auto reconnect = [this, delay] {
    if (!running_) return;
    uv_timer_start(retry_, [](uv_timer_t* t) {
      auto* self = static_cast<SyncStream*>(t->data);
      if (self->running_) self->connect();
    }, static_cast<uint64_t>(delay), 0);
  };
  if (refresh_credentials) {
    creds_.refresh([reconnect, alive = std::weak_ptr<bool>(alive_)](bool) {
      if (!alive.expired()) reconnect();
    });
  } else {
    reconnect();
  }
}

}  // namespace tether::upstream
