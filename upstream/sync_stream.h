// SyncStream: one Firebase SSE stream (`GET <base>/<root>.json`, Accept: text/event-stream)
// kept open forever. Delivers put/patch events (paths relative to root). The first put after
// every (re)connect is flagged full_resync: it replaces everything known under root.
// - A stream is up (open(), connects(), the backoff reset) only once the answer is 2xx
//   text/event-stream AND it delivered its first event: a server that accepts the request and
//   then says nothing, or closes, keeps backing off.
// - Reconnects with exponential backoff and jitter when the stream ends, fails, or is silent
//   for idle_timeout_ms (the server sends keep-alives every ~30 s); auth_revoked / 401 refresh
//   credentials first (the credential is re-read at every connect).
// - A server without streaming (a 2xx answer of another type, e.g. plain JSON from npm
//   firebase-server) degrades it to periodic reads: that answer is the value (delivered as a
//   full_resync put), and the same request is made again every poll_interval_ms (it streams
//   again as soon as the server does). polling() says so; the switch is logged once each way.
// - `cancel` stops the stream for good and reports it. Loop thread only; http and creds outlive
//   it, and a credential refresh completing after its destruction does nothing.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include <uv.h>

#include "upstream/credentials.h"
#include "upstream/http_client.h"
#include "upstream/sse_parser.h"
#include "util/callback_scope.h"
#include "util/uv_handle.h"

namespace tether::upstream {

struct SyncStreamOptions {
  std::string base_url;
  std::string root;                 // database path, no leading '/'
  int64_t idle_timeout_ms = 60000;  // no bytes for this long = dead stream
  int64_t backoff_initial_ms = 500;
  int64_t backoff_max_ms = 30000;
  int64_t poll_interval_ms = 30000;         // read period when the server does not stream
  size_t max_read_bytes = 64 << 20;         // a non-streamed answer larger than this is refused
  // The stream degraded to periodic reads (true) or streams again (false), and why.
  std::function<void(bool polling, const std::string& why)> on_polling{};
};

class SyncStream {
 public:
  using OnEvent = std::function<void(const FirebaseEvent& e, bool full_resync)>;
  using OnCancelled = std::function<void(const std::string& reason)>;
  // The cloud was reached (a stream opened) or not (a connection failed or broke); a stream the
  // server ends cleanly says nothing about the link.
  using OnLink = std::function<void(bool reachable)>;

  SyncStream(uv_loop_t* loop, HttpClient& http, Credentials& creds, SyncStreamOptions opt,
             OnEvent on_event, OnCancelled on_cancelled = nullptr, OnLink on_link = nullptr);
  ~SyncStream();  // the loop must run once more to close timers
  SyncStream(const SyncStream&) = delete;
  SyncStream& operator=(const SyncStream&) = delete;

  void Start();
  void Stop();
  bool open() const { return open_; }
  bool polling() const { return polling_; }        // the server does not stream: read periodically
  uint64_t connects() const { return connects_; }  // streams that delivered their first event
  uint64_t reads() const { return reads_; }        // non-streamed answers delivered
  const std::string& last_error() const { return last_error_; }  // of an answer refused since

 private:
  void Connect();
  void DropAndRetry(bool refresh_credentials);
  void RetryIn(int64_t delay_ms, bool refresh_credentials);
  void OnSse(const SseEvent& e);
  void ReadAnswered(std::string body);

  uv_loop_t* loop_;
  HttpClient& http_;
  Credentials& creds_;
  SyncStreamOptions opt_;
  OnEvent on_event_;
  OnCancelled on_cancelled_;
  OnLink on_link_;
  SseParser parser_;
  HttpClient::RequestId request_ = 0;
  uint64_t generation_ = 0;        // bumps per connection; stale callbacks compare it
  bool running_ = false, open_ = false, resync_pending_ = true;
  bool event_stream_ = false;      // this connection's answer is text/event-stream
  bool plain_ = false;             // this connection's answer is a plain (non-streamed) value
  std::string plain_body_, answered_type_, last_error_;
  bool polling_ = false;
  int attempt_ = 0;
  uint64_t connects_ = 0, reads_ = 0;
  uint64_t last_bytes_ms_ = 0;     // uv_now of the last received byte
  util::UvHandle<uv_timer_t> watchdog_;
  util::UvHandle<uv_timer_t> retry_;
  // Credential refreshes may complete after destruction; their callbacks do nothing then.
  util::CallbackScope scope_;
};

}  // namespace tether::upstream
