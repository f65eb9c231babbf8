// tetherctl: administer a running tetherd over its admin endpoint.
//
// Exit codes: 0 success, 1 the daemon answered with an error (or `store check` found problems or
// could not open the store), 2 invalid configuration (check-config) or bad usage, 3 the daemon
// cannot be reached.
// The admin address: --admin, else $TETHER_ADMIN, else admin.listen of --config FILE, else
// 127.0.0.1:8790. The admin token (every command but version, check-config and store check
// --store): --token-file, else $TETHER_ADMIN_TOKEN_FILE, else admin.token_file of --config FILE,
// else /run/tether/admin.token — readable by root and group tether only.
#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "gateway/admin_client.h"
#include "gateway/admin_token.h"
#include "gateway/config.h"
#include "gateway/secret_file.h"
#include "store/store.h"
#include "tether_version.h"
#include "util/percent_encoding.h"

namespace {

using nlohmann::json;

constexpr int kExitError = 1;
constexpr int kExitUsage = 2;
constexpr int kExitUnreachable = 3;

std::string Cell(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_null()) return "-";
  return v.dump();
}

std::string Upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

// Prints rows (objects) as an aligned table: `preferred` columns first, then any others.
void PrintTable(const json& rows, const std::vector<std::string>& preferred, const char* empty) {
  if (!rows.is_array() || rows.empty()) {
    std::printf("%s\n", empty);
    return;
  }
  std::vector<std::string> cols;
  for (const auto& c : preferred) {
    if (std::any_of(rows.begin(), rows.end(), [&](const json& r) { return r.is_object() && r.contains(c); })) {
      cols.push_back(c);
    }
  }
  for (const auto& r : rows) {
    if (!r.is_object()) continue;
    for (const auto& [k, v] : r.items()) {
      if (std::find(cols.begin(), cols.end(), k) == cols.end()) cols.push_back(k);
    }
  }
  std::vector<std::vector<std::string>> cells;
  std::vector<size_t> width;
  for (const auto& c : cols) width.push_back(c.size());
  for (const auto& r : rows) {
    std::vector<std::string> line;
    for (size_t i = 0; i < cols.size(); ++i) {
      line.push_back(r.is_object() && r.contains(cols[i]) ? Cell(r[cols[i]]) : "-");
      width[i] = std::max(width[i], line.back().size());
    }
    cells.push_back(std::move(line));
  }
  auto print_line = [&](const std::vector<std::string>& line) {
    std::string out;
    for (size_t i = 0; i < line.size(); ++i) {
      out += line[i];
      if (i + 1 < line.size()) out += std::string(width[i] - line[i].size() + 2, ' ');
    }
    std::printf("%s\n", out.c_str());
  };
  std::vector<std::string> header;
  for (const auto& c : cols) header.push_back(Upper(c));
  print_line(header);
  for (const auto& line : cells) print_line(line);
}

// Prints an object as aligned "key: value" lines; nested objects flatten to "a.b".
void Flatten(const json& j, const std::string& prefix, std::vector<std::pair<std::string, std::string>>* out) {
  for (const auto& [k, v] : j.items()) {
    std::string key = prefix.empty() ? k : prefix + "." + k;
    if (v.is_object() && !v.empty()) {
      Flatten(v, key, out);
    } else if (v.is_array()) {
      std::string joined;
      for (const auto& e : v) joined += (joined.empty() ? "" : ", ") + Cell(e);
      out->emplace_back(key, joined.empty() ? "(none)" : joined);
    } else {
      out->emplace_back(key, Cell(v));
    }
  }
}

void PrintFields(const json& j) {
  std::vector<std::pair<std::string, std::string>> lines;
  Flatten(j, "", &lines);
  size_t w = 0;
  for (const auto& [k, v] : lines) w = std::max(w, k.size());
  for (const auto& [k, v] : lines) std::printf("%-*s  %s\n", static_cast<int>(w + 1), (k + ":").c_str(), v.c_str());
}

// The address to reach a daemon listening on `listen` (a wildcard host means this machine).
std::string AdminTarget(const tether::HostPort& listen) {
  std::string host = listen.host;
  if (host == "0.0.0.0" || host.empty()) host = "127.0.0.1";
  if (host == "::") host = "::1";
  return tether::HostPort{host, listen.port}.ToString();
}

// `store check` without a daemon: opens the LMDB store read-only (safe while tetherd runs too).
int CheckStoreDirectly(const std::string& dir, bool raw_json) {
  json out;
  int rc = 0;
  try {
    tether::store::StoreOptions o;
    o.read_only = true;
    auto store = tether::store::Store::Open(dir, o, nullptr);
    tether::store::CheckReport r = store->Check();
    json tables = json::array();
    for (const auto& t : r.tables) tables.push_back({{"name", t.name}, {"entries", t.entries}, {"pages", t.pages}});
    out = {{"ok", r.ok},         {"path", dir},           {"problems", r.problems}, {"file_bytes", r.file_bytes},
           {"map_bytes", r.map_bytes}, {"used_bytes", r.used_bytes}, {"tables", tables}};
    rc = r.ok ? 0 : kExitError;
  } catch (const std::exception& e) {  // StoreError: missing, unreadable, incompatible or corrupt
    out = {{"ok", false}, {"path", dir}, {"problems", json::array({e.what()})}};
    rc = kExitError;
  }
  if (raw_json) std::printf("%s\n", out.dump(2).c_str());
  else PrintFields(out);
  if (rc != 0 && !raw_json) std::fprintf(stderr, "tetherctl: store %s has problems\n", dir.c_str());
  return rc;
}

struct Ctl {
  tether::AdminClient client;
  bool raw_json;
  std::string token_problem;  // why no admin token was sent (said when the daemon answers 401)

  // Performs one request; prints the error and returns false when the daemon refused it.
  bool Call(const std::string& method, const std::string& path, const json& body, json* out, int* exit_code) {
    tether::AdminResponse r = method == "GET" ? client.Get(path) : client.Post(path, body);
    *out = r.Json();
    if (raw_json) std::printf("%s\n", out->dump(2).c_str());
    if (!r.ok()) {
      std::string msg = out->is_object() && out->contains("error") ? Cell((*out)["error"]) : r.body;
      std::fprintf(stderr, "tetherctl: %s (HTTP %d)\n", msg.c_str(), r.status);
      if (r.status == 401 && !token_problem.empty()) std::fprintf(stderr, "tetherctl: %s\n", token_problem.c_str());
      *exit_code = kExitError;
      return false;
    }
    return true;
  }
};

}  // namespace

int main(int argc, char** argv) {
  // Warnings (e.g. a world-readable secret) go to stderr: stdout is for answers and --json.
  auto log = std::make_shared<spdlog::logger>("tetherctl", std::make_shared<spdlog::sinks::stderr_sink_mt>());
  log->set_pattern("tetherctl: %l: %v");
  spdlog::set_default_logger(log);
  CLI::App app{"tetherctl: administer a running tetherd"};
  app.require_subcommand(1);
  app.fallthrough();  // global options may follow the subcommand

  std::string admin = "127.0.0.1:8790";
  std::string config_file;
  bool raw_json = false;
  auto* admin_opt = app.add_option("--admin", admin, "admin endpoint HOST:PORT (env TETHER_ADMIN)")
                        ->envname("TETHER_ADMIN")
                        ->capture_default_str();
  std::string token_file = tether::kDefaultAdminTokenFile;
  auto* token_opt = app.add_option("--token-file", token_file,
                                   "the admin token tetherd writes at start (env TETHER_ADMIN_TOKEN_FILE); readable by "
                                   "root and group tether")
                        ->envname("TETHER_ADMIN_TOKEN_FILE")
                        ->capture_default_str();
  app.add_option("--config", config_file,
                 "the daemon's configuration file: its admin.listen is the default --admin, its store.path "
                 "the store `store check` opens when the daemon is not running");
  app.add_flag("--json", raw_json, "print the daemon's raw JSON answer");

  auto* version = app.add_subcommand("version", "print the version");
  std::string check_file;
  auto* check = app.add_subcommand("check-config", "validate a configuration file (exit 0 valid, 2 invalid)");
  check->add_option("file", check_file, "configuration file")->required();

  auto* status = app.add_subcommand("status", "gateway, upstream, queue and store summary");
  std::string app_filter;
  auto* sessions = app.add_subcommand("sessions", "list device sessions");
  sessions->add_option("--app", app_filter, "only sessions of this app");
  std::string kick_device;
  auto* kick = app.add_subcommand("kick", "end a device's session now (runs its onDisconnect ops)");
  kick->add_option("device", kick_device, "device id")->required();
  auto* queue = app.add_subcommand("queue", "per-route queue to the cloud");

  auto* dl = app.add_subcommand("deadletters", "writes the cloud rejected permanently");
  dl->require_subcommand(1);
  auto* dl_list = dl->add_subcommand("list", "list dead letters");
  std::string dl_id;
  bool dl_all = false;
  auto* dl_retry = dl->add_subcommand("retry", "requeue a dead letter (or --all)");
  auto* dl_drop = dl->add_subcommand("drop", "delete a dead letter (or --all)");
  for (auto* sub : {dl_retry, dl_drop}) {
    auto* id_opt = sub->add_option("id", dl_id, "dead letter id (from `deadletters list`)");
    auto* all_opt = sub->add_flag("--all", dl_all, "every dead letter");
    id_opt->excludes(all_opt);
    sub->require_option(1);
  }

  auto* reload = app.add_subcommand("reload", "re-read the configuration file (like systemctl reload tether)");
  auto* store = app.add_subcommand("store", "local store maintenance");
  store->require_subcommand(1);
  auto* store_check = store->add_subcommand("check", "verify the store's internal consistency");
  std::string store_dir;
  store_check->add_option("--store", store_dir,
                          "open this store directory read-only instead of asking the daemon (works while it is "
                          "stopped; run as the store's owner, e.g. sudo -u tether)");

  CLI11_PARSE(app, argc, argv);

  if (*version) {
    std::printf("tetherctl %s\n", TETHER_VERSION);
    return 0;
  }
  if (*check) {
    try {
      tether::Config::Load(check_file).CheckFiles();
      std::printf("%s: valid\n", check_file.c_str());
      return 0;
    } catch (const tether::ConfigError& e) {
      std::fprintf(stderr, "%s\n", e.what());
      return 2;
    }
  }

  std::optional<tether::Config> config;
  if (!config_file.empty()) {
    try {
      config = tether::Config::Load(config_file);
    } catch (const tether::ConfigError& e) {
      std::fprintf(stderr, "tetherctl: %s\n", e.what());
      return kExitUsage;
    }
    if (admin_opt->count() == 0) admin = AdminTarget(config->admin_listen);
    if (token_opt->count() == 0) token_file = config->admin_token_file;
  }
  if (*store_check && !store_dir.empty()) return CheckStoreDirectly(store_dir, raw_json);

  tether::AdminAddress addr;
  try {
    addr = tether::AdminAddress::Parse(admin);
  } catch (const std::invalid_argument& e) {
    std::fprintf(stderr, "tetherctl: %s\n", e.what());
    return kExitUsage;
  }
  std::string token, token_problem;
  try {
    token = tether::ReadSecretFile(token_file);
    token = token.substr(0, token.find('\n'));
  } catch (const tether::SecretFileError& e) {
    token_problem = std::string(e.what()) + " \xE2\x80\x94 run tetherctl as root (sudo) or as a member of group "
                    "tether, or name the file with --token-file";
  }
  // A reload reads and checks the whole file: the daemon waits up to 60 s for it.
  auto timeout = *reload ? std::chrono::seconds(65) : std::chrono::seconds(10);
  Ctl ctl{tether::AdminClient(addr, token, timeout), raw_json, token_problem};
  int rc = 0;
  json r;
  try {
    if (*status) {
      if (ctl.Call("GET", "/api/v1/status", nullptr, &r, &rc) && !raw_json) PrintFields(r);
    } else if (*sessions) {
      std::string path = "/api/v1/sessions";
      if (!app_filter.empty()) path += "?app=" + tether::util::PercentEncode(app_filter);
      if (ctl.Call("GET", path, nullptr, &r, &rc) && !raw_json) {
        PrintTable(r.value("sessions", json::array()),
                   {"device", "app", "state", "address", "last_seen_s", "since_s"}, "no sessions");
      }
    } else if (*kick) {
      std::string path = "/api/v1/sessions/" + tether::util::PercentEncode(kick_device) + "/kick";
      if (ctl.Call("POST", path, nullptr, &r, &rc) && !raw_json) std::printf("%s\n", Cell(r["message"]).c_str());
    } else if (*queue) {
      if (ctl.Call("GET", "/api/v1/queue", nullptr, &r, &rc) && !raw_json) {
        PrintTable(r.value("routes", json::array()),
                   {"route", "entries", "bytes", "oldest_age_s", "dead_letters", "uploaded", "upload_state",
                    "held_for_s", "held_reason", "last_error"},
                   "no routes");
      }
    } else if (*dl_list) {
      if (ctl.Call("GET", "/api/v1/deadletters", nullptr, &r, &rc) && !raw_json) {
        PrintTable(r.value("dead_letters", json::array()), {"id", "route", "path", "error", "age_s"},
                   "no dead letters");
      }
    } else if (*dl_retry || *dl_drop) {
      json body = dl_all ? json{{"all", true}} : json{{"id", dl_id}};
      std::string path = *dl_retry ? "/api/v1/deadletters/retry" : "/api/v1/deadletters/drop";
      if (ctl.Call("POST", path, body, &r, &rc) && !raw_json) std::printf("%s\n", Cell(r["message"]).c_str());
    } else if (*reload) {
      if (ctl.Call("POST", "/api/v1/reload", nullptr, &r, &rc) && !raw_json) {
        std::printf("%s\n", Cell(r["message"]).c_str());
      }
    } else if (*store_check) {
      if (ctl.Call("GET", "/api/v1/store/check", nullptr, &r, &rc)) {
        if (!raw_json) PrintFields(r);
        if (r.value("ok", false) != true) rc = kExitError;
      }
    }
  } catch (const tether::AdminUnreachable& e) {
    if (*store_check && config) {
      std::fprintf(stderr, "tetherctl: %s; checking %s directly\n", e.what(), config->store.path.c_str());
      return CheckStoreDirectly(config->store.path, raw_json);
    }
    std::fprintf(stderr, "tetherctl: %s \xE2\x80\x94 is the service running? (systemctl status tether)%s\n", e.what(),
                 *store_check ? "; `store check --store DIR` checks a stopped daemon's store" : "");
    return kExitUnreachable;
  }
  return rc;
}
