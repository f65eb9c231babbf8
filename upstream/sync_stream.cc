#include "upstream/sync_stream.h"

#include <algorithm>
#include <random>

#include "upstream/db_url.h"

namespace tether::upstream {
namespace {
}  // namespace

SyncStream::SyncStream(uv_loop_t* loop, HttpClient& http, Credentials& creds, SyncStreamOptions opt,
                       OnEvent on_event, OnCancelled on_cancelled, OnLink on_link)
    : loop_(loop), http_(http), creds_(creds), opt_(std::move(opt)),
      on_event_(std::move(on_event)), on_cancelled_(std::move(on_cancelled)),
      on_link_(std::move(on_link)), parser_([this](const SseEvent& e) { OnSse(e); }),
      watchdog_(util::UvTimer(loop, this)), retry_(util::UvTimer(loop, this)) {}

SyncStream::~SyncStream() {
  Stop();  // the timers close with their members
}

void SyncStream::Start() {
  if (running_) return;
  running_ = true;
  attempt_ = 0;
  Connect();
  uint64_t period = static_cast<uint64_t>(std::max<int64_t>(50, opt_.idle_timeout_ms / 4));
  uv_timer_start(watchdog_, [](uv_timer_t* t) {
    auto* self = static_cast<SyncStream*>(t->data);
    if (self->request_ &&
        uv_now(self->loop_) - self->last_bytes_ms_ > static_cast<uint64_t>(self->opt_.idle_timeout_ms))
      self->DropAndRetry(false);
  }, period, period);
}

void SyncStream::Stop() {
  running_ = false;
  ++generation_;
  uv_timer_stop(watchdog_);
  uv_timer_stop(retry_);
  if (request_) http_.Cancel(request_);
  request_ = 0;
  open_ = false;
}

void SyncStream::Connect() {
  uint64_t gen = ++generation_;
  parser_.Reset();
  resync_pending_ = true;
  event_stream_ = plain_ = false;
  plain_body_.clear();
  last_bytes_ms_ = uv_now(loop_);
  HttpRequest req;
  req.url = DatabaseUrl(opt_.base_url, opt_.root, creds_.Query());
  req.headers = {"Accept: text/event-stream"};
  req.stream = true;
  req.follow_redirects = true;
  req.on_headers = [this, gen](int status, const std::map<std::string, std::string>& headers) {
    if (gen != generation_ || status < 200 || status >= 300) return;
    auto type = headers.find("content-type");
    std::string ctype = type == headers.end() ? "" : type->second;
    event_stream_ = ctype.rfind("text/event-stream", 0) == 0;
    plain_ = !event_stream_;
    if (plain_) answered_type_ = ctype.empty() ? "no content type" : ctype;
    if (on_link_) on_link_(true);  // the cloud answered
  };
  req.on_data = [this, gen](std::string_view bytes) {
    if (gen != generation_) return;
    last_bytes_ms_ = uv_now(loop_);
    if (plain_) {
      if (plain_body_.size() + bytes.size() > opt_.max_read_bytes) {
        last_error_ = "answer over " + std::to_string(opt_.max_read_bytes) + " bytes";
        return DropAndRetry(false);
      }
      plain_body_.append(bytes);
      return;
    }
    if (event_stream_) parser_.Feed(bytes);  // events after a stop/reconnect inside this chunk are dropped
  };
  request_ = http_.Start(std::move(req), [this, gen](HttpResponse resp) {
    if (gen != generation_) return;
    request_ = 0;
    if (resp.transport_error && on_link_) on_link_(false);
    if (plain_ && !resp.transport_error) return ReadAnswered(std::move(plain_body_));
    DropAndRetry(resp.status == 401);
  });
}

// A whole value instead of a stream: the server does not stream. Deliver it, ask again later.
void SyncStream::ReadAnswered(std::string body) {
  auto value = nlohmann::json::parse(body, nullptr, false);
  if (value.is_discarded()) {
    last_error_ = "the answer (" + answered_type_ + ") is not JSON";
    return DropAndRetry(false);
  }
  if (!polling_ && opt_.on_polling) {
    opt_.on_polling(true, "the cloud answered " + answered_type_ + " instead of text/event-stream");
  }
  polling_ = true;
  open_ = false;
  attempt_ = 0;  // the server answered as it does; not a failure to back off from
  ++reads_;
  FirebaseEvent e;
  e.kind = FirebaseEvent::Kind::Put;
  e.path = "/";
  e.data = std::move(value);
  on_event_(e, true);
  if (running_) RetryIn(opt_.poll_interval_ms, false);
}

void SyncStream::OnSse(const SseEvent& raw) {
  if (!open_) {  // the first event: now the stream is up
    open_ = true;
    attempt_ = 0;
    ++connects_;
    if (polling_ && opt_.on_polling) opt_.on_polling(false, "the cloud streams again");
    polling_ = false;
    last_error_.clear();
  }
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
      Stop();
      if (on_cancelled_) on_cancelled_(e.data.is_string() ? e.data.get<std::string>() : e.data.dump());
      break;
    case FirebaseEvent::Kind::AuthRevoked:
      DropAndRetry(true);
      break;
    default:
      break;  // keep-alive (the byte counter already noticed it) and unknown events
  }
}

void SyncStream::DropAndRetry(bool refresh_credentials) {
  if (!running_) return;
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  int64_t cap = std::min(opt_.backoff_max_ms, opt_.backoff_initial_ms << std::min(attempt_, 20));
  ++attempt_;
  RetryIn(cap / 2 + static_cast<int64_t>(rng() % static_cast<uint64_t>(cap / 2 + 1)), refresh_credentials);
}

void SyncStream::RetryIn(int64_t delay, bool refresh_credentials) {
  ++generation_;
  if (request_) http_.Cancel(request_);
  request_ = 0;
  open_ = false;
  auto reconnect = [this, delay] {
    if (!running_) return;
    uv_timer_start(retry_, [](uv_timer_t* t) {
      auto* self = static_cast<SyncStream*>(t->data);
      if (self->running_) self->Connect();
    }, static_cast<uint64_t>(delay), 0);
  };
  if (refresh_credentials) {
    creds_.Refresh(scope_.Guard([reconnect](bool) { reconnect(); }));
  } else {
    reconnect();
  }
}

}  // namespace tether::upstream
