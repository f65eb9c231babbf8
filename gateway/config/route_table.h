// RouteTable: the integrator's routes compiled for lookup on every request.
//
// Resolve() maps (app, device id, device path) to the first matching route, the cloud path the
// data lives at, and whether the device may read or write it. Immutable once built; a reload
// builds a new table and swaps the shared_ptr, so requests in flight keep the table they started with.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "gateway/config/config.h"
#include "gateway/model/route_pattern.h"

namespace tether {

struct ResolvedPath {
  const RouteConfig* route = nullptr;
  int route_index = -1;
  std::vector<std::string> cloud_path;  // full cloud path segments
  bool may_read = false;
  bool may_write = false;
};

class RouteTable {
 public:
  explicit RouteTable(const Config& config);

  // App for a Uri-Host: its first label ("myapp" for "myapp.wilddogio.com"); no host → default app.
  // nullopt for an unknown app. Without an `apps` list (Config::open_apps) every id that is a
  // valid key is an app of its own, with open auth.
  struct AppRef {
    std::string id;
    const AppConfig* config;  // the listed app, or the settings every unlisted open app shares
  };
  std::optional<AppRef> FindApp(const std::optional<std::string>& uri_host) const;

  // nullopt: no route of this app matches the path (the device may neither read nor write it).
  // An unlisted open app resolves through the open-apps route: cloud path "<app>/<path>".
  std::optional<ResolvedPath> Resolve(const std::string& app, const std::string& device,
                                      const std::vector<std::string>& device_path) const;

  // Cloud root of a route (the literal prefix of its cloud pattern): where its batches are PATCHed.
  std::vector<std::string> CloudRoot(int route_index) const;
  const std::vector<RouteConfig>& routes() const { return config_.routes; }
  const Config& config() const { return config_; }

 private:
  struct Compiled {
    RoutePattern match;
    RoutePattern cloud;
  };
  Config config_;
  std::vector<Compiled> compiled_;
  AppConfig open_app_{Config::kAnyApp, false, {}};
};

}  // namespace tether
