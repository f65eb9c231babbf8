#include "upstream/cloud_clock.h"

#include <time.h>

#include <algorithm>
#include <chrono>

#include <curl/curl.h>
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
}  // namespace

CloudClock::CloudClock(uv_loop_t* loop, HttpClient& http, Credentials& creds, CloudClockOptions opt)
    : loop_(loop), http_(http), creds_(creds), opt_(std::move(opt)),
      write_timer_(util::UvTimer(loop, this)) {}

CloudClock::~CloudClock() {
  scope_.Close();
  if (request_) http_.Cancel(request_);
}

int64_t CloudClock::wall_ms() const { return opt_.wall_clock_ms ? opt_.wall_clock_ms() : SystemWallMs(); }

void CloudClock::Start() {
  running_ = true;
  WriteIn(0);
}

void CloudClock::WriteIn(int64_t delay_ms) {
  uv_timer_start(write_timer_, [](uv_timer_t* t) { static_cast<CloudClock*>(t->data)->WritePresence(); },
                 static_cast<uint64_t>(std::max<int64_t>(0, delay_ms)), 0);
}

void CloudClock::LinkChanged(bool up) {
  if (!running_) return;
  if (up) {
    if (!current() && !request_ && link_lost_) WriteIn(0);
    return;
  }
  link_lost_ = true;
  if (current_) {
    current_ = false;
    attempt_ = 0;
    if (!request_) WriteIn(opt_.retry_initial_ms);
    Changed();
  }
}

void CloudClock::Changed() {
  if (opt_.on_change) opt_.on_change();
}

void CloudClock::WritePresence() {
  if (!running_ || request_) return;
  HttpRequest req;
  req.method = "PUT";
  req.url = DatabaseUrl(opt_.base_url, opt_.presence_path, creds_.Query());
  req.headers = {"Content-Type: application/json"};
  req.body = nlohmann::json{{"status", "online"}, {"last_seen", {{".sv", "timestamp"}}}}.dump();
  req.timeout_ms = opt_.timeout_ms;
  const int64_t send_us = BootUs();
  request_ = http_.Start(std::move(req), [this, send_us](HttpResponse r) {
    request_ = 0;
    const int64_t recv_us = BootUs();
    if (opt_.on_link) opt_.on_link(!r.transport_error);
    if (!running_) return;
    if (r.transport_error) return NoTime(r.error, true);
    auto body = nlohmann::json::parse(r.body, nullptr, false);
    if (r.status == 200 && body.is_object() && body.contains("last_seen") && body["last_seen"].is_number_integer()) {
      int64_t server_us = body["last_seen"].get<int64_t>() * 1000;
      return Add({server_us - recv_us, server_us - send_us, recv_us - send_us, Source::kWriteAnswer}, "");
    }
    if (r.status >= 200 && r.status < 300) return ReadBack(send_us, recv_us, std::move(r));
    std::string why = "presence write: HTTP " + std::to_string(r.status) + ": " + r.body.substr(0, 200);
    if (r.status == 401) {
      last_error_ = why;
      return creds_.Refresh(scope_.Guard([this, r, send_us, recv_us, why](bool fresh) {
        if (!running_) return;
        if (fresh) return WriteIn(0);
        if (auto date = DateHeaderInterval(r, send_us, recv_us)) {
          return Add({date->first, date->second, recv_us - send_us, Source::kDateHeader}, why);
        }
        NoTime(why, false);
      }));
    }
    if (auto date = DateHeaderInterval(r, send_us, recv_us)) {
      return Add({date->first, date->second, recv_us - send_us, Source::kDateHeader}, why);
    }
    NoTime(why + " (and no Date header)", false);
  });
}

// The PUT was answered 2xx without a resolved last_seen: what the server stored was resolved
// while the PUT was in flight, so reading it back bounds it by the PUT's round trip.
void CloudClock::ReadBack(int64_t send_us, int64_t recv_us, HttpResponse put) {
  HttpRequest req;
  req.url = DatabaseUrl(opt_.base_url, opt_.presence_path + "/last_seen", creds_.Query());
  req.timeout_ms = opt_.timeout_ms;
  const int64_t get_send_us = BootUs();
  request_ = http_.Start(std::move(req), [this, send_us, recv_us, get_send_us, put = std::move(put)](HttpResponse r) {
    request_ = 0;
    const int64_t get_recv_us = BootUs();
    if (opt_.on_link) opt_.on_link(!r.transport_error);
    if (!running_) return;
    auto v = nlohmann::json::parse(r.body, nullptr, false);
    if (r.status == 200 && v.is_number_integer()) {
      int64_t server_us = v.get<int64_t>() * 1000;
      return Add({server_us - recv_us, server_us - send_us, recv_us - send_us, Source::kReadBack}, "");
    }
    std::string why = "presence write answered without a resolved timestamp; reading it back: " +
                      (r.transport_error ? r.error : "HTTP " + std::to_string(r.status) + ": " + r.body.substr(0, 200));
    // Either answer's Date: the narrower interval.
    auto a = DateHeaderInterval(put, send_us, recv_us);
    auto b = r.transport_error ? std::nullopt : DateHeaderInterval(r, get_send_us, get_recv_us);
    if (b && (!a || b->second - b->first < a->second - a->first)) {
      return Add({b->first, b->second, get_recv_us - get_send_us, Source::kDateHeader}, why);
    }
    if (a) return Add({a->first, a->second, recv_us - send_us, Source::kDateHeader}, why);
    NoTime(why + " (and no Date header)", r.transport_error);
  });
}

void CloudClock::Add(Sample s, std::string problem) {
  samples_.push_back(s);
  while (samples_.size() > opt_.samples) samples_.pop_front();
  ++total_samples_;
  current_ = true;
  link_lost_ = false;
  if (problem.empty()) {
    attempt_ = 0;
    WriteIn(opt_.interval_ms);
  } else {  // the write failed or gave no time: retried on the backoff (and the Date samples narrow)
    WriteIn(std::min(opt_.retry_max_ms, opt_.retry_initial_ms << std::min(attempt_, 20)));
    ++attempt_;
  }
  last_error_ = std::move(problem);
  Changed();
}

void CloudClock::NoTime(std::string why, bool link_lost) {
  if (!running_) return;
  int64_t delay = std::min(opt_.retry_max_ms, opt_.retry_initial_ms << std::min(attempt_, 20));
  ++attempt_;
  bool was_current = current_;
  current_ = false;  // the link failed us: the next estimate must come from a new sample
  link_lost_ = link_lost;
  WriteIn(delay);
  if (was_current || why != last_error_) {
    last_error_ = std::move(why);
    Changed();
  }
}

void CloudClock::Shutdown(std::function<void()> done) {
  running_ = false;
  uv_timer_stop(write_timer_);
  if (request_) http_.Cancel(request_);
  request_ = 0;
  HttpRequest req;
  req.method = "PUT";
  req.url = DatabaseUrl(opt_.base_url, opt_.presence_path, creds_.Query());
  req.headers = {"Content-Type: application/json"};
  req.body = nlohmann::json{{"status", "offline"}, {"last_seen", {{".sv", "timestamp"}}}}.dump();
  req.timeout_ms = opt_.timeout_ms;
  request_ = http_.Start(std::move(req), [this, done = std::move(done)](HttpResponse) {
    request_ = 0;
    if (done) done();
  });
}

std::optional<CloudClock::Estimate> CloudClock::best() const {
  std::optional<Estimate> exact, dates;
  for (const auto& s : samples_) {
    if (s.source == Source::kDateHeader) continue;
    if (!exact || s.hi_us - s.lo_us < exact->hi_us - exact->lo_us) exact = Estimate{s.lo_us, s.hi_us, s.rtt_us, s.source};
  }
  for (auto it = samples_.rbegin(); it != samples_.rend(); ++it) {  // newest first
    if (it->source != Source::kDateHeader) continue;
    if (!dates) {
      dates = Estimate{it->lo_us, it->hi_us, it->rtt_us, Source::kDateHeader};
    } else if (std::max(dates->lo_us, it->lo_us) <= std::min(dates->hi_us, it->hi_us)) {
      dates->lo_us = std::max(dates->lo_us, it->lo_us);
      dates->hi_us = std::min(dates->hi_us, it->hi_us);
      dates->rtt_us = std::min(dates->rtt_us, it->rtt_us);
    }  // else: disjoint with the newer ones (a server clock step): the older one is dropped
  }
  if (exact && dates) return dates->hi_us - dates->lo_us < exact->hi_us - exact->lo_us ? dates : exact;
  return exact ? exact : dates;
}

std::optional<int64_t> CloudClock::boot_offset_ms() const {
  if (auto b = best()) return (b->lo_us + b->hi_us) / 2 / 1000;
  return std::nullopt;
}
std::optional<int64_t> CloudClock::offset_ms() const {
  if (auto off = boot_offset_ms()) return *off - (wall_ms() - BootUs() / 1000);
  return std::nullopt;
}
int64_t CloudClock::rtt_ms() const {
  auto b = best();
  return b ? (b->rtt_us + 500) / 1000 : 0;
}
int64_t CloudClock::uncertainty_ms() const {
  auto b = best();
  return b ? (b->hi_us - b->lo_us + 1999) / 2000 : 0;
}
CloudClock::Source CloudClock::source() const {
  auto b = best();
  return b ? b->source : Source::kNone;
}
const char* CloudClock::SourceName(Source s) {
  switch (s) {
    case Source::kNone: return "none";
    case Source::kWriteAnswer: return "write-answer";
    case Source::kReadBack: return "read-back";
    case Source::kDateHeader: return "date-header";
  }
  return "none";
}

std::optional<std::pair<int64_t, int64_t>> DateHeaderInterval(const HttpResponse& r, int64_t send_us, int64_t recv_us) {
  auto it = r.headers.find("date");
  if (it == r.headers.end()) return std::nullopt;
  time_t t = curl_getdate(it->second.c_str(), nullptr);
  if (t <= 0) return std::nullopt;
  // The server's clock read t..t+1 s at some moment between send and answer.
  int64_t date_us = static_cast<int64_t>(t) * 1'000'000;
  return std::pair<int64_t, int64_t>{date_us - recv_us, date_us + 999'999 - send_us};
}

}  // namespace tether::upstream
