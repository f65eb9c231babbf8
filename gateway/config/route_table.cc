#include "gateway/config/route_table.h"

#include "util/firebase_key.h"

namespace tether {

namespace {
RoutePattern MustParse(const std::string& text) {
  auto p = RoutePattern::Parse(text);
  if (!p) throw ConfigError("", 0, 0, "routes", p.error().message);  // Config::Load validated it already
  return *std::move(p);
}

bool Allowed(RouteConfig::Access a, const Captures& caps, const std::string& device) {
  switch (a) {
    case RouteConfig::Access::kNone: return false;
    case RouteConfig::Access::kAll: return true;
    case RouteConfig::Access::kOwn: {
      auto it = caps.find("device");
      return it != caps.end() && it->second == device;
    }
  }
  return false;
}
}  // namespace

RouteTable::RouteTable(const Config& config) : config_(config) {
  for (const auto& r : config_.routes) compiled_.push_back({MustParse(r.match), MustParse(r.cloud)});
}

std::optional<RouteTable::AppRef> RouteTable::FindApp(const std::optional<std::string>& uri_host) const {
  if (!uri_host || uri_host->empty()) {
    for (const auto& a : config_.apps) {
      if (a.is_default) return AppRef{a.id, &a};
    }
    return std::nullopt;
  }
  std::string label = uri_host->substr(0, uri_host->find('.'));
  for (const auto& a : config_.apps) {
    if (a.id == label) return AppRef{a.id, &a};
  }
  // The id becomes a path segment of its namespace: it must be a valid key.
  if (config_.open_apps && util::IsFirebaseKey(label)) return AppRef{label, &open_app_};
  return std::nullopt;
}

std::optional<ResolvedPath> RouteTable::Resolve(const std::string& app, const std::string& device,
                                                const std::vector<std::string>& device_path) const {
  bool listed = false;
  for (const auto& a : config_.apps) listed |= a.id == app;
  // An unlisted app (only accepted without an `apps` list) uses the routes of kAnyApp.
  const std::string& owner = listed || !config_.open_apps ? app : std::string(Config::kAnyApp);
  for (size_t i = 0; i < compiled_.size(); ++i) {
    const RouteConfig& r = config_.routes[i];
    if (r.app != owner) continue;
    Captures caps;
    std::vector<std::string> rest;
    if (!compiled_[i].match.Match(device_path, &caps, &rest)) continue;
    ResolvedPath out;
    out.route = &r;
    out.route_index = static_cast<int>(i);
    out.may_read = Allowed(r.read, caps, device);
    out.may_write = Allowed(r.write, caps, device);
    Captures cloud_caps = caps;
    for (const auto& [k, v] : config_.variables) cloud_caps.emplace(k, v);
    cloud_caps.emplace("device", device);
    cloud_caps.emplace("app", app);
    auto cloud = compiled_[i].cloud.Expand(cloud_caps, rest);
    if (!cloud) return std::nullopt;
    out.cloud_path = std::move(*cloud);
    return out;
  }
  return std::nullopt;
}

std::vector<std::string> RouteTable::CloudRoot(int route_index) const {
  return compiled_.at(route_index).cloud.LiteralPrefix();
}

}  // namespace tether
