#include "upstream/cloud_clock.h"

#include <time.h>

#include <chrono>

#include <nlohmann/json.hpp>

namespace tether::upstream {
namespace {
int64_t WallMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch()).count();
}
int64_t BootUs() {
  timespec ts{};
  clock_gettime(CLOCK_BOOTTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000 + ts.tv_nsec / 1000;
}
}  // namespace

CloudClock::CloudClock(uv_loop_t* loop, HttpClient& http, Credentials& creds, CloudClockOptions opt)
    : loop_(loop), http_(http), creds_(creds), opt_(std::move(opt)), timer_(new uv_timer_t) {
  uv_timer_init(loop_, timer_);
  timer_->data = this;
}

CloudClock::~CloudClock() {
  uv_timer_stop(timer_);
  uv_close(reinterpret_cast<uv_handle_t*>(timer_),
           [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
}

void CloudClock::start() {
  running_ = true;
  uv_timer_start(timer_, [](uv_timer_t* t) {
    static_cast<CloudClock*>(t->data)->write_presence("online", nullptr);
  }, 0, static_cast<uint64_t>(opt_.interval_ms));
}

void CloudClock::shutdown(std::function<void()> done) {
  running_ = false;
  uv_timer_stop(timer_);
  write_presence("offline", std::move(done));
}

void CloudClock::write_presence(const char* status, std::function<void()> after) {
  HttpRequest req;
  req.method = "PUT";
  req.url = opt_.base_url + "/" + opt_.presence_path + ".json";
  if (std::string q = creds_.query(); !q.empty()) req.url += "?" + q;
  req.headers = {"Content-Type: application/json"};
  req.body = nlohmann::json{{"status", status}, {"last_seen", {{".sv", "timestamp"}}}}.dump();
  req.timeout_ms = opt_.timeout_ms;
  int64_t send_boot = BootUs();
  http_.start(std::move(req), [this, send_boot, after = std::move(after)](HttpResponse r) {
    int64_t rtt_us = BootUs() - send_boot;
    auto body = nlohmann::json::parse(r.body, nullptr, false);
    if (r.status == 200 && body.is_object() && body.contains("last_seen") &&
        body["last_seen"].is_number_integer()) {
      int64_t server = body["last_seen"].get<int64_t>();
      samples_.push_back({server - (send_boot + rtt_us / 2) / 1000, (rtt_us + 500) / 1000});
      while (samples_.size() > opt_.samples) samples_.pop_front();
      ++total_samples_;
    }
    if (opt_.on_link) opt_.on_link(!r.transport_error);  // the new sample is in the estimate
    if (after) after();
  });
}

const CloudClock::Sample* CloudClock::best() const {
  const Sample* b = nullptr;
  for (const auto& s : samples_)
    if (!b || s.rtt_ms < b->rtt_ms) b = &s;
  return b;
}

int64_t CloudClock::offset_ms() const { return best() ? best()->boot_offset_ms - (WallMs() - BootUs() / 1000) : 0; }
int64_t CloudClock::rtt_ms() const { return best() ? best()->rtt_ms : 0; }
int64_t CloudClock::cloud_now_ms() const { return WallMs() + offset_ms(); }

}  // namespace tether::upstream
