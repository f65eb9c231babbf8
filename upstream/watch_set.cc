#include "upstream/watch_set.h"

#include <algorithm>
#include <functional>

#include "upstream/rest_get.h"
#include "util/path_segments.h"

namespace tether::upstream {
namespace {
std::string Canonical(const std::string& path) { return util::JoinPath(util::SplitPath(path)); }
std::string Join(const std::string& root, const std::string& rel) { return Canonical(root + "/" + rel); }
}  // namespace

WatchSet::WatchSet(uv_loop_t* loop, HttpClient& http, Credentials& creds, WatchSetOptions opt, OnData on_data)
    : loop_(loop), http_(http), creds_(creds), opt_(std::move(opt)), on_data_(std::move(on_data)),
      poll_timer_(util::UvTimer(loop_, this)) {}

WatchSet::~WatchSet() { Stop(); }

void WatchSet::Watch(const std::string& raw) {
  std::string path = Canonical(raw);
  if (streams_.count(path) || polled_.count(path)) return;
  if (streams_.size() < opt_.max_streams) return OpenStream(path);
  AddPolled(path);
}

void WatchSet::AddPolled(const std::string& path) {
  polled_[path] = {};
  poll_order_.push_back(path);
  Poll(path);
  if (!uv_is_active(poll_timer_.handle())) {
    auto period = static_cast<uint64_t>(std::max<int64_t>(10, opt_.poll_interval_ms));
    uv_timer_start(poll_timer_, [](uv_timer_t* t) { static_cast<WatchSet*>(t->data)->PollAll(); }, period, period);
  }
}

void WatchSet::Unwatch(const std::string& raw) {
  std::string path = Canonical(raw);
  if (polled_.erase(path)) {
    std::erase(poll_order_, path);
  } else if (auto it = streams_.find(path); it != streams_.end()) {
    it->second->Stop();
    streams_.erase(it);
    if (!poll_order_.empty()) {  // a slot is free: the longest-polled path gets it
      std::string next = poll_order_.front();
      poll_order_.pop_front();
      polled_.erase(next);
      OpenStream(next);
    }
  }
  if (polled_.empty()) uv_timer_stop(poll_timer_);
}

void WatchSet::Stop() {
  for (auto& [path, s] : streams_) s->Stop();
  streams_.clear();
  retired_.clear();
  polled_.clear();
  poll_order_.clear();
  uv_timer_stop(poll_timer_);
}

void WatchSet::OpenStream(const std::string& path) {
  SyncStreamOptions so;
  so.base_url = opt_.base_url;
  so.root = path;
  so.idle_timeout_ms = opt_.idle_timeout_ms;
  so.backoff_initial_ms = opt_.backoff_initial_ms;
  so.backoff_max_ms = opt_.backoff_max_ms;
  so.poll_interval_ms = opt_.poll_interval_ms;
  so.on_polling = [this, path](bool polling, const std::string& why) {
    if (opt_.on_polling) opt_.on_polling(path, polling, why);
  };
  auto on_event = [this, path](const FirebaseEvent& e, bool) {
    if (e.kind == FirebaseEvent::Kind::Put || e.kind == FirebaseEvent::Kind::Patch)
      on_data_(Join(path, e.path), e.data, e.kind == FirebaseEvent::Kind::Patch);
  };
  auto on_cancel = [this, path](const std::string&) {
    // The cloud refused the stream (its rules): keep the path fresh by reading it instead.
    auto it = streams_.find(path);
    if (it == streams_.end()) return;
    retired_.push_back(std::move(it->second));  // inside its own callback: freed at the next tick
    streams_.erase(it);
    AddPolled(path);
  };
  auto s = std::make_unique<SyncStream>(loop_, http_, creds_, so, on_event, on_cancel, opt_.on_link);
  s->Start();
  streams_[path] = std::move(s);
}

size_t WatchSet::streams_polling() const {
  return static_cast<size_t>(std::count_if(streams_.begin(), streams_.end(), [](const auto& s) { return s.second->polling(); }));
}

size_t WatchSet::streams_open() const {
  return static_cast<size_t>(std::count_if(streams_.begin(), streams_.end(), [](const auto& s) { return s.second->open(); }));
}

void WatchSet::PollAll() {
  retired_.clear();
  for (const std::string& path : poll_order_) Poll(path);
}

void WatchSet::Poll(const std::string& path) {
  auto it = polled_.find(path);
  if (it == polled_.end() || it->second.in_flight) return;
  it->second.in_flight = true;
  // Guarded twice: on_link may destroy this object before the value is delivered.
  auto deliver = scope_.Guard([this, path](const GetResult& r) {
    auto it = polled_.find(path);
    if (it == polled_.end()) return;  // unwatched meanwhile
    it->second.in_flight = false;
    if (!r.ok) return;  // offline or refused: the next period asks again
    uint64_t digest = std::hash<std::string>{}(r.value.dump()) | 1;
    if (digest == it->second.digest) return;
    it->second.digest = digest;
    on_data_(path, r.value, false);
  });
  RestGet(http_, creds_, opt_.base_url, path, opt_.poll_timeout_ms, false,
          scope_.Guard([this, deliver](GetResult r) mutable {
            if (r.status != 0 && opt_.on_link) opt_.on_link(true);  // the cloud answered
            deliver(r);
          }));
}

}  // namespace tether::upstream
