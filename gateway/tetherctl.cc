// tetherctl: administer a running tetherd over its admin endpoint.
#include <CLI/CLI.hpp>

#include <cstdio>

#include "gateway/config.h"
#include "tether_version.h"

int main(int argc, char** argv) {
  CLI::App app{"tetherctl: administer a running tetherd"};
  app.require_subcommand(1);

  auto* version = app.add_subcommand("version", "print the version");
  std::string check_file;
  auto* check = app.add_subcommand("check-config", "validate a configuration file (exit 0 valid, 2 invalid)");
  check->add_option("file", check_file, "configuration file")->required();

  CLI11_PARSE(app, argc, argv);

  if (*version) {
    std::printf("tetherctl %s\n", TETHER_VERSION);
    return 0;
  }
  if (*check) {
    try {
      tether::Config::Load(check_file);
      std::printf("%s: valid\n", check_file.c_str());
      return 0;
    } catch (const tether::ConfigError& e) {
      std::fprintf(stderr, "%s\n", e.what());
      return 2;
    }
  }
  return 0;
}
