// CloudClock: estimates cloud time from the gateway's presence writes and keeps the presence
// node ({"status":"online","last_seen":<server ts>} at presence_path) fresh for operators.
// Each write resolves {".sv":"timestamp"} on the server; a sample is server_ts minus the local
// time halfway through the request. The estimate is the lowest-RTT sample among the last
// `samples` (least queueing error). Samples are kept against CLOCK_BOOTTIME, which a step of the
// wall clock (NTP, an operator, a box without RTC) does not move, so offset_ms() follows such a
// step at once instead of old samples hiding it. Loop thread only.
#pragma once
#include <cstdint>
#include <deque>
#include <functional>
#include <string>

#include <uv.h>

#include "upstream/credentials.h"
#include "upstream/http_client.h"

namespace tether::upstream {

struct CloudClockOptions {
  std::string base_url;
  std::string presence_path;     // e.g. ".gateways/gw-1" (no leading '/')
  int64_t interval_ms = 30000;   // presence write period
  size_t samples = 8;
  long timeout_ms = 10000;
  std::function<void(bool connected)> on_link;
};

class CloudClock {
 public:
  CloudClock(uv_loop_t* loop, HttpClient& http, Credentials& creds, CloudClockOptions opt);
  ~CloudClock();  // the loop must run once more to close the timer
  CloudClock(const CloudClock&) = delete;
  CloudClock& operator=(const CloudClock&) = delete;

  void start();                                   // first write now, then every interval
  void shutdown(std::function<void()> done);      // writes status "offline", then stops

  bool has_estimate() const { return !samples_.empty(); }
  int64_t offset_ms() const;   // cloud - local wall clock, now; 0 without an estimate
  int64_t rtt_ms() const;      // RTT of the sample in use
  int64_t cloud_now_ms() const;
  uint64_t sample_count() const { return total_samples_; }

 private:
  struct Sample { int64_t boot_offset_ms, rtt_ms; };  // cloud - CLOCK_BOOTTIME
  void write_presence(const char* status, std::function<void()> after);
  const Sample* best() const;

  uv_loop_t* loop_;
  HttpClient& http_;
  Credentials& creds_;
  CloudClockOptions opt_;
  std::deque<Sample> samples_;  // newest last, at most opt_.samples
  uint64_t total_samples_ = 0;
  bool running_ = false;
  uv_timer_t* timer_;
};

}  // namespace tether::upstream
