#include "gateway/cloud/cloud_link.h"

#include <spdlog/spdlog.h>

#include <stdexcept>

#include "gateway/config/auth_override.h"
#include "gateway/config/secret_file.h"
#include "gateway/model/route_pattern.h"
#include "upstream/rest_get.h"

namespace tether {

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

// The credential the upstream section names. Throws naming the file, never the content.
std::unique_ptr<upstream::Credentials> MakeCredentials(uv_loop_t* loop, upstream::HttpClient& http,
                                                       const UpstreamConfig& u) {
  if (!u.secret_file.empty()) return upstream::MakeDatabaseSecret(ReadCredentialFile(u.secret_file));
  if (!u.access_token_file.empty()) {
    return upstream::MakeAccessTokenFile(u.access_token_file, ReadCredentialFile, [](const std::string& why) {
      spdlog::error("upstream.access_token_file: {}; uploads go without a token until the file changes", why);
    });
  }
  if (!u.service_account_file.empty()) {
    std::string err;
    auto creds = upstream::MakeServiceAccount(loop, http, ReadCredentialFile(u.service_account_file), &err);
    if (!creds) throw std::runtime_error(u.service_account_file + ": " + err);
    return creds;
  }
  return upstream::MakeNoCredentials();
}

void LogPolling(const std::string& path, bool polling, const std::string& why) {
  if (polling) spdlog::warn("the cloud does not stream /{} ({}): it is read periodically instead", path, why);
  else spdlog::info("the cloud streams /{} again", path);
}
}  // namespace

CloudLink::CloudLink(uv_loop_t* loop, const Config& config, std::set<std::string> sync_roots, store::Store& store,
                     LocalCopy& local, CloudLinkListener& listener)
    : loop_(loop),
      store_(store),
      local_(local),
      url_(config.upstream->url),
      presence_path_(JoinPath(SplitPath(config.upstream->presence_path))),
      sync_roots_(sync_roots.begin(), sync_roots.end()),
      routes_(std::make_shared<RouteTable>(config)) {
  const UpstreamConfig& u = *config.upstream;
  upstream::HttpClientOptions ho;
  ho.ca_file = u.ca_file;
  http_ = std::make_unique<upstream::HttpClient>(loop_, ho);
  credentials_ = MakeCredentials(loop_, *http_, u);

  bridge_ = std::make_unique<CloudBridge>(store_, local, routes_, listener);
  if (!u.auth_variable_override.empty()) {
    bridge_->SetAuthOverride(*AuthOverride::Parse(u.auth_variable_override, nullptr), config.gateway_id);
    spdlog::info("uploads are evaluated by the cloud's rules as the writing device (auth_variable_override)");
  }
  bridge_->SetClockWait(u.clock_wait.count(), u.on_clock_timeout == UpstreamConfig::OnClockTimeout::kUpload);
  subscriptions_.push_back(bridge_->SetSettledHook([this](const std::string& route) { OnSettled(route); }));
  subscriptions_.push_back(bridge_->SetClockReadyHook([this] { OnClockReady(); }));

  std::vector<upstream::RouteTarget> targets = UploadTargets(*routes_);
  // A route removed from the file keeps its backlog: it uploads to the paths it was accepted for.
  for (const store::RouteQueueStats& rs : store_.queue().AllStats()) {
    bool configured = false;
    for (const auto& r : config.routes) configured |= r.name == rs.route;
    if (configured || rs.depth == 0) continue;
    spdlog::warn("route '{}' is no longer configured; its {} queued write(s) still upload to the cloud "
                 "paths they were accepted for", rs.route, rs.depth);
    targets.push_back({rs.route, "", 0});
  }
  upstream::DrainerOptions o;
  o.base_url = u.url;
  o.on_link = [this](bool reachable) { OnReachable(reachable); };
  o.applied_path = AppliedMarkPath(config.gateway_id);
  o.queue_id = store_.instance_id();
  upload_routes_ = targets.size();
  drainer_ = std::make_unique<upstream::Drainer>(loop_, *http_, *credentials_, *bridge_, targets, o);

  // Presence node + cloud clock: the offset corrects event times and push ids.
  upstream::CloudClockOptions co;
  co.base_url = u.url;
  co.presence_path = presence_path_;
  co.on_link = [this](bool reachable) { OnClockReachable(reachable); };
  co.on_change = [this] { OnClockChanged(); };
  clock_ = std::make_unique<upstream::CloudClock>(loop_, *http_, *credentials_, co);

  // Sync roots: cloud data streamed into the local copy, kept while offline.
  for (const std::string& root : sync_roots_) {
    upstream::SyncStreamOptions so;
    so.base_url = u.url;
    so.root = root;
    so.poll_interval_ms = u.observe_poll_interval.count();
    so.on_polling = [root](bool polling, const std::string& why) { LogPolling(root, polling, why); };
    streams_.push_back(std::make_unique<upstream::SyncStream>(
        loop_, *http_, *credentials_, so,
        [this, root](const upstream::FirebaseEvent& e, bool full_resync) { OnSyncEvent(root, e, full_resync); },
        [root](const std::string& why) {
          spdlog::error("cloud cancelled the sync of /{}: {} (check the database rules)", root, why);
        },
        [this](bool reachable) { OnReachable(reachable); }));
  }
  if (!sync_roots_.empty()) spdlog::info("syncing {} root(s) from the cloud", sync_roots_.size());

  // Paths devices observe outside the sync roots: a stream each (bounded), else re-read.
  upstream::WatchSetOptions wo;
  wo.base_url = u.url;
  wo.max_streams = u.observe_streams;
  wo.poll_interval_ms = u.observe_poll_interval.count();
  wo.on_link = [this](bool reachable) { OnReachable(reachable); };
  wo.on_polling = LogPolling;
  watches_ = std::make_unique<upstream::WatchSet>(
      loop_, *http_, *credentials_, wo,
      [this](const std::string& path, const Json& value, bool is_patch) { local_.OnSyncData(path, value, is_patch); });

  subscriptions_.push_back(local_.SetCloudReader(
      [this](const std::string& path, const std::string& query, std::function<void(std::optional<Json>)> done) {
        ReadCloud(path, query, std::move(done));
      },
      sync_roots_));
}

CloudLink::~CloudLink() {
  scope_.Close();
  subscriptions_.clear();  // first: nobody reaches the parts while they go
}

void CloudLink::Start() {
  // Cloud traffic starts once the first credential is there (or could not be had: then 401s
  // refresh it later), so no request goes out without one.
  credentials_->Refresh(scope_.Guard([this](bool) {
    if (stopped_) return;
    drainer_->Start();
    clock_->Start();
    for (auto& st : streams_) st->Start();
    spdlog::info("uploading {} route(s) to {}", upload_routes_, url_);
  }));
}

void CloudLink::Stop() {
  stopped_ = true;
  drainer_->Stop();
  for (auto& st : streams_) st->Stop();
  watches_->Stop();
  clock_->Shutdown([] {});  // best-effort "offline" presence write
}

void CloudLink::SetRoutes(std::shared_ptr<const RouteTable> routes) {
  bridge_->SetRoutes(routes);
  // New routes drain at once; changed roots and priorities apply to the next batch. A route gone
  // from the file keeps draining its backlog (CloudBridge gives those ops absolute paths).
  for (upstream::RouteTarget& t : UploadTargets(*routes)) drainer_->set_route(std::move(t));
  std::set<std::string> kept;
  for (const auto& r : routes->routes()) kept.insert(r.name);
  for (const auto& old : routes_->routes()) {
    if (!kept.count(old.name)) drainer_->set_route({old.name, "", 0});
  }
  routes_ = std::move(routes);
}

void CloudLink::OnQueued(const std::string& route) { drainer_->Notify(route); }

void CloudLink::OnObserved(const std::string& path, bool observed) {
  if (path.rfind(".info", 0) == 0) return;
  store_.KeepCached("/" + path, observed);  // observers are answered from the local copy
  for (const auto& root : sync_roots_) {
    if (root.empty() || path == root || path.compare(0, root.size() + 1, root + "/") == 0) return;
  }
  if (observed) watches_->Watch(path);
  else watches_->Unwatch(path);
}

// Any request on the link: an answer means the cloud is reachable (routes backing off for the
// link go at once, a clock without a current estimate samples), no answer that it is not.
void CloudLink::OnReachable(bool reachable) {
  bridge_->OnLinkChanged(reachable);
  clock_->LinkChanged(reachable);
  if (reachable) drainer_->LinkUp();
}

// The clock's own requests: it knows their outcome itself.
void CloudLink::OnClockReachable(bool reachable) {
  bridge_->OnLinkChanged(reachable);
  if (reachable) drainer_->LinkUp();
}

void CloudLink::OnClockChanged() {
  if (clock_->last_error() != clock_error_) {
    clock_error_ = clock_->last_error();
    if (!clock_error_.empty()) {
      spdlog::warn("cloud clock via /{}: {}; {}", presence_path_, clock_error_,
                   clock_->current() ? fmt::format("estimated from the {} (+-{} ms)",
                                                   upstream::CloudClock::SourceName(clock_->source()),
                                                   clock_->uncertainty_ms())
                                     : std::string("retrying (writes with server timestamps wait for an estimate)"));
    }
  }
  bridge_->SetClockProblem(clock_->current() ? "" : clock_->last_error());
  bridge_->OnClockEstimate(clock_->boot_offset_ms(), clock_->rtt_ms(), clock_->current());
}

void CloudLink::OnSyncEvent(const std::string& root, const upstream::FirebaseEvent& e, bool full_resync) {
  using K = upstream::FirebaseEvent::Kind;
  if (e.kind != K::Put && e.kind != K::Patch) return;
  local_.OnSyncData(JoinPath(SplitPath(root + "/" + e.path)), e.data, e.kind == K::Patch);
  if (full_resync) spdlog::info("sync root /{} resynced from the cloud", root);
}

void CloudLink::OnClockReady() {  // every route the drainer knows, including reloaded ones
  for (const auto& [route, stats] : drainer_->stats()) drainer_->Notify(route);
}

void CloudLink::ReadCloud(const std::string& path, const std::string& query,
                          std::function<void(std::optional<Json>)> done) {
  upstream::RestGet(*http_, *credentials_, url_, path, query, kCloudReadTimeoutMs, false,
                    scope_.Guard([this, done = std::move(done)](upstream::GetResult r) {
                      if (r.status != 0) OnReachable(true);  // a slow read proves nothing about the link
                      done(r.ok ? std::optional<Json>(std::move(r.value)) : std::nullopt);
                    }));
}

CloudLink::StreamCounts CloudLink::Streams() const {
  StreamCounts n;
  for (const auto& st : streams_) ++(st->open() ? n.streaming : st->polling() ? n.polling : n.connecting);
  n.polling += watches_->streams_polling();
  n.streaming += watches_->streams_open();
  n.connecting += watches_->streams() - watches_->streams_open() - watches_->streams_polling();
  return n;
}

}  // namespace tether
