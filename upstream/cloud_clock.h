// CloudClock: estimates cloud time from the gateway's presence writes and keeps the presence
// node ({"status":"online","last_seen":<server ts>} at presence_path) fresh for operators.
// Each write resolves {".sv":"timestamp"} on the server; a sample is server_ts minus the local
// time halfway through the request. The estimate is the lowest-RTT sample among the last
// `samples` (least queueing error).
//
// Invariants:
// - Samples are kept as cloud - CLOCK_BOOTTIME, which a step of the wall clock (NTP, an operator,
//   a box without RTC) does not move: offset_ms() follows such a step at once, also offline.
// - current() is true only while the estimate includes a sample taken since the link was last
//   seen lost (link_changed(false) or a failed presence write): what is uploaded after an outage
//   is corrected with an offset measured on this link.
// - A failed presence write is retried (retry_initial_ms doubling to retry_max_ms); a 401 refreshes
//   the credential first. link_changed(true) without a current estimate samples at once.
// Loop thread only.
#pragma once
#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>

#include <uv.h>

#include "upstream/credentials.h"
#include "upstream/http_client.h"

namespace tether::upstream {

struct CloudClockOptions {
  std::string base_url;
  std::string presence_path;     // e.g. "tether-gateways/gw-1" (no leading '/')
  int64_t interval_ms = 30000;   // presence write period while the link is up
  size_t samples = 8;
  long timeout_ms = 10000;
  std::function<void(bool connected)> on_link;
  // After every change of offset_ms(), current() or last_error().
  std::function<void()> on_change{};
  int64_t retry_initial_ms = 1000;
  int64_t retry_max_ms = 5000;
  std::function<int64_t()> wall_clock_ms{};  // nullptr: CLOCK_REALTIME (tests inject steps)
};

class CloudClock {
 public:
  CloudClock(uv_loop_t* loop, HttpClient& http, Credentials& creds, CloudClockOptions opt);
  ~CloudClock();  // the loop must run once more to close the timers
  CloudClock(const CloudClock&) = delete;
  CloudClock& operator=(const CloudClock&) = delete;

  void start();                                   // first write now, then every interval
  void shutdown(std::function<void()> done);      // writes status "offline", then stops
  // Another request saw the link come up (no current estimate: sample now) or get lost.
  void link_changed(bool up);

  bool has_estimate() const { return !samples_.empty(); }
  std::optional<int64_t> offset_ms() const;       // cloud - local wall clock, now
  std::optional<int64_t> boot_offset_ms() const;  // cloud - CLOCK_BOOTTIME
  bool current() const { return current_ && has_estimate(); }
  int64_t rtt_ms() const;      // RTT of the sample in use (0 without)
  uint64_t sample_count() const { return total_samples_; }
  const std::string& last_error() const { return last_error_; }  // of the latest failed write

 private:
  struct Sample { int64_t boot_offset_ms, rtt_ms; };
  void write_presence();
  void write_in(int64_t delay_ms);
  void retry_later(std::string why);
  void changed();
  int64_t wall_ms() const;
  const Sample* best() const;

  uv_loop_t* loop_;
  HttpClient& http_;
  Credentials& creds_;
  CloudClockOptions opt_;
  std::deque<Sample> samples_;  // newest last, at most opt_.samples
  uint64_t total_samples_ = 0;
  bool running_ = false, current_ = false;
  int attempt_ = 0;                   // consecutive failed writes
  HttpClient::RequestId request_ = 0;  // presence write in flight
  std::string last_error_;
  uv_timer_t* write_timer_;  // heap: closed asynchronously
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);  // for credential refreshes
};

}  // namespace tether::upstream
