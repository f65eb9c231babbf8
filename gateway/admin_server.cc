#include "gateway/admin_server.h"

#include <httplib.h>

#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>

#include "gateway/metrics.h"

namespace tether {

// ---- LoopCaller ----

struct LoopCaller::State {
  uv_async_t async;                 // owned by the loop thread; freed after its close callback
  std::mutex mu;
  std::deque<std::function<void()>> queue;  // guarded by mu
  bool closed = false;                      // guarded by mu
  std::shared_ptr<State> self;              // keeps State alive until the close callback
};

LoopCaller::LoopCaller(uv_loop_t* loop) : state_(std::make_shared<State>()) {
  state_->async.data = state_.get();
  uv_async_init(loop, &state_->async, [](uv_async_t* a) {
    auto* st = static_cast<State*>(a->data);
    std::deque<std::function<void()>> work;
    {
      std::lock_guard<std::mutex> lock(st->mu);
      if (st->closed) return;
      work.swap(st->queue);
    }
    for (auto& fn : work) fn();
  });
  state_->self = state_;
}

LoopCaller::~LoopCaller() { Shutdown(); }

bool LoopCaller::Post(std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    if (state_->closed || state_->queue.size() >= kMaxQueued) return false;
    state_->queue.push_back(std::move(fn));
    uv_async_send(&state_->async);  // under mu: never races with Shutdown()'s uv_close
  }
  return true;
}

void LoopCaller::Shutdown() {
  std::deque<std::function<void()>> dropped;  // destroyed outside the lock: breaks the promises
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    if (state_->closed) return;
    state_->closed = true;
    dropped.swap(state_->queue);
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&state_->async), [](uv_handle_t* h) {
    auto* st = static_cast<State*>(h->data);
    st->self.reset();  // may delete st
  });
}

// ---- AdminServer ----

namespace {

constexpr const char* kJson = "application/json";

int HttpStatus(AdminResult::Code c) {
  switch (c) {
    case AdminResult::Code::kOk: return 200;
    case AdminResult::Code::kInvalid: return 400;
    case AdminResult::Code::kNotFound: return 404;
    case AdminResult::Code::kConflict: return 409;
    case AdminResult::Code::kUnavailable: return 503;
    case AdminResult::Code::kFailed: return 500;
  }
  return 500;
}

void SendJson(httplib::Response& res, int status, const nlohmann::json& body) {
  res.status = status;
  res.set_content(body.dump(2) + "\n", kJson);
}

void SendError(httplib::Response& res, int status, const std::string& message) {
  SendJson(res, status, {{"error", message}});
}

void SendResult(httplib::Response& res, const AdminResult& r) {
  if (r.code != AdminResult::Code::kOk) return SendError(res, HttpStatus(r.code), r.message);
  nlohmann::json body = {{"ok", true}, {"message", r.message}};
  if (r.detail.is_object()) body.update(r.detail);
  SendJson(res, 200, body);
}

// Parses {"id": "x"|n} or {"all": true}: nullopt id means all. Returns false on a bad body.
bool ParseSelector(const std::string& text, std::optional<std::string>* id, std::string* error) {
  nlohmann::json body = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (body.is_object() && body.size() == 1) {
    if (auto it = body.find("all"); it != body.end() && *it == true) {
      id->reset();
      return true;
    }
    if (auto it = body.find("id"); it != body.end()) {
      if (it->is_string() && !it->get<std::string>().empty()) {
        *id = it->get<std::string>();
        return true;
      }
      if (it->is_number_integer()) {
        *id = it->dump();
        return true;
      }
    }
  }
  *error = R"(body must be {"id": "<dead letter id>"} or {"all": true})";
  return false;
}

}  // namespace

AdminServer::AdminServer(Options options, AdminBackend* backend, LoopCaller* loop)
    : options_(std::move(options)), backend_(backend), loop_(loop) {}

AdminServer::~AdminServer() { Stop(); }

void AdminServer::Start() {
  http_ = std::make_unique<httplib::Server>();
  int threads = options_.threads > 0 ? options_.threads : 1;
  http_->new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  http_->set_payload_max_length(64 * 1024);
  http_->set_read_timeout(std::chrono::seconds(5));
  http_->set_write_timeout(std::chrono::seconds(5));
  // httplib's default also sets SO_REUSEPORT, which would let a second tetherd share the port.
  http_->set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  Routes();

  const std::string addr = options_.listen.host + ":" + std::to_string(options_.listen.port);
  errno = 0;
  int port = options_.listen.port == 0 ? http_->bind_to_any_port(options_.listen.host)
                                       : (http_->bind_to_port(options_.listen.host, options_.listen.port)
                                              ? options_.listen.port
                                              : -1);
  if (port <= 0) {
    int err = errno;
    http_.reset();
    throw AdminBindError("admin: cannot listen on " + addr + (err ? std::string(": ") + std::strerror(err) : "") +
                         " (check admin.listen; is another tetherd running?)");
  }
  port_ = static_cast<uint16_t>(port);
  thread_ = std::thread([this] { http_->listen_after_bind(); });
  // httplib's stop() is a no-op until the listen thread has marked itself running; wait for that
  // so a Stop() right after Start() cannot leave the thread blocked in accept() forever.
  // (Bounded: if the thread already returned, join() in Stop() does not block either.)
  for (int i = 0; i < 5000 && !http_->is_running(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

void AdminServer::Stop() {
  if (!http_) return;
  http_->stop();
  if (thread_.joinable()) thread_.join();
  http_.reset();
}

void AdminServer::Routes() {
  httplib::Server& s = *http_;
  const auto timeout = options_.call_timeout;
  AdminBackend* b = backend_;

  // Runs fn (returning json or AdminResult) on the loop thread and writes the response: 503 when
  // the loop does not answer in time, 500 when the backend throws.
  auto serve = [loop = loop_, timeout](httplib::Response& res, auto fn) {
    try {
      auto out = loop->Call(std::move(fn), timeout);
      if (!out) {
        return SendError(res, 503, "tetherd event loop did not answer within " + std::to_string(timeout.count()) +
                                       " ms (overloaded or shutting down)");
      }
      if constexpr (std::is_same_v<std::decay_t<decltype(*out)>, AdminResult>) {
        SendResult(res, *out);
      } else {
        SendJson(res, 200, *out);
      }
    } catch (const std::exception& e) {
      SendError(res, 500, e.what());
    }
  };
  auto get = [&s, serve](const std::string& path, auto fn) {
    s.Get(path, [serve, fn](const httplib::Request&, httplib::Response& res) { serve(res, fn); });
  };
  // Like serve, for a backend call that answers later: start(done) runs on the loop thread and
  // the reply waits until done(AdminResult) has run there (or the call timeout passed).
  auto serve_later = [loop = loop_](httplib::Response& res, std::chrono::milliseconds timeout, auto start) {
    auto promise = std::make_shared<std::promise<AdminResult>>();
    std::future<AdminResult> future = promise->get_future();
    bool posted = loop->Post([promise, start = std::move(start)]() mutable {
      auto once = std::make_shared<std::atomic<bool>>(false);
      try {
        start([promise, once](AdminResult r) {
          if (!once->exchange(true)) promise->set_value(std::move(r));
        });
      } catch (const std::exception& e) {
        if (!once->exchange(true)) promise->set_value(AdminResult::Error(AdminResult::Code::kFailed, e.what()));
      }
    });
    std::optional<AdminResult> out;
    if (posted && future.wait_for(timeout) == std::future_status::ready) {
      try {
        out = future.get();
      } catch (const std::future_error&) {  // dropped at shutdown
      }
    }
    if (!out) {
      return SendError(res, 503, "tetherd did not confirm the change within " + std::to_string(timeout.count()) +
                                     " ms (overloaded or shutting down); it may still be applied");
    }
    SendResult(res, *out);
  };

  s.Get("/metrics", [b, loop = loop_, timeout](const httplib::Request&, httplib::Response& res) {
    std::optional<std::string> text;
    try {
      text = loop->Call([b] { return b->MetricsText(); }, timeout);
    } catch (const std::exception& e) {
      return SendError(res, 500, e.what());
    }
    if (!text) return SendError(res, 503, "tetherd event loop did not answer");
    res.set_content(*text, MetricsRegistry::kContentType);
  });
  s.Get("/healthz", [loop = loop_, limit = options_.health_timeout](const httplib::Request&, httplib::Response& res) {
    if (loop->Call([] { return true; }, limit)) return res.set_content("ok\n", "text/plain");
    res.status = 503;
    res.set_content("event loop did not answer within " + std::to_string(limit.count()) + " ms\n", "text/plain");
  });
  s.Get("/readyz", [b, loop = loop_, timeout](const httplib::Request&, httplib::Response& res) {
    std::optional<bool> ready;
    try {
      ready = loop->Call([b] { return b->Ready(); }, timeout);
    } catch (const std::exception&) {
    }
    res.status = ready && *ready ? 200 : 503;
    res.set_content(!ready ? "event loop not answering\n" : *ready ? "ready\n" : "not ready\n", "text/plain");
  });

  get("/api/v1/status", [b] { return b->Status(); });
  get("/api/v1/queue", [b] { return b->Queue(); });
  get("/api/v1/deadletters", [b] { return b->DeadLetters(); });
  // Not on the loop: a check reads every table and would stall the devices' traffic.
  s.Get("/api/v1/store/check", [b](const httplib::Request&, httplib::Response& res) {
    try {
      SendJson(res, 200, b->StoreCheck());
    } catch (const std::exception& e) {
      SendError(res, 500, e.what());
    }
  });
  s.Get("/api/v1/sessions", [b, serve](const httplib::Request& req, httplib::Response& res) {
    std::optional<std::string> app;
    if (req.has_param("app") && !req.get_param_value("app").empty()) app = req.get_param_value("app");
    serve(res, [b, app] { return b->Sessions(app); });
  });
  s.Post(R"(/api/v1/sessions/(.+)/kick)", [b, serve](const httplib::Request& req, httplib::Response& res) {
    std::string device = req.matches[1];
    serve(res, [b, device] { return b->Kick(device); });
  });
  for (bool retry : {true, false}) {
    s.Post(retry ? "/api/v1/deadletters/retry" : "/api/v1/deadletters/drop",
           [b, serve_later, retry, timeout](const httplib::Request& req, httplib::Response& res) {
             std::optional<std::string> id;
             std::string error;
             if (!ParseSelector(req.body, &id, &error)) return SendError(res, 400, error);
             serve_later(res, timeout, [b, retry, id](std::function<void(AdminResult)> done) {
               retry ? b->RetryDeadLetter(id, std::move(done)) : b->DropDeadLetter(id, std::move(done));
             });
           });
  }
  s.Post("/api/v1/reload", [b, serve_later, limit = options_.reload_timeout](const httplib::Request&,
                                                                             httplib::Response& res) {
    serve_later(res, limit, [b](std::function<void(AdminResult)> done) { b->Reload(std::move(done)); });
  });

  // Known paths with the wrong method: 405 rather than httplib's 404.
  for (const char* p : {"/metrics", "/healthz", "/readyz", "/api/v1/status", "/api/v1/queue", "/api/v1/deadletters",
                        "/api/v1/store/check", "/api/v1/sessions"}) {
    s.Post(p, [](const httplib::Request&, httplib::Response& res) { SendError(res, 405, "use GET"); });
  }
  for (const char* p : {R"(/api/v1/sessions/(.+)/kick)", "/api/v1/deadletters/retry", "/api/v1/deadletters/drop",
                        "/api/v1/reload"}) {
    s.Get(p, [](const httplib::Request&, httplib::Response& res) { SendError(res, 405, "use POST"); });
  }
  // CSRF and DNS-rebinding guard (see the header): browsers add Origin to cross-site requests
  // and cannot send a JSON POST cross-origin without a preflight, which is never answered.
  s.set_pre_routing_handler([](const httplib::Request& req, httplib::Response& res) {
    const bool api = req.path.rfind("/api/", 0) == 0;
    if ((api || req.method == "POST") && req.has_header("Origin")) {
      SendError(res, 403, "requests from web pages are refused (Origin header present)");
      return httplib::Server::HandlerResponse::Handled;
    }
    if (req.method == "POST") {
      std::string type = req.get_header_value("Content-Type");
      type = type.substr(0, type.find(';'));
      while (!type.empty() && type.back() == ' ') type.pop_back();
      for (char& c : type) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      if (type != kJson) {
        SendError(res, 415, "POST requests must have Content-Type: application/json");
        return httplib::Server::HandlerResponse::Handled;
      }
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  s.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    SendError(res, res.status, res.status == 404 ? "no such endpoint: " + req.method + " " + req.path
                                                 : "request failed with HTTP " + std::to_string(res.status));
  });
}

}  // namespace tether
