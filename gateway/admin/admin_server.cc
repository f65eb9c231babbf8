#include "gateway/admin/admin_server.h"

#include <arpa/inet.h>
#include <httplib.h>
#include <strings.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <future>
#include <thread>

#include "gateway/config/admin_token.h"
#include "gateway/admin/buffered_http_server.h"
#include "gateway/admin/metrics.h"
#include "util/host_port.h"

namespace tether {

// ---- AdminServer ----

int HttpStatusOf(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalid: return 400;
    case ErrorCode::kUnauthorized: return 401;
    case ErrorCode::kForbidden: return 403;
    case ErrorCode::kNotFound: return 404;
    case ErrorCode::kMethodNotAllowed: return 405;
    case ErrorCode::kNotAcceptable: return 406;
    case ErrorCode::kConflict: return 409;
    case ErrorCode::kTooLarge: return 413;
    case ErrorCode::kUnsupportedFormat: return 415;
    case ErrorCode::kWrongHost: return 421;  // Misdirected Request (RFC 9110 §15.5.20)
    case ErrorCode::kUnavailable: return 503;
    case ErrorCode::kInternal: return 500;
  }
  return 500;
}

namespace {

constexpr const char* kJson = "application/json";

void SendJson(httplib::Response& res, int status, const nlohmann::json& body) {
  res.status = status;
  res.set_content(body.dump(2) + "\n", kJson);
}

void SendError(httplib::Response& res, const Diagnostic& d) {
  SendJson(res, HttpStatusOf(d.code), {{"error", d.message}});
}

void SendResult(httplib::Response& res, const AdminResult& r) {
  if (!r) return SendError(res, r.error());
  nlohmann::json body = {{"ok", true}, {"message", r->message}};
  if (r->detail.is_object()) body.update(r->detail);
  SendJson(res, 200, body);
}

// Parses {"id": "x"|n} or {"all": true}: an id, or nullopt for all.
Expected<std::optional<std::string>> ParseSelector(const std::string& text) {
  nlohmann::json body = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (body.is_object() && body.size() == 1) {
    if (auto it = body.find("all"); it != body.end() && *it == true) return std::optional<std::string>();
    if (auto it = body.find("id"); it != body.end()) {
      if (it->is_string() && !it->get<std::string>().empty()) return std::optional(it->get<std::string>());
      if (it->is_number_integer()) return std::optional(it->dump());
    }
  }
  return Diagnostic::Invalid(R"(body must be {"id": "<dead letter id>"} or {"all": true})");
}

}  // namespace

AdminServer::AdminServer(Options options, AdminBackend* backend, LoopCaller* loop)
    : options_(std::move(options)), backend_(backend), loop_(loop) {
  char name[256] = {0};
  if (gethostname(name, sizeof name - 1) == 0) host_name_ = name;
  for (char& c : host_name_) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
}

AdminServer::~AdminServer() { Stop(); }

void AdminServer::Start() {
  routes_ = std::make_unique<HttpRoutes>();
  routes_->set_payload_max_length(64 * 1024);
  Routes();
  BufferedHttpServer::Options o;
  o.host = options_.listen.host;
  o.port = options_.listen.port;
  o.workers = options_.threads;
  o.request_timeout = options_.request_timeout;
  http_ = std::make_unique<BufferedHttpServer>(o, routes_.get());
  std::string error;
  if (!http_->Start(&error)) {
    http_.reset();
    throw AdminBindError("admin: cannot listen on " + options_.listen.ToString() + ": " + error +
                         " (check admin.listen; is another tetherd running?)");
  }
  port_ = http_->port();
}

void AdminServer::Stop() {
  if (!http_) return;
  http_->Stop();
}

AdminServer::Counters AdminServer::counters() const {
  Counters c;
  c.unauthorized = unauthorized_;
  c.wrong_host = wrong_host_;
  c.browser = browser_;
  if (http_) {
    const BufferedHttpServer::Counters& h = http_->counters();
    c.timed_out = h.timed_out;
    c.evicted = h.evicted;
    c.too_large = h.too_large;
    c.overloaded = h.overloaded;
  }
  return c;
}

bool AdminServer::HostNamesThisServer(const std::string& header) const {
  if (header.empty()) return true;  // HTTP/1.0 clients; browsers always send Host
  std::optional<util::HostPortText> split = util::SplitHostPort(header);
  if (!split) return false;
  std::string host = split->host, port = split->port.value_or("");
  if (!port.empty() && port != std::to_string(port_)) return false;
  for (char& c : host) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (!host.empty() && host.back() == '.') host.pop_back();
  // IP literals compare as addresses ("127.0.0.1" and "::1" forms alike).
  auto ip = [](const std::string& s) -> std::string {
    unsigned char b[16];
    if (inet_pton(AF_INET, s.c_str(), b) == 1) return std::string(reinterpret_cast<char*>(b), 4);
    if (inet_pton(AF_INET6, s.c_str(), b) == 1) return std::string(reinterpret_cast<char*>(b), 16);
    return {};
  };
  std::string listen = options_.listen.host;
  for (char& c : listen) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  const std::string host_ip = ip(host), listen_ip = ip(listen);
  const bool wildcard = listen == "0.0.0.0" || listen == "::" || listen.empty();
  const bool loopback = listen == "localhost" || (listen_ip.size() == 4 && listen_ip[0] == 127) ||
                        listen_ip == std::string(15, '\0') + '\1';
  if (!host_ip.empty()) return wildcard || host_ip == listen_ip;
  if (host == listen) return true;
  if (host == "localhost") return loopback || wildcard;
  // A rebinding page controls its own name, never this machine's: allow that for LAN scrapes.
  return !loopback && !host_name_.empty() && (host == host_name_ || host == host_name_.substr(0, host_name_.find('.')));
}

void AdminServer::Routes() {
  httplib::Server& s = *routes_;
  const auto timeout = options_.call_timeout;
  AdminBackend* b = backend_;

  // Runs fn (returning json or AdminResult) on the loop thread and writes the response: 503 when
  // the loop does not answer in time, 500 when the backend throws.
  auto serve = [loop = loop_, timeout](httplib::Response& res, auto fn) {
    try {
      auto out = loop->Call(std::move(fn), timeout);
      if (!out) {
        return SendError(res, {ErrorCode::kUnavailable, "tetherd event loop did not answer within " +
                                                            std::to_string(timeout.count()) +
                                                            " ms (overloaded or shutting down)"});
      }
      if constexpr (std::is_same_v<std::decay_t<decltype(*out)>, AdminResult>) {
        SendResult(res, *out);
      } else {
        SendJson(res, 200, *out);
      }
    } catch (const std::exception& e) {
      SendError(res, {ErrorCode::kInternal, e.what()});
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
        if (!once->exchange(true)) promise->set_value(Diagnostic{ErrorCode::kInternal, e.what()});
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
      return SendError(res, {ErrorCode::kUnavailable, "tetherd did not confirm the change within " +
                                                          std::to_string(timeout.count()) +
                                                          " ms (overloaded or shutting down); it may still be applied"});
    }
    SendResult(res, *out);
  };

  s.Get("/metrics", [b, loop = loop_, timeout](const httplib::Request&, httplib::Response& res) {
    std::optional<std::string> text;
    try {
      text = loop->Call([b] { return b->MetricsText(); }, timeout);
    } catch (const std::exception& e) {
      return SendError(res, {ErrorCode::kInternal, e.what()});
    }
    if (!text) return SendError(res, {ErrorCode::kUnavailable, "tetherd event loop did not answer"});
    res.set_content(*text, MetricsRegistry::kContentType);
  });
  s.Get("/healthz", [loop = loop_, limit = options_.health_timeout](const httplib::Request&, httplib::Response& res) {
    if (loop->Call([] { return true; }, limit)) return res.set_content("ok\n", "text/plain");
    res.status = 503;
    res.set_content("event loop did not answer within " + std::to_string(limit.count()) + " ms\n", "text/plain");
  });
  s.Get("/readyz", [b, loop = loop_, timeout](const httplib::Request&, httplib::Response& res) {
    std::optional<std::string> why;  // "" = ready
    try {
      why = loop->Call([b] { return b->Ready() ? b->NotReadyReason() : std::string("the store or a socket is not open"); },
                       timeout);
    } catch (const std::exception&) {
    }
    res.status = why && why->empty() ? 200 : 503;
    res.set_content(!why ? "event loop not answering\n" : why->empty() ? "ready\n" : "not ready: " + *why + "\n",
                    "text/plain");
  });

  get("/api/v1/status", [b] { return b->Status(); });
  get("/api/v1/queue", [b] { return b->Queue(); });
  get("/api/v1/deadletters", [b] { return b->DeadLetters(); });
  // Not on the loop: a check reads every table and would stall the devices' traffic.
  s.Get("/api/v1/store/check", [b](const httplib::Request&, httplib::Response& res) {
    try {
      SendJson(res, 200, b->StoreCheck());
    } catch (const std::exception& e) {
      SendError(res, {ErrorCode::kInternal, e.what()});
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
             auto selected = ParseSelector(req.body);
             if (!selected) return SendError(res, selected.error());
             serve_later(res, timeout, [b, retry, id = *selected](std::function<void(AdminResult)> done) {
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
    s.Post(p, [](const httplib::Request&, httplib::Response& res) {
      SendError(res, {ErrorCode::kMethodNotAllowed, "use GET"});
    });
  }
  for (const char* p : {R"(/api/v1/sessions/(.+)/kick)", "/api/v1/deadletters/retry", "/api/v1/deadletters/drop",
                        "/api/v1/reload"}) {
    s.Get(p, [](const httplib::Request&, httplib::Response& res) {
      SendError(res, {ErrorCode::kMethodNotAllowed, "use POST"});
    });
  }
  // Who may ask (see the header): Host first (any path), then browser-made requests, then the
  // admin token for /api/.
  s.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (!HostNamesThisServer(req.get_header_value("Host"))) {
      ++wrong_host_;
      SendError(res, {ErrorCode::kWrongHost, "Host '" + req.get_header_value("Host") +
                                                 "' does not name this server; use the address it listens on (" +
                                                 HostPort{options_.listen.host, port_}.ToString() + ")"});
      return httplib::Server::HandlerResponse::Handled;
    }
    const bool api = req.path.rfind("/api/", 0) == 0;
    if ((api || req.method == "POST") && req.has_header("Origin")) {
      ++browser_;
      SendError(res, {ErrorCode::kForbidden, "requests from web pages are refused (Origin header present)"});
      return httplib::Server::HandlerResponse::Handled;
    }
    if (req.method == "POST") {
      std::string type = req.get_header_value("Content-Type");
      type = type.substr(0, type.find(';'));
      while (!type.empty() && type.back() == ' ') type.pop_back();
      for (char& c : type) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      if (type != kJson) {
        ++browser_;
        SendError(res, {ErrorCode::kUnsupportedFormat, "POST requests must have Content-Type: application/json"});
        return httplib::Server::HandlerResponse::Handled;
      }
    }
    if (api) {
      const std::string auth = req.get_header_value("Authorization");
      const bool bearer = auth.size() > 7 && strncasecmp(auth.c_str(), "Bearer ", 7) == 0;
      if (options_.token.empty() || !bearer || !SameAdminToken(auth.substr(7), options_.token)) {
        ++unauthorized_;
        res.set_header("WWW-Authenticate", "Bearer realm=\"tetherd\"");
        SendError(res, {ErrorCode::kUnauthorized, std::string(bearer ? "wrong" : "no") +
                                                      " admin token: the API needs the token in " + options_.token_file +
                                                      " (readable by root and group tether); run tetherctl as "
                                                      "root (sudo) or as a member of group tether"});
        return httplib::Server::HandlerResponse::Handled;
      }
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  s.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    // httplib chose the status (no route, a malformed request): it stays.
    SendJson(res, res.status, {{"error", res.status == 404 ? "no such endpoint: " + req.method + " " + req.path
                                                           : "request failed with HTTP " + std::to_string(res.status)}});
  });
}

}  // namespace tether
