// AdminServer: the HTTP admin endpoint (admin.listen, default 127.0.0.1:8790) for Prometheus,
// health probes and tetherctl. Serves on its own threads (BufferedHttpServer: a slow or idle
// client holds no thread); every AdminBackend call is hopped onto the daemon's loop thread through
// a LoopCaller, so backends never need locks.
//
//   GET  /metrics  /healthz  /readyz  /api/v1/status  /api/v1/sessions?app=A  /api/v1/queue
//   GET  /api/v1/deadletters  /api/v1/store/check
//   POST /api/v1/sessions/<device>/kick  /api/v1/deadletters/{retry,drop} {"id":..}|{"all":true}
//   POST /api/v1/reload
// Errors are {"error": "<Diagnostic message>"} with HttpStatusOf(its code): 400/401/403/404/405/
// 409/415/421/500/503; a loop that does not answer within the call timeout gives 503. (Only
// httplib's own refusals, e.g. an unknown path's 404, and BufferedHttpServer's transport-level
// 408/411/413/503 keep the status they chose.) JSON shapes tetherctl expects: docs/operations.md.
// Who may ask (checked before routing, each refusal counted):
//  - /api/ needs "Authorization: Bearer <admin token>" (gateway/config/admin_token.h), else 401: only
//    root and group tether can read the token file. /metrics, /healthz, /readyz need nothing
//    (Prometheus and probes; they carry no secrets and change nothing).
//  - Host must name this server (the listen address; "localhost" on loopback; any IP literal or
//    this machine's name on a wildcard address), else 421: a DNS-rebinding page cannot read it.
//  - CSRF: POSTs must carry Content-Type application/json (a cross-origin page cannot send it
//    without a CORS preflight, which is never granted) and /api requests or POSTs carrying an
//    Origin header (browsers add it) get 403.
#pragma once

#include <uv.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "gateway/config/config.h"
#include "gateway/model/diagnostic.h"
#include "util/loop_queue.h"

namespace tether {

class BufferedHttpServer;
class HttpRoutes;

// LoopCaller: the admin server's hop onto the daemon's loop (util::LoopQueue: its thread and
// shutdown rules), bounded so that a flood of API requests cannot queue without limit: past
// kMaxQueued waiting calls, Post refuses and Call answers nullopt (the client gets 503).
class LoopCaller : public util::LoopQueue {
 public:
  static constexpr size_t kMaxQueued = 1024;
  explicit LoopCaller(uv_loop_t* loop) : util::LoopQueue(loop, kMaxQueued) {}
};

// A state-changing admin action that succeeded: {"ok": true, "message": ..., <detail>}.
struct AdminReport {
  std::string message;                               // a one-line summary
  nlohmann::json detail = nlohmann::json::object();  // merged into the body
};
// Outcome of a state-changing admin action: the report, or the Diagnostic refusing it.
using AdminResult = Expected<AdminReport>;

// The one mapping from the gateway's error vocabulary to the admin API's HTTP status.
int HttpStatusOf(ErrorCode code);

// Implemented by the daemon. Every method but StoreCheck runs on the loop thread (never
// concurrently); StoreCheck runs on an HTTP thread, as it may scan a large store for seconds.
class AdminBackend {
 public:
  virtual ~AdminBackend() = default;
  virtual std::string MetricsText() = 0;                       // Prometheus text 0.0.4
  virtual bool Ready() = 0;                                    // store open, sockets bound
  // Why a ready daemon is not doing its job ("" = it is), e.g. uploads held while the cloud
  // answers; /readyz answers 503 with it.
  virtual std::string NotReadyReason() { return {}; }
  virtual nlohmann::json Status() = 0;                         // object
  virtual nlohmann::json Sessions(const std::optional<std::string>& app) = 0;  // {"sessions":[..]}
  virtual AdminResult Kick(const std::string& device) = 0;     // kNotFound when no session
  virtual nlohmann::json Queue() = 0;                          // {"routes":[..]}
  virtual nlohmann::json DeadLetters() = 0;                    // {"dead_letters":[..]}
  // id == nullopt means every dead letter. `done` runs once on the loop thread, after the change
  // is committed to the store (or failed): the HTTP reply waits for it.
  virtual void RetryDeadLetter(const std::optional<std::string>& id, std::function<void(AdminResult)> done) = 0;
  virtual void DropDeadLetter(const std::optional<std::string>& id, std::function<void(AdminResult)> done) = 0;
  // kInvalid: config rejected. `done` runs once on the loop thread when the file was read,
  // checked and applied (or rejected); the HTTP reply waits for it (Options::reload_timeout).
  virtual void Reload(std::function<void(AdminResult)> done) = 0;
  virtual nlohmann::json StoreCheck() = 0;                     // {"ok":bool,...}; any thread
};

class AdminBindError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class AdminServer {
 public:
  struct Options {
    HostPort listen{"127.0.0.1", 8790};   // port 0: pick a free port (see port())
    std::string token;                    // the admin token /api/ requires (empty: /api/ refused)
    std::string token_file;               // where tetherctl finds it (named in 401 answers)
    std::chrono::milliseconds call_timeout{5000};    // loop hop for API calls
    std::chrono::milliseconds health_timeout{1000};  // loop hop for /healthz
    std::chrono::milliseconds reload_timeout{60000};  // reading and applying the config file
    int threads = 4;                      // HTTP worker threads (they never wait for clients)
    std::chrono::milliseconds request_timeout{2000};  // connect to complete request
  };
  // Requests refused and connections dropped, since Start().
  struct Counters {
    uint64_t unauthorized = 0;  // /api/ without the admin token
    uint64_t wrong_host = 0;    // Host naming another server
    uint64_t browser = 0;       // Origin header or a POST that is not JSON
    uint64_t timed_out = 0;     // request not complete within request_timeout
    uint64_t evicted = 0;       // closed for a newer one while too many waited to send
    uint64_t too_large = 0;     // head or body over the limit
    uint64_t overloaded = 0;    // too many complete requests waiting for a worker
  };
  // `backend` and `loop` must outlive the server.
  AdminServer(Options options, AdminBackend* backend, LoopCaller* loop);
  ~AdminServer();  // Stop()
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;

  // Binds and starts serving; throws AdminBindError naming the address on failure.
  void Start();
  // Stops accepting and joins the threads. When called on the loop thread, call
  // LoopCaller::Shutdown() first so in-flight handlers waiting for the loop fail fast.
  void Stop();
  uint16_t port() const { return port_; }  // the bound port, valid after Start()
  Counters counters() const;                // any thread

 private:
  void Routes();
  // Whether a Host header value names this server (see the header comment).
  bool HostNamesThisServer(const std::string& host) const;
  Options options_;
  AdminBackend* backend_;
  LoopCaller* loop_;
  std::unique_ptr<HttpRoutes> routes_;
  std::unique_ptr<BufferedHttpServer> http_;
  std::string host_name_;  // this machine's name, lowercase
  uint16_t port_ = 0;
  std::atomic<uint64_t> unauthorized_{0}, wrong_host_{0}, browser_{0};
};

}  // namespace tether
