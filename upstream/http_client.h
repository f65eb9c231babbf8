// HttpClient: asynchronous HTTP(S) on the caller's libuv loop, built on the libcurl multi
// interface (sockets watched with uv_poll_t, curl's timeout with a uv_timer_t).
// Single-threaded: every method and callback runs on the loop thread. HTTP/2 when the server
// offers it over TLS, certificate verification on, proxy environment variables honoured.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <uv.h>

namespace tether::upstream {

struct HttpRequest {
  std::string method = "GET";
  std::string url;
  std::vector<std::string> headers;  // "Name: value"
  std::string body;
  long timeout_ms = 30000;           // whole request; ignored when `stream` is set
  long connect_timeout_ms = 10000;
  bool stream = false;               // long-lived: no total timeout, body goes to on_data
  bool follow_redirects = false;
  // Not idempotent: use a new connection, because libcurl silently re-sends a request whose reused
  // connection died before any reply byte, and the server may have applied the first one.
  bool fresh_connection = false;
  // Streams only: called with each body chunk of a 2xx response as it arrives.
  std::function<void(std::string_view)> on_data;
  // Streams: the final response's status line and headers (lower-case names) were received.
  std::function<void(int status, const std::map<std::string, std::string>& headers)> on_headers;
};

struct HttpResponse {
  int status = 0;            // 0 when no HTTP response was received
  std::string body;          // non-stream requests (and non-2xx streams)
  std::map<std::string, std::string> headers;  // lower-cased names, last response only
  bool transport_error = false;                // connect/TLS/timeout/reset
  std::string error;                           // curl's message when transport_error
  int http_version = 0;                        // 1 (HTTP/1.x) or 2 (HTTP/2); 0 without a response
};

struct HttpClientOptions {
  std::string ca_file;  // PEM bundle of trusted CAs; empty: the system's trust store
};

class HttpClient {
 public:
  using RequestId = uint64_t;
  using Done = std::function<void(HttpResponse)>;

  explicit HttpClient(uv_loop_t* loop, HttpClientOptions options = {});
  ~HttpClient();  // aborts requests without calling their callbacks; loop must run once more
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // Starts a request; `done` runs exactly once on completion unless Cancel() is called first.
  RequestId Start(HttpRequest req, Done done);
  // Aborts a request; its `done` is never called. Safe from inside any callback.
  void Cancel(RequestId id);
  size_t in_flight() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace tether::upstream
