#include "gateway/daemon.h"

#include <spdlog/spdlog.h>

#include "gateway/auth_override.h"
#include "gateway/log.h"
#include "store/store_error.h"
#include "upstream/rest_get.h"

#include <fstream>
#include <set>
#include <sstream>

namespace tether {

namespace {

store::StoreOptions StoreOptionsFrom(const Config& c) {
  store::StoreOptions o;
  o.durability = c.store.fsync ? store::Durability::kFsync : store::Durability::kOsBuffered;
  o.map_size = c.store.map_size;
  o.map_max = c.store.map_max;
  o.tree_cache_bytes = c.store.cache_bytes;
  o.tree_unit_depth = c.store.cache_unit_depth;
  o.global_max_entries = c.store.queue_max_entries;
  o.global_max_bytes = c.store.queue_max_bytes;
  for (const auto& r : c.routes) {
    store::QueueLimits l;
    l.max_entries = r.queue.max_entries;
    l.max_bytes = r.queue.max_bytes;
    l.policy = r.queue.on_full == QueuePolicy::OnFull::kReject ? store::OverflowPolicy::kReject
                                                                : store::OverflowPolicy::kDropOldest;
    l.ttl_ms = r.queue.ttl ? r.queue.ttl->count() : 0;
    o.route_limits[r.name] = l;
    for (const auto& root : r.sync) o.tree_pinned_roots.push_back(root);
  }
  return o;
}

}  // namespace

Daemon::Daemon(Config config, std::string config_path)
    : config_(std::move(config)), config_path_(std::move(config_path)) {
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
    device_api_ = std::make_unique<DeviceApi>(&loop_, *store_, std::make_shared<RouteTable>(config_));
  } catch (const ConfigError& e) {
    spdlog::critical("{}", e.what());
    return false;
  }
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
  admin_backend_ = std::make_unique<DaemonAdmin>(DaemonAdmin::Parts{
      &config_, store_.get(), device_api_.get(), endpoint_.get(), [this] { return Reload(); }});
  AdminServer::Options ao;
  ao.listen = config_.admin_listen;
  admin_ = std::make_unique<AdminServer>(ao, admin_backend_.get(), loop_caller_.get());
  try {
    admin_->Start();
  } catch (const std::exception& e) {
    spdlog::critical("{}", e.what());
    return false;
  }
  spdlog::info("admin endpoint on http://{} (/metrics, /healthz, /readyz, tetherctl)",
               HostPort{config_.admin_listen.host, admin_->port()}.ToString());
  return true;
}

namespace {
// A device GET outside the sync roots waits at most this long for the cloud before the local
// copy answers (the engine sends an empty ACK after 1 s, so the SDK does not retransmit).
constexpr long kCloudReadTimeoutMs = 2000;

// Where the uploader keeps its exactly-once marks for increments: one small node per route.
std::string AppliedMarkPath(const std::string& gateway_id) {
  std::string key;
  for (unsigned char ch : gateway_id) {
    bool bad = ch < 0x20 || ch == 0x7f || ch == '.' || ch == '$' || ch == '#' || ch == '[' || ch == ']' || ch == '/';
    key += bad ? '_' : static_cast<char>(ch);
  }
  return "tether-applied/" + (key.empty() ? std::string("gateway") : key);
}

// The first line of a credentials file, without its newline. Throws naming the file, never the content.
std::string ReadSecretFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read credentials file " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
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
      credentials_ = upstream::MakeDatabaseSecret(ReadSecretFile(u.secret_file));
    } else if (!u.access_token_file.empty()) {
      ReadSecretFile(u.access_token_file);  // fail at startup, not at the first upload
      credentials_ = upstream::MakeAccessTokenFile(u.access_token_file);
    } else if (!u.service_account_file.empty()) {
      std::string err;
      credentials_ = upstream::MakeServiceAccount(&loop_, *http_, ReadSecretFile(u.service_account_file), &err);
      if (!credentials_) throw std::runtime_error(u.service_account_file + ": " + err);
    } else {
      credentials_ = upstream::MakeNoCredentials();
    }
  } catch (const std::exception& e) {
    spdlog::critical("upstream credentials: {}", e.what());
    return false;
  }
  cloud_ = std::make_unique<CloudBridge>(*store_, *device_api_, routes);
  if (!u.auth_variable_override.empty()) {
    cloud_->SetAuthOverride(*AuthOverride::Parse(u.auth_variable_override, nullptr), config_.gateway_id);
    spdlog::info("uploads are evaluated by the cloud's rules as the writing device (auth_variable_override)");
  }
  std::vector<upstream::RouteTarget> targets;
  for (size_t i = 0; i < config_.routes.size(); ++i) {
    targets.push_back({config_.routes[i].name, JoinPath(routes->CloudRoot(static_cast<int>(i)))});
  }
  upstream::DrainerOptions o;
  o.base_url = u.url;
  o.on_link = [this](bool connected) {
    cloud_->OnLinkChanged(connected);
    clock_->link_changed(connected);
  };
  o.applied_path = AppliedMarkPath(config_.gateway_id);
  o.queue_id = store_->instance_id();
  drainer_ = std::make_unique<upstream::Drainer>(&loop_, *http_, *credentials_, *cloud_, targets, o);
  device_api_->SetQueuedHook([this](const std::string& route) { drainer_->notify(route); });
  cloud_->SetClockReadyHook([this, targets] {
    for (const auto& t : targets) drainer_->notify(t.route);
  });

  // Presence node + cloud clock: the offset corrects event times and push ids.
  upstream::CloudClockOptions co;
  co.base_url = u.url;
  co.presence_path = JoinPath(SplitPath(u.presence_path));
  co.on_link = [this](bool connected) { cloud_->OnLinkChanged(connected); };
  co.on_change = [this, presence = co.presence_path, discarded = uint64_t{0}, error = std::string()]() mutable {
    if (clock_->discarded_samples() != discarded) {
      discarded = clock_->discarded_samples();
      spdlog::warn("the wall clock stepped: cloud clock samples taken before were discarded, measuring again");
    }
    if (clock_->last_error() != error) {
      error = clock_->last_error();
      if (!error.empty()) {
        spdlog::warn("presence write to /{} failed ({}); retrying (writes with server timestamps wait for a "
                     "cloud clock estimate)", presence, error);
      }
    }
    cloud_->OnClockEstimate(clock_->offset_ms(), clock_->rtt_ms(), clock_->current());
  };
  clock_ = std::make_unique<upstream::CloudClock>(&loop_, *http_, *credentials_, co);

  // Sync roots: cloud data streamed into the local copy, kept while offline.
  std::set<std::string> roots;
  for (const auto& r : config_.routes) roots.insert(r.sync.begin(), r.sync.end());
  auto stream_link = [this](bool reachable) {
    cloud_->OnLinkChanged(reachable);
    clock_->link_changed(reachable);
  };
  for (const std::string& root : roots) {
    upstream::SyncStreamOptions so;
    so.base_url = u.url;
    so.root = root;
    auto on_event = [this, root](const upstream::FirebaseEvent& e, bool full_resync) {
      using K = upstream::FirebaseEvent::Kind;
      if (e.kind != K::Put && e.kind != K::Patch) return;
      std::string abs = JoinPath(SplitPath(root + "/" + e.path));
      cloud_->OnSyncData(abs, e.data, e.kind == K::Patch);
      if (full_resync) spdlog::info("sync root /{} resynced from the cloud", root);
    };
    auto on_cancel = [root](const std::string& why) {
      spdlog::error("cloud cancelled the sync of /{}: {} (check the database rules)", root, why);
    };
    streams_.push_back(
        std::make_unique<upstream::SyncStream>(&loop_, *http_, *credentials_, so, on_event, on_cancel, stream_link));
  }
  if (!roots.empty()) spdlog::info("syncing {} root(s) from the cloud", roots.size());

  // Paths devices observe outside the sync roots: a stream each (bounded), else re-read.
  upstream::WatchSetOptions wo;
  wo.base_url = u.url;
  wo.max_streams = u.observe_streams;
  wo.poll_interval_ms = u.observe_poll_interval.count();
  watches_ = std::make_unique<upstream::WatchSet>(
      &loop_, *http_, *credentials_, wo,
      [this](const std::string& path, const Json& value, bool is_patch) { cloud_->OnSyncData(path, value, is_patch); });
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
  device_api_->SetCloudReader(
      [this, url = u.url](const std::string& path, const std::string& query, std::function<void(std::optional<Json>)> done) {
        upstream::RestGet(*http_, *credentials_, url, path, query, kCloudReadTimeoutMs, false,
                          [done = std::move(done)](upstream::GetResult r) {
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
    self->Reload();
  } else {
    spdlog::info("received {}, stopping", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    self->Stop();
  }
}

AdminResult Daemon::Reload() {
  notifier_->Reloading();
  AdminResult result = AdminResult::Ok("configuration " + config_path_ + " applied");
  try {
    Config next = Config::Load(config_path_);
    if (next.device.listen.ToString() != config_.device.listen.ToString() || next.store.path != config_.store.path ||
        next.admin_listen.ToString() != config_.admin_listen.ToString()) {
      spdlog::warn("reload: device.listen, admin.listen and store.path changes take effect after a restart");
    }
    // DTLS keys apply to the next handshakes; the listener and its limits need a restart.
    std::shared_ptr<const PskStore> psk = psk_;
    if (psk_ && next.dtls) psk = std::make_shared<const PskStore>(*next.dtls);  // throws ConfigError
    if (next.dtls.has_value() != config_.dtls.has_value() ||
        (next.dtls && next.dtls->listen.ToString() != config_.dtls->listen.ToString())) {
      spdlog::warn("reload: adding, removing or moving the dtls listener takes effect after a restart; "
                   "its keys apply now");
    }
    auto routes = std::make_shared<RouteTable>(next);
    if (device_api_) device_api_->SetRoutes(routes);  // throws ConfigError for an unreadable app secret
    psk_ = std::move(psk);
    if (cloud_) cloud_->SetRoutes(routes);
    std::vector<std::string> before, after;
    for (const auto& r : config_.routes) before.push_back(r.name + "=" + r.cloud);
    for (const auto& r : next.routes) after.push_back(r.name + "=" + r.cloud);
    if (before != after || (next.upstream.has_value() != config_.upstream.has_value())) {
      spdlog::warn("reload: route names, cloud patterns and the upstream section are picked up by the "
                   "uploader after a restart; access rules apply now");
    }
    SetLogLevel(next.log_level);
    config_ = std::move(next);
    spdlog::info("reload: configuration {} applied", config_path_);
  } catch (const ConfigError& e) {
    spdlog::error("reload rejected, keeping the running configuration: {}", e.what());
    result = AdminResult::Error(AdminResult::Code::kInvalid,
                                std::string(e.what()) + "; keeping the running configuration");
  }
  notifier_->Status(config_.upstream ? "serving" : "serving (local-only)");
  return result;
}

void Daemon::Stop() {
  if (stopping_) return;
  stopping_ = true;
  notifier_->Stopping();
  // Stop the admin API, stop taking datagrams, then let the store commit what was submitted
  // (their callbacks answer devices that are still waiting), then close the store.
  if (loop_caller_) loop_caller_->Shutdown();
  if (admin_) admin_->Stop();
  if (drainer_) drainer_->stop();
  for (auto& st : streams_) st->stop();
  if (watches_) watches_->stop();
  if (clock_) clock_->shutdown([] {});  // best-effort "offline" presence write
  if (device_api_) device_api_->Close();
  endpoint_.reset();
  if (store_) store_->Close();
  for (uv_signal_t* h : {&sigterm_, &sigint_, &sighup_}) {
    uv_close(reinterpret_cast<uv_handle_t*>(h), nullptr);
  }
  notifier_->Close();
}

}  // namespace tether
