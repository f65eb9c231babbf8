#include "gateway/device/session_guard.h"

#include <spdlog/spdlog.h>

namespace tether {

namespace {
// Failed authentications are logged one per second at most; the others are counted.
constexpr int64_t kAuthLogEveryMs = 1'000;
}  // namespace

void SessionGuard::SetRoutes(const RouteTable& routes) {
  std::map<std::string, std::unique_ptr<DeviceAuthenticator>> auth;
  for (const auto& app : routes.config().apps) auth[app.id] = std::make_unique<DeviceAuthenticator>(app);
  if (routes.config().open_apps) {  // every unlisted app id: open
    auth[Config::kAnyApp] = std::make_unique<DeviceAuthenticator>(AppConfig{Config::kAnyApp, false, {}});
  }
  auth_ = std::move(auth);
  const DeviceConfig& d = routes.config().device;
  opens_.set_rate(d.opens_per_second);
  refusals_.set_rate(d.auth_failures_per_second);
  max_unconfirmed_ = d.max_unconfirmed_sessions;
}

AuthOutcome SessionGuard::Authenticate(const std::string& app, const std::string& payload, const coap::Address& peer,
                                       const std::string& identity) const {
  // Over DTLS the handshake authenticated the device: its PSK identity is the device id. A reload
  // may have removed the identity's key after its handshake: its connection opens nothing.
  if (peer.secure) return AuthOutcome{!psk_known_ || psk_known_(identity), identity};
  auto it = auth_.find(app);
  const DeviceAuthenticator& a = it != auth_.end() ? *it->second : *auth_.at(Config::kAnyApp);  // FindApp accepted it: open
  return a.Authenticate(payload);
}

std::string SessionGuard::RestoredFingerprint(const std::string& app, const std::string& device) const {
  auto a = auth_.find(app);
  return a != auth_.end() ? a->second->RestoredFingerprint(device) : std::string();
}

bool SessionGuard::CredentialValid(const Session& s, const RouteTable& routes) const {
  auto app = routes.FindApp(s.app);
  if (!app || app->id != s.app) return false;  // the app is gone
  if (s.addr.secure) return !psk_known_ || psk_known_(s.device);  // the PSK identity is the device id
  auto a = auth_.find(s.app);
  if (a == auth_.end()) a = auth_.find(Config::kAnyApp);
  return a != auth_.end() && a->second->StillAccepts(s.device, s.anonymous, std::string(s.tokens.credential()));
}

void SessionGuard::LogAuthFailure(const coap::Address& peer, const std::string& app, int64_t now) {
  if (now - auth_logged_at_ms_ < kAuthLogEveryMs) {
    ++auth_log_suppressed_;
    ++counters_.auth_log_suppressed;
    return;
  }
  FlushAuthLog(now);
  auth_logged_at_ms_ = now;
  spdlog::info("device at {} failed to authenticate to app '{}'", peer.to_string(), app);
}

void SessionGuard::FlushAuthLog(int64_t now) {
  if (!auth_log_suppressed_ || now - auth_logged_at_ms_ < kAuthLogEveryMs) return;
  spdlog::info("{} more failed authentication(s) in {:.1f} s, not logged one by one (tether_auth_failures_total)",
               auth_log_suppressed_, static_cast<double>(now - auth_logged_at_ms_) / 1000.0);
  auth_log_suppressed_ = 0;
  auth_logged_at_ms_ = now;
}

}  // namespace tether
