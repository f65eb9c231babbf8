#include "gateway/daemon.h"

#include <spdlog/spdlog.h>

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

bool Daemon::StartUpstream() {
  const UpstreamConfig& u = *config_.upstream;
  auto routes = std::make_shared<RouteTable>(config_);
  http_ = std::make_unique<upstream::HttpClient>(&loop_);
  try {
    if (!u.secret_file.empty()) {
      credentials_ = upstream::MakeDatabaseSecret(ReadSecretFile(u.secret_file));
    } else if (!u.access_token_file.empty()) {
      ReadSecretFile(u.access_token_file);  // fail at startup, not at the first upload
      credentials_ = upstream::MakeAccessTokenFile(u.access_token_file);
    } else if (!u.service_account_file.empty()) {
      std::string err;
      credentials_ = upstream::MakeServiceAccount(*http_, ReadSecretFile(u.service_account_file), &err);
      if (!credentials_) throw std::runtime_error(u.service_account_file + ": " + err);
    } else {
      credentials_ = upstream::MakeNoCredentials();
    }
  } catch (const std::exception& e) {
    spdlog::critical("upstream credentials: {}", e.what());
    return false;
  }
  cloud_ = std::make_unique<CloudBridge>(*store_, *device_api_, routes);
  std::vector<upstream::RouteTarget> targets;
  for (size_t i = 0; i < config_.routes.size(); ++i) {
    targets.push_back({config_.routes[i].name, JoinPath(routes->CloudRoot(static_cast<int>(i)))});
  }
  upstream::DrainerOptions o;
  o.base_url = u.url;
  o.on_link = [this](bool connected) { cloud_->OnLinkChanged(connected); };
  o.applied_path = AppliedMarkPath(config_.gateway_id);
  o.queue_id = store_->instance_id();
  drainer_ = std::make_unique<upstream::Drainer>(&loop_, *http_, *credentials_, *cloud_, targets, o);
  device_api_->SetQueuedHook([this](const std::string& route) { drainer_->notify(route); });
  cloud_->SetSettledHook([this](const std::string& route) {
    if (drainer_) drainer_->notify(route);
  });
  drainer_->start();
  spdlog::info("uploading {} route(s) to {}", targets.size(), u.url);

  // Presence node + cloud clock: the offset corrects event times and push ids.
  upstream::CloudClockOptions co;
  co.base_url = u.url;
  co.presence_path = JoinPath(SplitPath(u.presence_path));
  co.on_link = [this](bool connected) {  // after every presence write, with its sample counted
    if (clock_->has_estimate()) cloud_->OnClockOffset(clock_->offset_ms(), clock_->rtt_ms());
    cloud_->OnLinkChanged(connected);
  };
  clock_ = std::make_unique<upstream::CloudClock>(&loop_, *http_, *credentials_, co);
  clock_->start();

  // Sync roots: cloud data streamed into the local copy, kept while offline.
  std::set<std::string> roots;
  for (const auto& r : config_.routes) roots.insert(r.sync.begin(), r.sync.end());
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
    streams_.push_back(std::make_unique<upstream::SyncStream>(&loop_, *http_, *credentials_, so, on_event, on_cancel));
    streams_.back()->start();
  }
  if (!roots.empty()) spdlog::info("syncing {} root(s) from the cloud", roots.size());
  device_api_->SetCloudReader(
      [this](const std::string& path, const std::string& query, std::function<void(std::optional<Json>)> done) {
        upstream::RestGet(*http_, *credentials_, config_.upstream->url, path, query, kCloudReadTimeoutMs, false,
                          [done = std::move(done)](upstream::GetResult r) {
                            done(r.ok ? std::optional<Json>(std::move(r.value)) : std::nullopt);
                          });
      },
      std::vector<std::string>(roots.begin(), roots.end()));
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
    auto routes = std::make_shared<RouteTable>(next);
    if (device_api_) device_api_->SetRoutes(routes);  // throws ConfigError for an unreadable app secret
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
