#include "gateway/daemon/daemon.h"

#include <spdlog/spdlog.h>

#include "gateway/config/admin_token.h"
#include "gateway/config/auth_override.h"
#include "gateway/daemon/daemon_config.h"
#include "gateway/daemon/log.h"
#include "gateway/config/secret_file.h"
#include "store/store_error.h"
#include "upstream/rest_get.h"

#include <set>

namespace tether {

Daemon::Daemon(Config config, std::string config_path)
    : started_(config), config_(std::move(config)), config_path_(std::move(config_path)) {
  uv_loop_init(&loop_);
}

Daemon::~Daemon() {
  if (device_api_) device_api_->SetObservedPathHook(nullptr);
  watches_.reset();
  streams_.clear();
  clock_.reset();
  drainer_.reset();
  credentials_.reset();
  http_.reset();
  cloud_.reset();
  admin_.reset();
  admin_backend_.reset();
  loop_caller_.reset();
  endpoint_.reset();
  device_api_.reset();
  local_copy_.reset();
  store_.reset();
  uv_run(&loop_, UV_RUN_NOWAIT);
  uv_loop_close(&loop_);
}

int Daemon::Run() {
  notifier_ = std::make_unique<ServiceNotifier>(&loop_);
  for (auto [h, sig] : {std::pair{&sigterm_, SIGTERM}, {&sigint_, SIGINT}, {&sighup_, SIGHUP}}) {
    uv_signal_init(&loop_, h);
    h->data = this;
    uv_signal_start(h, OnSignal, sig);
  }

  spdlog::info("tetherd starting: gateway id '{}', config {}", config_.gateway_id, config_path_);
  if (!StartModules()) {
    Stop();
    uv_run(&loop_, UV_RUN_DEFAULT);
    return 1;
  }
  if (config_.upstream) {
    spdlog::info("upstream: {}", config_.upstream->url);
  } else {
    spdlog::info("local-only mode: no upstream configured; devices are served from the local store "
                 "and writes queue until a cloud is configured");
  }
  notifier_->Ready(config_.upstream ? "serving" : "serving (local-only)");

  uv_run(&loop_, UV_RUN_DEFAULT);
  // Let close callbacks of handles closed during Stop() run.
  uv_run(&loop_, UV_RUN_DEFAULT);
  spdlog::info("tetherd stopped");
  return 0;
}

bool Daemon::StartModules() {
  try {
    store_ = store::Store::Open(config_.store.path, StoreOptionsFrom(config_), &loop_);
  } catch (const store::StoreError& e) {
    spdlog::critical("cannot open the store: {}", e.what());
    return false;
  }
  spdlog::info("store open at {}: {} queued write(s), {} session(s)", config_.store.path,
               store_->queue().Totals().entries, store_->sessions().Count());
  try {
    local_copy_ = std::make_unique<LocalCopy>(&loop_, *store_);
    device_api_ = std::make_unique<DeviceApi>(&loop_, *store_, *local_copy_, std::make_shared<RouteTable>(config_));
    // A reload replaces psk_: a DTLS session's identity is judged by the keys in force.
    device_api_->SetPskKnown([this](std::string_view identity) { return !psk_ || psk_->KeyFor(identity).has_value(); });
  } catch (const ConfigError& e) {
    spdlog::critical("{}", e.what());
    return false;
  }
  // Every session's last datagram, kept where a crash of this process cannot lose it.
  device_api_->SetLivenessFile(std::make_unique<LivenessFile>(config_.store.path + "/liveness"));
  device_api_->RestoreSessions();
  coap::EndpointOptions eo;
  eo.max_datagram = config_.device.max_datagram;
  eo.max_block1_body = config_.device.max_payload;
  endpoint_ = std::make_unique<coap::Endpoint>(&loop_, *device_api_, eo);
  const HostPort& l = config_.device.listen;
  if (int rc = endpoint_->listen(l.host.c_str(), l.port); rc != 0) {
    spdlog::critical("cannot listen for CoAP on udp {}: {}", l.ToString(), uv_strerror(rc));
    return false;
  }
  device_api_->AttachEndpoint(endpoint_.get());
  spdlog::info("listening for CoAP on udp {}", HostPort{l.host, endpoint_->local_port()}.ToString());
  if (config_.dtls && !StartDtls()) return false;

  if (config_.upstream && !StartUpstream()) return false;

  loop_caller_ = std::make_unique<LoopCaller>(&loop_);
  DaemonAdmin::Parts parts;
  parts.loop = &loop_;
  parts.config = &config_;
  parts.store = store_.get();
  parts.devices = device_api_.get();
  parts.endpoint = endpoint_.get();
  parts.reload = [this](std::function<void(AdminResult)> done) { Reload(std::move(done)); };
  if (config_.upstream) parts.upstream = [this] { return Upstream(); };
  parts.admin = [this] { return admin_ ? admin_->counters() : AdminServer::Counters{}; };
  admin_backend_ = std::make_unique<DaemonAdmin>(std::move(parts));
  AdminServer::Options ao;
  ao.listen = config_.admin_listen;
  ao.token_file = config_.admin_token_file;
  ao.token = NewAdminToken();
  admin_ = std::make_unique<AdminServer>(ao, admin_backend_.get(), loop_caller_.get());
  try {
    admin_->Start();
    // Only once the port is ours: a second tetherd that cannot bind leaves the first one's token.
    WriteAdminToken(ao.token_file, ao.token);
    admin_token_ = ao.token;
  } catch (const std::exception& e) {
    spdlog::critical("{}", e.what());
    return false;
  }
  spdlog::info("admin endpoint on http://{} (/metrics, /healthz, /readyz; tetherctl with the token in {})",
               HostPort{config_.admin_listen.host, admin_->port()}.ToString(), config_.admin_token_file);
  return true;
}

namespace {
// A device GET outside the sync roots waits at most this long for the cloud before the local
// copy answers (the engine sends an empty ACK after 1 s, so the SDK does not retransmit).
constexpr long kCloudReadTimeoutMs = 2000;

// Where the uploader keeps its exactly-once marks for increments: one small node per route.
std::string AppliedMarkPath(const std::string& gateway_id) { return "tether-applied/" + PresenceKey(gateway_id); }

// What the uploader drains for each configured route: its cloud root and priority.
std::vector<upstream::RouteTarget> UploadTargets(const RouteTable& routes) {
  std::vector<upstream::RouteTarget> targets;
  for (size_t i = 0; i < routes.routes().size(); ++i) {
    const RouteConfig& r = routes.routes()[i];
    targets.push_back({r.name, JoinPath(routes.CloudRoot(static_cast<int>(i))), r.priority});
  }
  return targets;
}

// A credentials file without its trailing newline. Throws naming the file, never the content.
std::string ReadCredential(const std::string& path) {
  std::string s = ReadSecretFile(path);
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  if (s.empty()) throw std::runtime_error("credentials file " + path + " is empty");
  return s;
}
}  // namespace

bool Daemon::StartDtls() {
  const DtlsConfig& d = *config_.dtls;
  try {
    psk_ = std::make_shared<const PskStore>(d);
  } catch (const ConfigError& e) {
    spdlog::critical("{}", e.what());
    return false;
  }
  coap::DtlsOptions o;
  o.max_live = d.max_live_sessions;
  o.max_sessions = d.max_sessions;
  o.max_handshakes = d.max_handshakes;
  o.sleep_after_ms = static_cast<uint32_t>(d.sleep_after.count());
  o.session_timeout_ms = static_cast<uint32_t>(std::min<int64_t>(d.session_timeout.count(), UINT32_MAX));
  o.handshake_timeout_ms = static_cast<uint32_t>(d.handshake_timeout.count());
  o.hellos_per_second = d.hellos_per_second;
  int rc = 0;
  try {
    // Keys are looked up through psk_ so a reload can replace them for new handshakes.
    rc = endpoint_->listen_dtls(d.listen.host.c_str(), d.listen.port, o,
                                [this](std::string_view identity) { return psk_->KeyFor(identity); });
  } catch (const std::exception& e) {
    spdlog::critical("{}", e.what());
    return false;
  }
  if (rc != 0) {
    spdlog::critical("cannot listen for CoAP over DTLS on udp {}: {}", d.listen.ToString(), uv_strerror(rc));
    return false;
  }
  spdlog::info("listening for CoAP over DTLS on udp {} ({} listed key(s){})",
               HostPort{d.listen.host, endpoint_->local_port(1)}.ToString(), psk_->listed(),
               d.master_key_file.empty() ? "" : ", others derived from the master key");
  return true;
}

bool Daemon::StartUpstream() {
  const UpstreamConfig& u = *config_.upstream;
  auto routes = std::make_shared<RouteTable>(config_);
  upstream::HttpClientOptions ho;
  ho.ca_file = u.ca_file;
  http_ = std::make_unique<upstream::HttpClient>(&loop_, ho);
  try {
    if (!u.secret_file.empty()) {
      credentials_ = upstream::MakeDatabaseSecret(ReadCredential(u.secret_file));
    } else if (!u.access_token_file.empty()) {
      ReadCredential(u.access_token_file);  // fail at startup, not at the first upload
      credentials_ = upstream::MakeAccessTokenFile(u.access_token_file, [](const std::string& path) {
        try {
          return ReadSecretFile(path);
        } catch (const SecretFileError& e) {
          spdlog::error("upstream.access_token_file: {}; uploads go without a token until the file changes", e.what());
          throw;
        }
      });
    } else if (!u.service_account_file.empty()) {
      std::string err;
      credentials_ = upstream::MakeServiceAccount(&loop_, *http_, ReadCredential(u.service_account_file), &err);
      if (!credentials_) throw std::runtime_error(u.service_account_file + ": " + err);
    } else {
      credentials_ = upstream::MakeNoCredentials();
    }
  } catch (const std::exception& e) {
    spdlog::critical("upstream credentials: {}", e.what());
    return false;
  }
  cloud_ = std::make_unique<CloudBridge>(*store_, *local_copy_, routes);
  cloud_->SetLinkListener(device_api_.get());
  if (!u.auth_variable_override.empty()) {
    cloud_->SetAuthOverride(*AuthOverride::Parse(u.auth_variable_override, nullptr), config_.gateway_id);
    spdlog::info("uploads are evaluated by the cloud's rules as the writing device (auth_variable_override)");
  }
  std::vector<upstream::RouteTarget> targets = UploadTargets(*routes);
  // A route removed from the file keeps its backlog: it uploads to the paths it was accepted for.
  for (const store::RouteQueueStats& rs : store_->queue().AllStats()) {
    bool configured = false;
    for (const auto& r : config_.routes) configured |= r.name == rs.route;
    if (configured || rs.depth == 0) continue;
    spdlog::warn("route '{}' is no longer configured; its {} queued write(s) still upload to the cloud "
                 "paths they were accepted for", rs.route, rs.depth);
    targets.push_back({rs.route, "", 0});
  }
  // Any request on the link: an answer means the cloud is reachable (routes backing off for the
  // link go at once, a clock without a current estimate samples), no answer that it is not.
  auto link = [this](bool reachable) {
    cloud_->OnLinkChanged(reachable);
    clock_->link_changed(reachable);
    if (reachable) drainer_->link_up();
  };
  upstream::DrainerOptions o;
  o.base_url = u.url;
  o.on_link = link;
  o.applied_path = AppliedMarkPath(config_.gateway_id);
  o.queue_id = store_->instance_id();
  drainer_ = std::make_unique<upstream::Drainer>(&loop_, *http_, *credentials_, *cloud_, targets, o);
  device_api_->SetQueuedHook([this](const std::string& route) { drainer_->notify(route); });
  cloud_->SetClockReadyHook([this] {  // every route the drainer knows, including reloaded ones
    for (const auto& [route, stats] : drainer_->stats()) drainer_->notify(route);
  });
  cloud_->SetSettledHook([this](const std::string& route) {
    if (drainer_) drainer_->notify(route);
  });
  cloud_->SetClockWait(u.clock_wait.count(), u.on_clock_timeout == UpstreamConfig::OnClockTimeout::kUpload);

  // Presence node + cloud clock: the offset corrects event times and push ids.
  upstream::CloudClockOptions co;
  co.base_url = u.url;
  co.presence_path = JoinPath(SplitPath(u.presence_path));
  co.on_link = [this](bool connected) {  // the clock's own requests (it knows their outcome itself)
    cloud_->OnLinkChanged(connected);
    if (connected) drainer_->link_up();
  };
  co.on_change = [this, presence = co.presence_path, error = std::string()]() mutable {
    if (clock_->last_error() != error) {
      error = clock_->last_error();
      if (!error.empty()) {
        spdlog::warn("cloud clock via /{}: {}; {}", presence, error,
                     clock_->current() ? fmt::format("estimated from the {} (+-{} ms)",
                                                     upstream::CloudClock::SourceName(clock_->source()),
                                                     clock_->uncertainty_ms())
                                       : std::string("retrying (writes with server timestamps wait for an estimate)"));
      }
    }
    cloud_->SetClockProblem(clock_->current() ? "" : clock_->last_error());
    cloud_->OnClockEstimate(clock_->boot_offset_ms(), clock_->rtt_ms(), clock_->current());
  };
  clock_ = std::make_unique<upstream::CloudClock>(&loop_, *http_, *credentials_, co);

  // Sync roots: cloud data streamed into the local copy, kept while offline.
  std::set<std::string> roots = SyncRoots(config_);
  auto on_polling = [](const std::string& path, bool polling, const std::string& why) {
    if (polling) spdlog::warn("the cloud does not stream /{} ({}): it is read periodically instead", path, why);
    else spdlog::info("the cloud streams /{} again", path);
  };
  for (const std::string& root : roots) {
    upstream::SyncStreamOptions so;
    so.base_url = u.url;
    so.root = root;
    so.poll_interval_ms = u.observe_poll_interval.count();
    so.on_polling = [root, on_polling](bool polling, const std::string& why) { on_polling(root, polling, why); };
    auto on_event = [this, root](const upstream::FirebaseEvent& e, bool full_resync) {
      using K = upstream::FirebaseEvent::Kind;
      if (e.kind != K::Put && e.kind != K::Patch) return;
      std::string abs = JoinPath(SplitPath(root + "/" + e.path));
      local_copy_->OnSyncData(abs, e.data, e.kind == K::Patch);
      if (full_resync) spdlog::info("sync root /{} resynced from the cloud", root);
    };
    auto on_cancel = [root](const std::string& why) {
      spdlog::error("cloud cancelled the sync of /{}: {} (check the database rules)", root, why);
    };
    streams_.push_back(
        std::make_unique<upstream::SyncStream>(&loop_, *http_, *credentials_, so, on_event, on_cancel, link));
  }
  if (!roots.empty()) spdlog::info("syncing {} root(s) from the cloud", roots.size());

  // Paths devices observe outside the sync roots: a stream each (bounded), else re-read.
  upstream::WatchSetOptions wo;
  wo.base_url = u.url;
  wo.max_streams = u.observe_streams;
  wo.poll_interval_ms = u.observe_poll_interval.count();
  wo.on_link = link;
  wo.on_polling = on_polling;
  watches_ = std::make_unique<upstream::WatchSet>(
      &loop_, *http_, *credentials_, wo,
      [this](const std::string& path, const Json& value, bool is_patch) {
        local_copy_->OnSyncData(path, value, is_patch);
      });
  std::vector<std::string> root_list(roots.begin(), roots.end());
  device_api_->SetObservedPathHook([this, root_list](const std::string& path, bool observed) {
    if (path.rfind(".info", 0) == 0) return;
    store_->KeepCached("/" + path, observed);  // observers are answered from the local copy
    for (const auto& root : root_list) {
      if (root.empty() || path == root || path.compare(0, root.size() + 1, root + "/") == 0) return;
    }
    if (observed) watches_->watch(path);
    else watches_->unwatch(path);
  });
  local_copy_->SetCloudReader(
      [this, url = u.url, link](const std::string& path, const std::string& query,
                                std::function<void(std::optional<Json>)> done) {
        upstream::RestGet(*http_, *credentials_, url, path, query, kCloudReadTimeoutMs, false,
                          [done = std::move(done), link](upstream::GetResult r) {
                            if (r.status != 0) link(true);  // a slow read proves nothing about the link
                            done(r.ok ? std::optional<Json>(std::move(r.value)) : std::nullopt);
                          });
      },
      root_list);

  // Cloud traffic starts once the first credential is there (or could not be had: then 401s
  // refresh it later), so no request goes out without one.
  credentials_->refresh([this, n = targets.size(), url = u.url](bool) {
    if (stopping_) return;
    drainer_->start();
    clock_->start();
    for (auto& st : streams_) st->start();
    spdlog::info("uploading {} route(s) to {}", n, url);
  });
  return true;
}

void Daemon::OnSignal(uv_signal_t* h, int signum) {
  auto* self = static_cast<Daemon*>(h->data);
  if (signum == SIGHUP) {
    self->Reload(nullptr);
  } else {
    spdlog::info("received {}, stopping", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    self->Stop();
  }
}

// One reload: inputs read on the loop, outputs written on the thread pool, applied on the loop.
struct Daemon::ReloadJob {
  uv_work_t req;
  Daemon* daemon;
  bool dtls_running;  // DTLS keys are re-read only when the listener runs
  std::optional<Config> next;
  std::vector<std::string> restart;
  std::shared_ptr<RouteTable> routes;
  std::shared_ptr<const PskStore> psk;
  std::string error;  // set: the file was rejected
};

void Daemon::Reload(std::function<void(AdminResult)> done) {
  if (stopping_) {
    if (done) done(Diagnostic(ErrorCode::kUnavailable, "tetherd is stopping"));
    return;
  }
  if (reload_running_) {
    reload_again_ = true;
    if (done) reload_queued_.push_back(std::move(done));
    return;
  }
  if (done) reload_waiters_.push_back(std::move(done));
  StartReload();
}

void Daemon::StartReload() {
  reload_running_ = true;
  notifier_->Reloading();
  auto* job = new ReloadJob{};
  job->req.data = job;
  job->daemon = this;
  job->dtls_running = psk_ != nullptr;
  // Reads only started_ (never changed after construction) and the files: safe off the loop.
  auto parse = [](uv_work_t* req) {
    auto* job = static_cast<ReloadJob*>(req->data);
    const Daemon& d = *job->daemon;
    try {
      Config loaded = Config::Load(d.config_path_);
      loaded.CheckFiles();
      job->next = RunnableConfig(d.started_, std::move(loaded), &job->restart);
      job->routes = std::make_shared<RouteTable>(*job->next);
      if (job->dtls_running && job->next->dtls) job->psk = std::make_shared<const PskStore>(*job->next->dtls);
    } catch (const ConfigError& e) {
      job->error = e.what();
    } catch (const std::exception& e) {  // e.g. out of memory: reported, never fatal
      job->error = std::string("cannot reload: ") + e.what();
    }
  };
  auto apply = [](uv_work_t* req, int) {
    std::unique_ptr<ReloadJob> job(static_cast<ReloadJob*>(req->data));
    job->daemon->ApplyReload(*job);
  };
  uv_queue_work(&loop_, &job->req, parse, apply);
}

void Daemon::ApplyReload(ReloadJob& job) {
  reload_running_ = false;
  std::vector<std::function<void(AdminResult)>> waiters = std::move(reload_waiters_);
  reload_waiters_.clear();
  if (stopping_) {
    return FinishReloads(waiters, Diagnostic(ErrorCode::kUnavailable, "tetherd is stopping"));
  }
  AdminResult result = AdminReport{"configuration " + config_path_ + " applied"};
  auto reject = [&](const std::string& why) {
    spdlog::error("reload rejected, keeping the running configuration: {}", why);
    result = Diagnostic::Invalid(why + "; keeping the running configuration");
  };
  try {
    if (!job.error.empty()) throw ConfigError(config_path_, 0, 0, "", job.error);
    Config& next = *job.next;
    const std::vector<std::string>& restart = job.restart;
    std::shared_ptr<RouteTable> routes = job.routes;
    if (device_api_) device_api_->SetRoutes(routes);  // throws ConfigError for an unreadable app secret
    if (store_) store_->SetQueueLimits(QueueLimitsFrom(next));
    // DTLS keys apply to the next handshakes (the listener and its limits keep running values).
    std::shared_ptr<const PskStore> psk = job.psk ? job.psk : psk_;
    if (cloud_) cloud_->SetRoutes(routes);
    if (drainer_) {
      // New routes drain at once; changed roots and priorities apply to the next batch. A route
      // gone from the file keeps draining its backlog (CloudBridge gives those ops absolute paths).
      for (upstream::RouteTarget& t : UploadTargets(*routes)) drainer_->set_route(std::move(t));
      std::set<std::string> kept;
      for (const auto& r : next.routes) kept.insert(r.name);
      for (const auto& old : config_.routes) {
        if (!kept.count(old.name)) drainer_->set_route({old.name, "", 0});
      }
    }
    psk_ = std::move(psk);
    // Sessions whose credentials are gone end, observations the routes no longer allow end (4.03).
    if (device_api_) device_api_->RevokeAfterReload();
    SetLogLevel(next.log_level);
    config_ = std::move(next);
    if (restart.empty()) {
      spdlog::info("reload: configuration {} applied", config_path_);
    } else {
      std::string keys;
      for (const auto& k : restart) keys += (keys.empty() ? "" : ", ") + k;
      spdlog::warn("reload: configuration {} applied, except {}: those changes take effect only after a "
                   "restart (systemctl restart tether); running with the previous values meanwhile",
                   config_path_, keys);
      result = AdminReport{"configuration " + config_path_ + " applied; needs a restart to take effect: " + keys,
                           {{"restart_required", restart}}};
    }
  } catch (const ConfigError& e) {
    reject(job.error.empty() ? e.what() : job.error);
  }
  notifier_->Status(config_.upstream ? "serving" : "serving (local-only)");
  FinishReloads(waiters, result);
  if (reload_again_) {
    reload_again_ = false;
    reload_waiters_ = std::move(reload_queued_);
    reload_queued_.clear();
    StartReload();
  }
}

void Daemon::FinishReloads(std::vector<std::function<void(AdminResult)>>& waiters, const AdminResult& result) {
  for (auto& done : waiters) done(result);
  waiters.clear();
}

UpstreamView Daemon::Upstream() const {
  UpstreamView v;
  if (drainer_) v.routes = drainer_->stats();
  if (clock_ && clock_->has_estimate()) {
    v.rtt_ms = clock_->rtt_ms();
    v.clock_uncertainty_ms = clock_->uncertainty_ms();
  }
  if (clock_) {
    v.clock_source = upstream::CloudClock::SourceName(clock_->source());
    v.clock_current = clock_->current();
    v.clock_error = clock_->last_error();
  }
  if (cloud_) {
    v.holds = cloud_->Holds();
    v.estimated = cloud_->EstimatedTimestamps();
  }
  for (const auto& st : streams_) {
    ++(st->open() ? v.streams_streaming : st->polling() ? v.streams_polling : v.streams_connecting);
  }
  if (watches_) {
    v.streams_polling += watches_->streams_polling();
    v.streams_streaming += watches_->streams_open();
    v.streams_connecting += watches_->streams() - watches_->streams_open() - watches_->streams_polling();
  }
  return v;
}

void Daemon::Stop() {
  if (stopping_) return;
  stopping_ = true;
  notifier_->Stopping();
  // Stop the admin API, stop taking datagrams, then let the store commit what was submitted
  // (their callbacks answer devices that are still waiting), then close the store.
  FinishReloads(reload_waiters_, Diagnostic(ErrorCode::kUnavailable, "tetherd is stopping"));
  FinishReloads(reload_queued_, Diagnostic(ErrorCode::kUnavailable, "tetherd is stopping"));
  if (loop_caller_) loop_caller_->Shutdown();
  if (admin_) admin_->Stop();
  if (!admin_token_.empty()) RemoveAdminToken(config_.admin_token_file, admin_token_);
  if (drainer_) drainer_->stop();
  for (auto& st : streams_) st->stop();
  if (watches_) watches_->stop();
  if (clock_) clock_->shutdown([] {});  // best-effort "offline" presence write
  if (device_api_) device_api_->Close();
  if (local_copy_) local_copy_->Close();
  endpoint_.reset();
  if (store_) store_->Close();
  for (uv_signal_t* h : {&sigterm_, &sigint_, &sighup_}) {
    uv_close(reinterpret_cast<uv_handle_t*>(h), nullptr);
  }
  notifier_->Close();
}

}  // namespace tether
