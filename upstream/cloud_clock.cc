#include "upstream/cloud_clock.h"

#include <time.h>

#include <algorithm>
#include <chrono>

#include <nlohmann/json.hpp>

#include "upstream/db_url.h"

namespace tether::upstream {
namespace {
int64_t SystemWallMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch()).count();
}
int64_t BootUs() {  // CLOCK_BOOTTIME: never stepped, counts suspend
  timespec ts{};
  clock_gettime(CLOCK_BOOTTIME, &ts);
  return int64_t{ts.tv_sec} * 1'000'000 + ts.tv_nsec / 1000;
}
uv_timer_t* NewTimer(uv_loop_t* loop, void* data) {
  auto* t = new uv_timer_t;
  uv_timer_init(loop, t);
  t->data = data;
  return t;
}
void CloseTimer(uv_timer_t* t) {
  uv_timer_stop(t);
  uv_close(reinterpret_cast<uv_handle_t*>(t), [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
}
}  // namespace

CloudClock::CloudClock(uv_loop_t* loop, HttpClient& http, Credentials& creds, CloudClockOptions opt)
    : loop_(loop), http_(http), creds_(creds), opt_(std::move(opt)),
      write_timer_(NewTimer(loop, this)) {}

CloudClock::~CloudClock() {
  *alive_ = false;
  if (request_) http_.cancel(request_);
  CloseTimer(write_timer_);
}

int64_t CloudClock::wall_ms() const { return opt_.wall_clock_ms ? opt_.wall_clock_ms() : SystemWallMs(); }

void CloudClock::start() {
  running_ = true;
  write_in(0);
}

void CloudClock::write_in(int64_t delay_ms) {
  uv_timer_start(write_timer_, [](uv_timer_t* t) { static_cast<CloudClock*>(t->data)->write_presence(); },
                 static_cast<uint64_t>(std::max<int64_t>(0, delay_ms)), 0);
}

void CloudClock::link_changed(bool up) {
  if (!running_) return;
  if (up) {
    if (!current() && !request_) write_in(0);
    return;
  }
  if (current_) {
    current_ = false;
    attempt_ = 0;
    if (!request_) write_in(opt_.retry_initial_ms);
    changed();
  }
}

void CloudClock::changed() {
  if (opt_.on_change) opt_.on_change();
}

void CloudClock::write_presence() {
  if (!running_ || request_) return;
  HttpRequest req;
  req.method = "PUT";
  req.url = DatabaseUrl(opt_.base_url, opt_.presence_path, creds_.query());
  req.headers = {"Content-Type: application/json"};
  req.body = nlohmann::json{{"status", "online"}, {"last_seen", {{".sv", "timestamp"}}}}.dump();
  req.timeout_ms = opt_.timeout_ms;
  const int64_t send_boot = BootUs();
  request_ = http_.start(std::move(req), [this, send_boot](HttpResponse r) {
    request_ = 0;
    int64_t rtt_us = BootUs() - send_boot;
    if (opt_.on_link) opt_.on_link(!r.transport_error);
    if (!running_) return;
    auto body = nlohmann::json::parse(r.body, nullptr, false);
    if (r.status == 200 && body.is_object() && body.contains("last_seen") && body["last_seen"].is_number_integer()) {
      int64_t server = body["last_seen"].get<int64_t>();
      samples_.push_back({server - (send_boot + rtt_us / 2) / 1000, (rtt_us + 500) / 1000});
      while (samples_.size() > opt_.samples) samples_.pop_front();
      ++total_samples_;
      current_ = true;
      attempt_ = 0;
      last_error_.clear();
      write_in(opt_.interval_ms);
      return changed();
    }
    std::string why = r.transport_error ? r.error : "HTTP " + std::to_string(r.status) + ": " + r.body.substr(0, 200);
    if (r.status == 401) {
      last_error_ = why;
      return creds_.refresh([this, alive = std::weak_ptr<bool>(alive_), why](bool fresh) {
        if (alive.expired()) return;
        if (fresh) return write_in(0);
        retry_later(why);
      });
    }
    retry_later(std::move(why));
  });
}

void CloudClock::retry_later(std::string why) {
  if (!running_) return;
  int64_t delay = std::min(opt_.retry_max_ms, opt_.retry_initial_ms << std::min(attempt_, 20));
  ++attempt_;
  bool was_current = current_;
  current_ = false;  // the link failed us: the next estimate must come from a new sample
  write_in(delay);
  if (was_current || why != last_error_) {
    last_error_ = std::move(why);
    changed();
  }
}

void CloudClock::shutdown(std::function<void()> done) {
  running_ = false;
  uv_timer_stop(write_timer_);
  if (request_) http_.cancel(request_);
  request_ = 0;
  HttpRequest req;
  req.method = "PUT";
  req.url = DatabaseUrl(opt_.base_url, opt_.presence_path, creds_.query());
  req.headers = {"Content-Type: application/json"};
  req.body = nlohmann::json{{"status", "offline"}, {"last_seen", {{".sv", "timestamp"}}}}.dump();
  req.timeout_ms = opt_.timeout_ms;
  request_ = http_.start(std::move(req), [this, done = std::move(done)](HttpResponse) {
    request_ = 0;
    if (done) done();
  });
}

const CloudClock::Sample* CloudClock::best() const {
  const Sample* b = nullptr;
  for (const auto& s : samples_)
    if (!b || s.rtt_ms < b->rtt_ms) b = &s;
  return b;
}

std::optional<int64_t> CloudClock::boot_offset_ms() const {
  if (const Sample* b = best()) return b->boot_offset_ms;
  return std::nullopt;
}
std::optional<int64_t> CloudClock::offset_ms() const {
  if (const Sample* b = best()) return b->boot_offset_ms - (wall_ms() - BootUs() / 1000);
  return std::nullopt;
}
int64_t CloudClock::rtt_ms() const { return best() ? best()->rtt_ms : 0; }

}  // namespace tether::upstream
