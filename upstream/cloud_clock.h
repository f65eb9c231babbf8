// CloudClock: estimates cloud time from the gateway's presence writes and keeps the presence
// node ({"status":"online","last_seen":<server ts>} at presence_path) fresh for operators.
//
// Every presence write is timed by its round trip (send .. answer on CLOCK_BOOTTIME); the cloud's
// time at some moment inside it is learnt from the first source that gives one:
// 1. the answer's last_seen, when the server resolved {".sv":"timestamp"} in it (Firebase);
// 2. else, after a 2xx, last_seen read back with a GET (a server that echoes the body as sent,
//    e.g. npm firebase-server): the value was resolved while the PUT was in flight, so the PUT's
//    round trip bounds it;
// 3. else the answer's Date header (any status: a refused write still tells the server's time),
//    whole seconds, so the cloud's time lies in [Date, Date + 1 s) somewhere inside the round trip.
// Each sample is an interval for cloud - CLOCK_BOOTTIME. The estimate is the narrowest of: the
// narrowest timestamp sample among the last `samples`, and the intersection of the Date samples
// among them (their second boundaries fall at different moments of successive round trips, so
// it narrows over time; an empty intersection, e.g. after the server's clock stepped, keeps the
// newest alone). uncertainty_ms() is its half width.
//
// Invariants:
// - Samples are kept as cloud - CLOCK_BOOTTIME, which a step of the wall clock (NTP, an operator,
//   a box without RTC) does not move: offset_ms() follows such a step at once, also offline.
// - current() is true only while the estimate includes a sample taken since the link was last
//   seen lost (LinkChanged(false) or a presence write without any answer): what is uploaded
//   after an outage is corrected with an offset measured on this link.
// - A write without any answer is retried (retry_initial_ms doubling to retry_max_ms), and
//   LinkChanged(true) retries it at once; a write the server answered without a usable time is
//   retried on the same backoff only (another request's success says nothing new about it), so
//   a server that never gives one costs one write per retry_max_ms, not one per request.
// - A 401 refreshes the credential first. last_error() names the latest write that failed or
//   gave no time, also while a Date sample keeps the estimate current.
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
#include "util/callback_scope.h"
#include "util/uv_handle.h"

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
  enum class Source { kNone, kWriteAnswer, kReadBack, kDateHeader };

  CloudClock(uv_loop_t* loop, HttpClient& http, Credentials& creds, CloudClockOptions opt);
  ~CloudClock();  // the loop must run once more to close the timers
  CloudClock(const CloudClock&) = delete;
  CloudClock& operator=(const CloudClock&) = delete;

  void Start();                                   // first write now, then every interval
  void Shutdown(std::function<void()> done);      // writes status "offline", then stops
  // Another request saw the link come up (no current estimate after a lost link: sample now) or
  // get lost.
  void LinkChanged(bool up);

  bool has_estimate() const { return !samples_.empty(); }
  std::optional<int64_t> offset_ms() const;       // cloud - local wall clock, now
  std::optional<int64_t> boot_offset_ms() const;  // cloud - CLOCK_BOOTTIME
  bool current() const { return current_ && has_estimate(); }
  int64_t rtt_ms() const;          // round trip of the sample in use (0 without)
  int64_t uncertainty_ms() const;  // the estimate is within +- this (0 without)
  Source source() const;           // of the estimate in use
  static const char* SourceName(Source s);  // "none", "write-answer", "read-back", "date-header"
  uint64_t sample_count() const { return total_samples_; }
  const std::string& last_error() const { return last_error_; }

 private:
  struct Sample {
    int64_t lo_us, hi_us;  // cloud - CLOCK_BOOTTIME lies in [lo, hi]
    int64_t rtt_us;
    Source source;
  };
  struct Estimate {
    int64_t lo_us, hi_us, rtt_us;
    Source source;
  };
  void WritePresence();
  void ReadBack(int64_t send_us, int64_t recv_us, HttpResponse put);
  void WriteIn(int64_t delay_ms);
  void Add(Sample s, std::string problem);
  void NoTime(std::string why, bool link_lost);
  void Changed();
  int64_t wall_ms() const;
  std::optional<Estimate> best() const;

  uv_loop_t* loop_;
  HttpClient& http_;
  Credentials& creds_;
  CloudClockOptions opt_;
  std::deque<Sample> samples_;  // newest last, at most opt_.samples
  uint64_t total_samples_ = 0;
  bool running_ = false, current_ = false;
  bool link_lost_ = false;            // the latest failure had no answer: LinkChanged(true) retries
  int attempt_ = 0;                   // consecutive writes without a time
  HttpClient::RequestId request_ = 0;  // presence write or read-back in flight
  std::string last_error_;
  util::UvHandle<uv_timer_t> write_timer_;
  util::CallbackScope scope_;  // credential refreshes completing after destruction do nothing
};

// The interval a Date header gives for cloud - CLOCK_BOOTTIME (µs), for an answer to a request
// sent at send_us and answered at recv_us (CLOCK_BOOTTIME µs); nullopt without a parsable Date.
std::optional<std::pair<int64_t, int64_t>> DateHeaderInterval(const HttpResponse& r, int64_t send_us, int64_t recv_us);

}  // namespace tether::upstream
