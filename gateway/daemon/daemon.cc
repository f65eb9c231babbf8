#include "gateway/daemon/daemon.h"

#include <spdlog/spdlog.h>

#include "gateway/config/admin_token.h"
#include "gateway/daemon/daemon_config.h"
#include "gateway/daemon/log.h"
#include "store/store_error.h"

namespace tether {

namespace {
// Below this, a burst of a few thousand devices at once (a power cut's return) can fill the
// receive queue while the loop is busy: warned at startup. The kernel grants twice what
// SO_RCVBUF asks, capped at twice net.core.rmem_max (208 KiB on Debian and Raspberry Pi OS).
constexpr uint64_t kSmallReceiveBuffer = 1u << 20;
}  // namespace

Daemon::Daemon(Config config, std::string config_path)
    : started_(config), config_(std::move(config)), config_path_(std::move(config_path)) {
  uv_loop_init(&loop_);
}

Daemon::~Daemon() {
  cloud_hooks_.clear();
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
  if (int rc = endpoint_->Listen(l.host.c_str(), l.port); rc != 0) {
    spdlog::critical("cannot listen for CoAP on udp {}: {}", l.ToString(), uv_strerror(rc));
    return false;
  }
  device_api_->AttachEndpoint(endpoint_.get());
  const uint64_t rcvbuf = endpoint_->counters().receive_buffer_bytes;
  spdlog::info("listening for CoAP on udp {} (receive buffer {} KiB)", HostPort{l.host, endpoint_->LocalPort()}.ToString(),
               rcvbuf / 1024);
  if (rcvbuf < kSmallReceiveBuffer) {
    spdlog::warn("the CoAP receive buffer is {} KiB (net.core.rmem_max caps it): datagrams that arrive while it is full "
                 "are dropped by the kernel (tether_coap_receive_dropped_total). Raise it: sysctl -w "
                 "net.core.rmem_max=4194304 (docs/operations.md, \"Receive buffer\")",
                 rcvbuf / 1024);
  }
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
    rc = endpoint_->ListenDtls(d.listen.host.c_str(), d.listen.port, o,
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
               HostPort{d.listen.host, endpoint_->LocalPort(1)}.ToString(), psk_->listed(),
               d.master_key_file.empty() ? "" : ", others derived from the master key");
  return true;
}

bool Daemon::StartUpstream() {
  try {
    cloud_ = std::make_unique<CloudLink>(&loop_, config_, SyncRoots(config_), *store_, *local_copy_, *device_api_);
  } catch (const std::exception& e) {
    spdlog::critical("upstream credentials: {}", e.what());
    return false;
  }
  CloudLink* cloud = cloud_.get();
  cloud_hooks_.push_back(device_api_->SetQueuedHook([cloud](const std::string& route) { cloud->OnQueued(route); }));
  cloud_hooks_.push_back(device_api_->SetObservedPathHook(
      [cloud](const std::string& path, bool observed) { cloud->OnObserved(path, observed); }));
  cloud_->Start();
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
    if (cloud_) cloud_->SetRoutes(routes);  // new routes drain at once; removed ones drain their backlog
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
  if (!cloud_) return v;
  v.routes = cloud_->UploadStats();
  const upstream::CloudClock& clock = cloud_->clock();
  if (clock.has_estimate()) {
    v.rtt_ms = clock.rtt_ms();
    v.clock_uncertainty_ms = clock.uncertainty_ms();
  }
  v.clock_source = upstream::CloudClock::SourceName(clock.source());
  v.clock_current = clock.current();
  v.clock_error = clock.last_error();
  v.holds = cloud_->bridge().Holds();
  v.estimated = cloud_->bridge().EstimatedTimestamps();
  CloudLink::StreamCounts streams = cloud_->Streams();
  v.streams_streaming = streams.streaming;
  v.streams_polling = streams.polling;
  v.streams_connecting = streams.connecting;
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
  if (cloud_) cloud_->Stop();  // uploads and streams stop; best-effort "offline" presence write
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
