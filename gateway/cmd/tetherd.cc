// tetherd: the Tether gateway daemon.
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <cstdio>

#include "gateway/config/config.h"
#include "gateway/daemon/daemon.h"
#include "gateway/daemon/log.h"
#include "tether_version.h"

int main(int argc, char** argv) {
  CLI::App app{"tetherd: CoAP edge gateway for constrained devices, with a durable queue to Firebase"};
  std::string config_path = "/etc/tether/tether.yaml";
  std::string check_path;
  bool version = false;
  app.add_option("-c,--config", config_path, "configuration file")->capture_default_str();
  app.add_option("--check-config", check_path, "validate FILE and exit (0 valid, 2 invalid)");
  app.add_flag("-V,--version", version, "print the version and exit");
  CLI11_PARSE(app, argc, argv);

  if (version) {
    std::printf("tetherd %s\n", TETHER_VERSION);
    return 0;
  }
  if (!check_path.empty()) {
    try {
      tether::Config c = tether::Config::Load(check_path);
      c.CheckFiles();
      std::printf("%s: valid (%zu app(s), %zu route(s), %s)\n", check_path.c_str(), c.apps.size(),
                  c.routes.size(), c.upstream ? "upstream configured" : "local-only");
      return 0;
    } catch (const tether::ConfigError& e) {
      std::fprintf(stderr, "%s\n", e.what());
      return 2;
    }
  }

  tether::Config config;
  try {
    config = tether::Config::Load(config_path);
    config.CheckFiles();
  } catch (const tether::ConfigError& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 2;
  }
  tether::SetupLogging(config.log_level);
  try {
    tether::Daemon daemon(std::move(config), config_path);
    return daemon.Run();
  } catch (const std::exception& e) {
    spdlog::critical("fatal: {}", e.what());
    return 1;
  }
}
