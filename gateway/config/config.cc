#include "gateway/config/config.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include "gateway/config/admin_token.h"
#include "gateway/config/auth_override.h"
#include "gateway/config/psk_store.h"
#include "gateway/model/route_pattern.h"
#include "gateway/config/secret_file.h"
#include "gateway/config/yaml_schema.h"
#include "upstream/jwt.h"
#include "util/firebase_key.h"
#include "util/host_port.h"

namespace tether {

std::string HostPort::ToString() const { return util::FormatHostPort(host, port); }

namespace {

using std::chrono::hours;
using std::chrono::milliseconds;

HostPort ReadHostPort(const YamlField& f) {
  std::string s = f.AsString();
  std::optional<util::HostPortText> split = util::SplitHostPort(s);
  if (!split || !split->port) {
    f.Fail(!s.empty() && s.front() == '[' ? fmt::format("expected [ipv6]:port, got '{}'", s)
                                          : fmt::format("expected host:port (or [ipv6]:port), got '{}'", s));
  }
  if (split->host.empty()) f.Fail(fmt::format("missing host in '{}'", s));
  std::optional<uint16_t> port = util::ParsePort(*split->port);
  if (!port) f.Fail(fmt::format("port '{}' is not a number in [0, 65535]", *split->port));
  return HostPort{split->host, *port};
}

std::string DefaultStorePath() {
  // systemd's StateDirectory= exports STATE_DIRECTORY (colon-separated when several).
  if (const char* sd = std::getenv("STATE_DIRECTORY"); sd && *sd) {
    std::string s(sd);
    return s.substr(0, s.find(':'));
  }
  return "/var/lib/tether";
}

std::string DefaultAdminTokenFile() {
  // systemd's RuntimeDirectory= exports RUNTIME_DIRECTORY (colon-separated when several).
  if (const char* rd = std::getenv("RUNTIME_DIRECTORY"); rd && *rd) {
    std::string s(rd);
    return s.substr(0, s.find(':')) + "/admin.token";
  }
  return kDefaultAdminTokenFile;
}

std::string HostName() {
  char buf[256] = {0};
  if (gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0') return "tether";
  return buf;
}

void ReadDevice(YamlField f, DeviceConfig* d) {
  if (auto v = f.Optional("listen")) d->listen = ReadHostPort(*v);
  if (auto v = f.Optional("max_datagram")) d->max_datagram = v->AsInt(64, 65507);
  if (auto v = f.Optional("heartbeat_target")) d->heartbeat_target = v->AsDuration(milliseconds(1000), hours(1));
  if (auto v = f.Optional("session_timeout")) {
    d->session_timeout = v->AsDuration(milliseconds(1000), hours(24));
    if (d->session_timeout <= d->heartbeat_target) {
      v->Fail(fmt::format("must be longer than device.heartbeat_target ({}ms)", d->heartbeat_target.count()));
    }
  } else {
    d->session_timeout = d->heartbeat_target * 7 / 4;
  }
  if (auto v = f.Optional("max_payload")) d->max_payload = v->AsBytes(64, 1 << 20);
  if (auto v = f.Optional("opens_per_second")) d->opens_per_second = static_cast<uint32_t>(v->AsInt(0, 1'000'000));
  if (auto v = f.Optional("auth_failures_per_second")) {
    d->auth_failures_per_second = static_cast<uint32_t>(v->AsInt(0, 1'000'000));
  }
  if (auto v = f.Optional("max_unconfirmed_sessions")) {
    d->max_unconfirmed_sessions = static_cast<uint32_t>(v->AsInt(1, 10'000'000));
  }
  // Above 2 s the SDK would retransmit (its first timeout) while its write still waits.
  if (auto v = f.Optional("max_write_wait")) d->max_write_wait = v->AsDuration(milliseconds(10), milliseconds(2000));
  if (auto v = f.Optional("max_observers_per_session")) {
    d->max_observers_per_session = static_cast<uint32_t>(v->AsInt(1, 1'000'000));
  }
  if (auto v = f.Optional("max_ondisconnect_per_session")) {
    d->max_ondisconnect_per_session = static_cast<uint32_t>(v->AsInt(1, 1'000'000));
  }
  if (auto v = f.Optional("max_ondisconnect_bytes_per_session")) {
    d->max_ondisconnect_bytes_per_session = v->AsBytes(1024, uint64_t{1} << 30);
  }
  f.Finish();
}

DtlsConfig ReadDtls(YamlField f) {
  DtlsConfig d;
  if (auto v = f.Optional("listen")) d.listen = ReadHostPort(*v);
  if (auto v = f.Optional("keys_file")) d.keys_file = v->AsString();
  if (auto v = f.Optional("master_key_file")) d.master_key_file = v->AsString();
  if (d.keys_file.empty() && d.master_key_file.empty()) f.Fail("give keys_file, master_key_file or both");
  if (auto v = f.Optional("max_live_sessions")) d.max_live_sessions = static_cast<uint32_t>(v->AsInt(1, 1'000'000));
  if (auto v = f.Optional("max_sessions")) d.max_sessions = static_cast<uint32_t>(v->AsInt(1, 10'000'000));
  if (auto v = f.Optional("max_handshakes")) d.max_handshakes = static_cast<uint32_t>(v->AsInt(1, 100'000));
  if (auto v = f.Optional("sleep_after")) d.sleep_after = v->AsDuration(milliseconds(100), hours(24));
  if (auto v = f.Optional("session_timeout")) d.session_timeout = v->AsDuration(milliseconds(1000), hours(24 * 365));
  if (auto v = f.Optional("handshake_timeout")) d.handshake_timeout = v->AsDuration(milliseconds(2000), hours(1));
  if (auto v = f.Optional("hellos_per_second")) d.hellos_per_second = static_cast<uint32_t>(v->AsInt(0, 1'000'000));
  f.Finish();
  return d;
}

// The LMDB map is address space: a 32-bit build cannot map more than store::kMaxMapBytes.
uint64_t ReadMapBytes(const YamlField& v) {
  uint64_t n = v.AsBytes(1 << 20, 1ull << 40);
  if (n > store::kMaxMapBytes) {
    v.Fail(fmt::format("{} bytes do not fit the address space of this 32-bit build: at most {} (2GiB), "
                       "default 1GiB", n, store::kMaxMapBytes));
  }
  return n;
}

void ReadStore(YamlField f, StoreConfig* s) {
  if (auto v = f.Optional("path")) {
    s->path = v->AsString();
    if (s->path.empty()) v->Fail("must not be empty");
  }
  if (auto v = f.Optional("durability")) s->fsync = v->AsEnum({"fsync", "os-buffered"}) == "fsync";
  if (auto v = f.Optional("map_size")) s->map_size = ReadMapBytes(*v);
  if (auto v = f.Optional("map_max")) {
    s->map_max = ReadMapBytes(*v);
    if (s->map_max < s->map_size) v->Fail("must be at least store.map_size");
  } else if (s->map_max < s->map_size) {
    s->map_max = s->map_size;
  }
  if (auto v = f.Optional("cache_bytes")) s->cache_bytes = v->AsBytes(64 << 10, 1ull << 40);
  if (auto v = f.Optional("cache_unit_depth")) s->cache_unit_depth = static_cast<uint32_t>(v->AsInt(1, 32));
  if (auto v = f.Optional("queue_max_entries")) s->queue_max_entries = v->AsInt(1, INT64_MAX);
  if (auto v = f.Optional("queue_max_bytes")) s->queue_max_bytes = v->AsBytes(1 << 10, 1ull << 40);
  f.Finish();
}

FileRef Ref(FileRef::Kind kind, const YamlField& f, std::string path) {
  return FileRef{kind, std::move(path), f.line(), f.column(), f.key_path()};
}

UpstreamConfig ReadUpstream(YamlField f, std::vector<FileRef>* files) {
  UpstreamConfig u;
  YamlField url = f.Required("url");
  u.url = url.AsString();
  if (u.url.rfind("https://", 0) != 0 && u.url.rfind("http://", 0) != 0) {
    url.Fail("must start with https:// (or http:// for a local test cloud)");
  }
  if (u.url.find_first_of("?#@") != std::string::npos) {
    url.Fail("must be a plain database URL without query, fragment or user info (put credentials in "
             "secret_file, access_token_file or service_account_file)");
  }
  while (!u.url.empty() && u.url.back() == '/') u.url.pop_back();
  int creds = 0;
  auto file = [&](const char* key, FileRef::Kind kind, std::string* out) {
    if (auto v = f.Optional(key)) {
      *out = v->AsString();
      if (out->empty()) v->Fail("must not be empty");
      files->push_back(Ref(kind, *v, *out));
      ++creds;
    }
  };
  file("secret_file", FileRef::Kind::kDatabaseSecret, &u.secret_file);
  file("access_token_file", FileRef::Kind::kAccessToken, &u.access_token_file);
  file("service_account_file", FileRef::Kind::kServiceAccount, &u.service_account_file);
  if (creds > 1) f.Fail("give at most one of secret_file, access_token_file, service_account_file");
  if (auto v = f.Optional("auth_variable_override")) {
    std::string text = v->AsString(), error;
    if (text.empty() || text.front() != '{') {  // true / false (yes/no, on/off)
      u.auth_variable_override = v->AsBool() ? AuthOverride::kDefault : "";
    } else if (!AuthOverride::Parse(text, &error)) {
      v->Fail(error);
    } else {
      u.auth_variable_override = text;
    }
  }
  if (auto v = f.Optional("presence_path")) {
    // Firebase refuses a path with an invalid key in any segment, and the presence node must
    // not be the database root (its PUT would replace everything).
    u.presence_path = v->AsString();
    std::vector<std::string> segs = SplitPath(u.presence_path);
    if (segs.empty()) v->Fail("must name a node below the database root");
    for (const auto& seg : segs) {
      if (!util::IsFirebaseKey(seg)) {
        v->Fail(fmt::format("'{}' is not a valid key: Firebase refuses it (no . $ # [ ] / or control "
                            "characters in any segment; e.g. /tether-gateways/<id>)", seg));
      }
    }
    if (segs.size() + 1 > 32 || JoinPath(segs).size() + 1 + std::string("/last_seen").size() > 768) {
      v->Fail("too deep or too long for a Firebase path (32 levels, 768 bytes with its children)");
    }
  }
  if (auto v = f.Optional("ca_file")) u.ca_file = v->AsString();
  if (auto v = f.Optional("observe_streams")) u.observe_streams = static_cast<uint32_t>(v->AsInt(0, 1000));
  if (auto v = f.Optional("observe_poll_interval")) {
    u.observe_poll_interval = v->AsDuration(Millis(1000), Millis(3'600'000));
  }
  if (auto v = f.Optional("clock_wait")) u.clock_wait = v->AsDuration(Millis(1000), Millis(3'600'000));
  if (auto v = f.Optional("on_clock_timeout")) {
    u.on_clock_timeout = v->AsEnum({"upload", "hold"}) == "upload" ? UpstreamConfig::OnClockTimeout::kUpload
                                                                   : UpstreamConfig::OnClockTimeout::kHold;
  }
  f.Finish();
  return u;
}

AppConfig ReadApp(YamlField f, std::vector<FileRef>* files) {
  AppConfig a;
  YamlField id = f.Required("id");
  a.id = id.AsString();
  if (!util::IsFirebaseKey(a.id) || a.id.find('.') != std::string::npos) id.Fail("not a valid app id");
  if (auto v = f.Optional("default")) a.is_default = v->AsBool();
  if (auto auth = f.Optional("auth")) {
    std::string mode = auth->Required("mode").AsEnum({"open", "tokens", "hmac"});
    if (mode == "tokens") {
      a.auth.mode = AppAuth::Mode::kTokens;
      for (auto t : auth->Required("tokens").Items()) {
        AppAuth::Token tok{t.Required("device").AsString(), t.Required("token").AsString()};
        if (tok.token.empty() || tok.token.size() > 512) t.Fail("token must be 1 to 512 bytes");
        t.Finish();
        a.auth.tokens.push_back(tok);
      }
    } else if (mode == "hmac") {
      a.auth.mode = AppAuth::Mode::kHmac;
      YamlField secret = auth->Required("secret_file");
      a.auth.secret_file = secret.AsString();
      files->push_back(Ref(FileRef::Kind::kHmacSecret, secret, a.auth.secret_file));
    }
    auth->Finish();
  }
  f.Finish();
  return a;
}

RouteConfig::Access ReadAccess(const YamlField& f) {
  std::string s = f.AsEnum({"none", "own", "all"});
  return s == "none" ? RouteConfig::Access::kNone
         : s == "own" ? RouteConfig::Access::kOwn
                      : RouteConfig::Access::kAll;
}

RouteConfig ReadRoute(YamlField f, const Config& c, const std::set<std::string>& app_ids) {
  RouteConfig r;
  YamlField name = f.Required("name");
  r.name = name.AsString();
  if (!util::IsFirebaseKey(r.name)) name.Fail("not a valid route name");
  if (auto v = f.Optional("app")) {
    r.app = v->AsString();
    if (!app_ids.count(r.app)) v->Fail(fmt::format("unknown app '{}'", r.app));
  } else {
    if (c.apps.size() != 1) f.Fail("route must name its app when several apps are configured");
    r.app = c.apps.front().id;
  }
  YamlField match = f.Required("match");
  r.match = match.AsString();
  auto mp = RoutePattern::Parse(r.match);
  if (!mp) match.Fail(mp.error().message);
  r.cloud = r.match;
  Expected<RoutePattern> cp = mp;
  if (auto v = f.Optional("cloud")) {
    r.cloud = v->AsString();
    cp = RoutePattern::Parse(r.cloud);
    if (!cp) v->Fail(cp.error().message);
    for (const auto& cap : cp->CaptureNames()) {
      if (!mp->HasCapture(cap) && cap != "device" && !c.variables.count(cap)) {
        v->Fail(fmt::format("{{{}}} is neither captured by match, nor {{device}}, nor in gateway.variables", cap));
      }
    }
    if (cp->HasRest() != mp->HasRest()) v->Fail("cloud must end in '**' exactly when match does");
  }
  if (auto v = f.Optional("read")) r.read = ReadAccess(*v);
  if (auto v = f.Optional("write")) r.write = ReadAccess(*v);
  if ((r.read == RouteConfig::Access::kOwn || r.write == RouteConfig::Access::kOwn) && !mp->HasCapture("device")) {
    match.Fail("access 'own' needs a {device} capture in match");
  }
  if (auto v = f.Optional("on_disconnect")) r.on_disconnect = v->AsBool();
  if (auto v = f.Optional("timestamps")) {
    r.timestamps = v->AsEnum({"event", "arrival"}) == "event" ? RouteConfig::Timestamps::kEventTime
                                                               : RouteConfig::Timestamps::kArrival;
  }
  if (auto v = f.Optional("priority")) r.priority = static_cast<int>(v->AsInt(-100, 100));
  if (auto v = f.Optional("sync")) {
    for (auto s : v->Items()) {
      std::string path = s.AsString();
      for (const auto& seg : SplitPath(path)) {
        if (!util::IsFirebaseKey(seg)) s.Fail(fmt::format("'{}' is not a valid cloud path", path));
      }
      r.sync.push_back(JoinPath(SplitPath(path)));
    }
  }
  if (auto q = f.Optional("queue")) {
    if (auto v = q->Optional("max_entries")) r.queue.max_entries = v->AsInt(1, INT64_MAX);
    if (auto v = q->Optional("max_bytes")) r.queue.max_bytes = v->AsBytes(1 << 10, 1ull << 40);
    if (auto v = q->Optional("on_full")) {
      r.queue.on_full = v->AsEnum({"reject", "drop-oldest"}) == "reject" ? QueuePolicy::OnFull::kReject
                                                                           : QueuePolicy::OnFull::kDropOldest;
    }
    if (auto v = q->Optional("ttl")) r.queue.ttl = v->AsDuration(milliseconds(1000), hours(24 * 365));
    q->Finish();
  }
  f.Finish();
  return r;
}

void ValidateRoutes(Config* c, YamlField* routes_field) {
  std::map<std::string, PatternOverlapIndex> by_app;  // the routes so far, per app
  std::set<std::string> names;
  for (size_t i = 0; i < c->routes.size(); ++i) {
    const RouteConfig& r = c->routes[i];
    RoutePattern pat = *RoutePattern::Parse(r.match);
    auto fail = [&](const std::string& what) {
      if (routes_field) routes_field->Items()[i].Fail(what);
      throw ConfigError(c->source_file, 0, 0, fmt::format("routes[{}]", i), what);
    };
    if (!names.insert(r.name).second) fail(fmt::format("duplicate route name '{}'", r.name));
    PatternOverlapIndex& earlier = by_app[r.app];
    if (int j = earlier.FindOverlap(pat); j >= 0) {
      fail(fmt::format("match '{}' overlaps route '{}' ('{}'): a path could match both", r.match,
                       c->routes[j].name, c->routes[j].match));
    }
    earlier.Add(pat, static_cast<int>(i));
  }
}

Config ParseRoot(YAML::Node root, const std::string& file) {
  Config c;
  c.source_file = file;
  c.gateway_id = HostName();
  c.store.path = DefaultStorePath();
  c.admin_token_file = DefaultAdminTokenFile();
  YamlField top(file, root, "");
  if (root.IsNull()) root = YAML::Node(YAML::NodeType::Map), top = YamlField(file, root, "");
  if (!root.IsMap()) top.Fail("the configuration must be a mapping");

  if (auto g = top.Optional("gateway")) {
    if (auto v = g->Optional("id")) {
      c.gateway_id = v->AsString();
      if (!util::IsFirebaseKey(c.gateway_id)) v->Fail("not a valid key (no . $ # [ ] / or control characters)");
    }
    if (auto vars = g->Optional("variables")) {
      if (!vars->IsMap()) vars->Fail("expected a mapping of name: value");
      YAML::Node n = root["gateway"]["variables"];
      for (auto it = n.begin(); it != n.end(); ++it) {
        std::string k = it->first.Scalar();
        YamlField val = vars->Required(k);
        c.variables[k] = val.AsString();
        if (!util::IsFirebaseKey(c.variables[k])) val.Fail("not a valid key");
      }
      vars->Finish();
    }
    g->Finish();
  }
  if (auto v = top.Optional("device")) ReadDevice(*v, &c.device);
  if (auto v = top.Optional("dtls")) c.dtls = ReadDtls(*v);
  if (auto v = top.Optional("store")) ReadStore(*v, &c.store);
  if (auto v = top.Optional("upstream")) c.upstream = ReadUpstream(*v, &c.files);
  if (auto a = top.Optional("admin")) {
    if (auto v = a->Optional("listen")) c.admin_listen = ReadHostPort(*v);
    if (auto v = a->Optional("token_file")) {
      c.admin_token_file = v->AsString();
      if (c.admin_token_file.empty() || c.admin_token_file.back() == '/') v->Fail("must name a file");
    }
    a->Finish();
  }
  if (auto l = top.Optional("log")) {
    if (auto v = l->Optional("level")) c.log_level = v->AsEnum({"trace", "debug", "info", "warn", "error"});
    l->Finish();
  }
  if (c.upstream && c.upstream->presence_path.empty()) {
    c.upstream->presence_path = "/tether-gateways/" + PresenceKey(c.gateway_id);
  }

  if (auto apps = top.Optional("apps")) {
    std::set<std::string> ids;
    int defaults = 0;
    for (auto item : apps->Items()) {
      AppConfig a = ReadApp(item, &c.files);
      if (!ids.insert(a.id).second) item.Fail(fmt::format("duplicate app id '{}'", a.id));
      defaults += a.is_default;
      if (defaults > 1) item.Fail("only one app may be the default");
      c.apps.push_back(std::move(a));
    }
  }
  if (c.apps.empty()) {
    c.apps.push_back(AppConfig{"default", true, {}});
    c.open_apps = true;
  }
  if (c.apps.size() == 1) c.apps.front().is_default = true;

  std::optional<YamlField> routes = top.Optional("routes");
  std::set<std::string> app_ids, routed_apps;
  for (const auto& a : c.apps) app_ids.insert(a.id);
  if (routes) {
    for (auto item : routes->Items()) {
      c.routes.push_back(ReadRoute(item, c, app_ids));
      if (c.open_apps && c.routes.back().name == Config::kOpenAppsRoute) {
        item.Required("name").Fail(fmt::format("'{}' is the route of the apps accepted without an `apps` list; "
                                               "choose another name", Config::kOpenAppsRoute));
      }
    }
  } else if (c.apps.size() > 1) {
    // Each app's catch-all would map device path = cloud path: the apps would share one tree.
    std::string fix;
    for (const auto& a : c.apps) fix += fmt::format("\n  - {{ name: {0}, app: {0}, match: \"**\", cloud: \"{0}/**\" }}", a.id);
    top.Required("apps").Fail(fmt::format("{} apps and no routes: each would see the others' data (device path = "
                                          "cloud path for all). Give each app its own routes, e.g.\nroutes:{}",
                                          c.apps.size(), fix));
  }
  for (const auto& r : c.routes) routed_apps.insert(r.app);
  for (const auto& a : c.apps) {
    bool has = routed_apps.count(a.id) > 0;
    if (!has && !routes) {
      RouteConfig r;
      r.name = a.id;
      r.app = a.id;
      r.match = "**";
      r.cloud = "**";
      c.routes.push_back(r);
      routed_apps.insert(a.id);
    }
  }
  if (c.open_apps) {  // any other app id: its own namespace "<id>/" in the local copy and the cloud
    RouteConfig r;
    r.name = Config::kOpenAppsRoute;
    r.app = Config::kAnyApp;
    r.match = "**";
    r.cloud = "{app}/**";
    c.routes.push_back(r);
  }
  ValidateRoutes(&c, routes ? &*routes : nullptr);
  for (const auto& a : c.apps) {
    bool has = routed_apps.count(a.id) > 0;
    if (!has) routes->Fail(fmt::format("app '{}' has no route: its devices could read and write nothing", a.id));
  }
  top.Finish();
  return c;
}

}  // namespace

std::string PresenceKey(const std::string& gateway_id) {
  std::string key;
  for (unsigned char ch : gateway_id) {
    key += util::IsForbiddenKeyByte(ch) ? '_' : static_cast<char>(ch);
  }
  return key.empty() ? std::string("gateway") : key;
}

Config Config::Parse(const std::string& yaml_text, const std::string& file_name) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    throw ConfigError(file_name, e.mark.is_null() ? 0 : e.mark.line + 1, e.mark.is_null() ? 0 : e.mark.column + 1,
                      "", e.msg);
  }
  return ParseRoot(root, file_name);
}

void Config::CheckFiles() const {
  if (dtls) PskStore keys(*dtls);  // the key files, errors at their own file:line
  for (const FileRef& f : files) {
    auto fail = [&](const std::string& what) { throw ConfigError(source_file, f.line, f.column, f.key_path, what); };
    std::string content;
    try {
      content = ReadSecretValue(f.path);
    } catch (const SecretFileError& e) {
      fail(e.what());
    }
    switch (f.kind) {
      case FileRef::Kind::kHmacSecret:
        if (content.size() < 16) fail(fmt::format("{}: the secret must be at least 16 bytes", f.path));
        break;
      case FileRef::Kind::kDatabaseSecret:
      case FileRef::Kind::kAccessToken:
        if (content.find_first_not_of(" \t") == std::string::npos) fail(fmt::format("{} is empty", f.path));
        break;
      case FileRef::Kind::kServiceAccount: {
        auto key = nlohmann::json::parse(content, nullptr, false);
        auto has = [&](const char* k) { return key.is_object() && key.contains(k) && key[k].is_string(); };
        if (key.is_discarded()) fail(fmt::format("{} is not JSON (expected a service-account key file)", f.path));
        if (!has("client_email") || !has("private_key")) {
          fail(fmt::format("{} lacks client_email or private_key (expected a service-account key file)", f.path));
        }
        std::string why;
        if (!upstream::SignJwtRs256({{"check", true}}, key["private_key"].get<std::string>(), &why)) {
          fail(fmt::format("{}: private_key is not a usable RSA key ({})", f.path, why));
        }
        break;
      }
    }
  }
}

Config Config::Load(const std::string& file) {
  std::ifstream in(file);
  if (!in) throw ConfigError(file, 0, 0, "", "cannot read the file");
  // Whoever can write the file chooses the routes and which secret files are read.
  struct stat st {};
  if (stat(file.c_str(), &st) == 0 && (st.st_mode & S_IWOTH)) {
    throw ConfigError(file, 0, 0, "",
                      fmt::format("writable by every user (mode {:04o}): anyone could change the routes and the "
                                  "secrets used; chmod o-w {}",
                                  st.st_mode & 07777, file));
  }
  std::stringstream ss;
  ss << in.rdbuf();
  Config c = Parse(ss.str(), file);
  for (const auto& a : c.apps) {
    if (a.auth.mode == AppAuth::Mode::kTokens && (st.st_mode & S_IROTH)) {
      spdlog::warn("{}: app '{}' lists its device tokens in a file every user can read (mode {:04o}): chmod o-r {}, "
                   "or use auth mode hmac with a secret_file",
                   file, a.id, st.st_mode & 07777, file);
    }
  }
  return c;
}

}  // namespace tether
