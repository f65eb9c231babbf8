#include "gateway/config/config.h"
#include "gateway/config/auth_override.h"

#include <gtest/gtest.h>

#include <string>

namespace tether {
namespace {

Config ParseOk(const std::string& yaml) { return Config::Parse(yaml, "t.yaml"); }

// Returns the error text, or "" when the config was accepted.
std::string ErrorOf(const std::string& yaml) {
  try {
    Config::Parse(yaml, "t.yaml");
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

TEST(Config, EmptyFileGivesLocalOnlyDefaults) {
  Config c = ParseOk("");
  EXPECT_EQ(c.device.listen.host, "0.0.0.0");
  EXPECT_EQ(c.device.listen.port, 5683);
  EXPECT_EQ(c.admin_listen.ToString(), "127.0.0.1:8790");
  EXPECT_EQ(c.device.max_datagram, 1280u);
  EXPECT_EQ(c.device.heartbeat_target.count(), 20000);
  EXPECT_GT(c.device.session_timeout, c.device.heartbeat_target);
  EXPECT_EQ(c.device.max_write_wait.count(), 100);
  EXPECT_FALSE(c.upstream.has_value());
  EXPECT_EQ(c.log_level, "info");
  EXPECT_TRUE(c.store.fsync);
  ASSERT_EQ(c.apps.size(), 1u);
  EXPECT_TRUE(c.apps[0].is_default);
  EXPECT_TRUE(c.open_apps) << "no apps listed: any app id is accepted";
  ASSERT_EQ(c.routes.size(), 2u);
  EXPECT_EQ(c.routes[0].match, "**");
  EXPECT_EQ(c.routes[0].cloud, "**") << "the default app: device path = cloud path";
  EXPECT_EQ(c.routes[1].app, Config::kAnyApp);
  EXPECT_EQ(c.routes[1].cloud, "{app}/**") << "other app ids: each its own namespace";
}

TEST(Config, ShippedFileIsValid) {
  const char* src = std::getenv("TETHER_SOURCE_DIR");
  if (!src) src = TETHER_SOURCE_DIR_FALLBACK;
  Config c = Config::Load(std::string(src) + "/etc/tether.yaml");
  EXPECT_FALSE(c.upstream.has_value());
}

TEST(Config, StorePathDefaultsToStateDirectory) {
  setenv("STATE_DIRECTORY", "/run/x:/run/y", 1);
  EXPECT_EQ(ParseOk("").store.path, "/run/x");
  unsetenv("STATE_DIRECTORY");
  EXPECT_EQ(ParseOk("").store.path, "/var/lib/tether");
}

// The LMDB map is address space: a 32-bit build (armhf, run by make cross-test) defaults to 1 GiB
// mapped at once and refuses a map it cannot hold; a 64-bit build keeps 1 GiB growing to 8 GiB.
TEST(Config, StoreMapDefaultsFitTheAddressSpace) {
  Config c = ParseOk("");
  EXPECT_LE(c.store.map_size, c.store.map_max);
  EXPECT_LE(c.store.map_max, store::kMaxMapBytes);
  EXPECT_LT(c.store.queue_max_bytes, c.store.map_max);  // a full queue is refused before the map is
  const std::string err = ErrorOf("store:\n  map_max: 4GiB\n");
  if (store::kAddressSpace32) {
    EXPECT_EQ(c.store.map_max, 1ull << 30);
    EXPECT_EQ(c.store.queue_max_bytes, 512ull << 20);
    EXPECT_EQ(err.rfind("t.yaml:2:12: store.map_max: 4294967296 bytes do not fit the address space of this "
                        "32-bit build: at most 2147483648 (2GiB)", 0), 0u) << err;
    EXPECT_NE(ErrorOf("store:\n  map_size: 3GiB\n").find("store.map_size"), std::string::npos);
    EXPECT_EQ(ErrorOf("store:\n  map_max: 2GiB\n"), "");
  } else {
    EXPECT_EQ(c.store.map_max, 8ull << 30);
    EXPECT_EQ(c.store.queue_max_bytes, 4ull << 30);
    EXPECT_EQ(err, "");
  }
}

TEST(Config, UnknownKeyNamesLineColumnAndPath) {
  EXPECT_EQ(ErrorOf("device:\n  listen: \"0.0.0.0:5683\"\n  heartbaet_target: 20s\n"),
            "t.yaml:3:3: device.heartbaet_target: unknown key");
  EXPECT_EQ(ErrorOf("nonsense: 1\n"), "t.yaml:1:1: nonsense: unknown key");
}

TEST(Config, DuplicateKeyIsAnError) {
  EXPECT_EQ(ErrorOf("log:\n  level: info\n  level: debug\n"), "t.yaml:3:3: log.level: duplicate key");
}

struct BadCase {
  const char* yaml;
  const char* error;
};

class ConfigRejects : public testing::TestWithParam<BadCase> {};

TEST_P(ConfigRejects, WithPreciseMessage) { EXPECT_EQ(ErrorOf(GetParam().yaml), GetParam().error); }

INSTANTIATE_TEST_SUITE_P(
    Table, ConfigRejects,
    testing::Values(
        BadCase{"device:\n  max_datagram: 70000\n", "t.yaml:2:17: device.max_datagram: 70000 is out of range [64, 65507]"},
        BadCase{"device:\n  max_datagram: many\n", "t.yaml:2:17: device.max_datagram: expected an integer, got 'many'"},
        BadCase{"device:\n  listen: 5683\n", "t.yaml:2:11: device.listen: expected host:port (or [ipv6]:port), got '5683'"},
        BadCase{"device:\n  listen: \"h:99999\"\n", "t.yaml:2:11: device.listen: port '99999' is not a number in [0, 65535]"},
        BadCase{"device:\n  heartbeat_target: 20 parsecs\n",
                "t.yaml:2:21: device.heartbeat_target: unknown duration unit 'parsecs' (use ms, s, m, h or d)"},
        BadCase{"device:\n  heartbeat_target: 20s\n  session_timeout: 10s\n",
                "t.yaml:3:20: device.session_timeout: must be longer than device.heartbeat_target (20000ms)"},
        BadCase{"device:\n  max_write_wait: 5s\n", "t.yaml:2:19: device.max_write_wait: 5s is out of range [10ms, 2000ms]"},
        BadCase{"store:\n  durability: maybe\n", "t.yaml:2:15: store.durability: 'maybe' is not one of: fsync, os-buffered"},
        BadCase{"store:\n  cache_bytes: 10XB\n",
                "t.yaml:2:16: store.cache_bytes: unknown size unit 'XB' (use B, KB, MB, GB, KiB, MiB or GiB)"},
        BadCase{"store:\n  cache_unit_depth: 0\n", "t.yaml:2:21: store.cache_unit_depth: 0 is out of range [1, 32]"},
        BadCase{"log:\n  level: loud\n", "t.yaml:2:10: log.level: 'loud' is not one of: trace, debug, info, warn, error"},
        BadCase{"upstream:\n  url: ftp://x\n", "t.yaml:2:8: upstream.url: must start with https:// (or http:// for a local test cloud)"},
        BadCase{"upstream:\n  secret_file: /x\n", "t.yaml:2:3: upstream.url: required key is missing"},
        BadCase{"upstream:\n  url: http://h\n  auth_variable_override: '{\"uid\":\"{dev}\"}'\n",
                "t.yaml:3:27: upstream.auth_variable_override: unknown placeholder {dev} (known: {device}, {app}, {gateway})"},
        BadCase{"upstream:\n  url: http://h\n  auth_variable_override: maybe\n",
                "t.yaml:3:27: upstream.auth_variable_override: expected true or false, got 'maybe'"},
        BadCase{"upstream:\n  url: http://h\n  observe_streams: 5000\n",
                "t.yaml:3:20: upstream.observe_streams: 5000 is out of range [0, 1000]"},
        BadCase{"upstream:\n  url: \"https://x.firebaseio.com/?auth=s3cret\"\n",
                "t.yaml:2:8: upstream.url: must be a plain database URL without query, fragment or user info (put "
                "credentials in secret_file, access_token_file or service_account_file)"},
        BadCase{"upstream:\n  url: https://x\n  secret_file: \"\"\n", "t.yaml:3:16: upstream.secret_file: must not be empty"},
        // Firebase refuses a path with an invalid key in any segment (the old default too).
        BadCase{"upstream:\n  url: https://x\n  presence_path: /.gateways/gw1\n",
                "t.yaml:3:18: upstream.presence_path: '.gateways' is not a valid key: Firebase refuses it (no . $ # [ ] "
                "/ or control characters in any segment; e.g. /tether-gateways/<id>)"},
        BadCase{"upstream:\n  url: https://x\n  presence_path: \"gw/a#b\"\n",
                "t.yaml:3:18: upstream.presence_path: 'a#b' is not a valid key: Firebase refuses it (no . $ # [ ] "
                "/ or control characters in any segment; e.g. /tether-gateways/<id>)"},
        BadCase{"upstream:\n  url: https://x\n  presence_path: /\n",
                "t.yaml:3:18: upstream.presence_path: must name a node below the database root"},
        BadCase{"upstream:\n  url: https://x\n  clock_wait: 10ms\n",
                "t.yaml:3:15: upstream.clock_wait: 10ms is out of range [1000ms, 3600000ms]"},
        BadCase{"upstream:\n  url: https://x\n  on_clock_timeout: guess\n",
                "t.yaml:3:21: upstream.on_clock_timeout: 'guess' is not one of: upload, hold"},
        BadCase{"device: [1, 2]\n", "t.yaml:1:9: device: expected a mapping"},
        BadCase{"dtls:\n  listen: \"0.0.0.0:5684\"\n", "t.yaml:2:3: dtls: give keys_file, master_key_file or both"},
        BadCase{"dtls:\n  keys_file: /k\n  max_live_sessions: 0\n",
                "t.yaml:3:22: dtls.max_live_sessions: 0 is out of range [1, 1000000]"},
        BadCase{"dtls:\n  keys_file: /k\n  sleep_after: 1ms\n",
                "t.yaml:3:16: dtls.sleep_after: 1ms is out of range [100ms, 86400000ms]"},
        BadCase{"dtls:\n  keys_file: /k\n  cipher: rot13\n", "t.yaml:3:3: dtls.cipher: unknown key"},
        BadCase{"device: [\n", "t.yaml:2:1: end of sequence flow not found"},
        BadCase{"apps:\n  - id: a\n  - id: a\n", "t.yaml:3:5: apps[1]: duplicate app id 'a'"},
        BadCase{"apps:\n  - id: a.b\n", "t.yaml:2:9: apps[0].id: not a valid app id"},
        BadCase{"apps:\n  - id: a\n    auth: { mode: tokens, tokens: [ { device: d1 } ] }\n",
                "t.yaml:3:37: apps[0].auth.tokens[0].token: required key is missing"},
        BadCase{"routes:\n  - name: r\n    match: \"a/**/b\"\n", "t.yaml:3:12: routes[0].match: '**' may only be the last segment"},
        BadCase{"routes:\n  - name: r\n    match: \"a/{x\"\n", "t.yaml:3:12: routes[0].match: malformed capture '{x' (use {name})"},
        BadCase{"routes:\n  - name: r\n    match: \"devices/**\"\n    read: own\n",
                "t.yaml:3:12: routes[0].match: access 'own' needs a {device} capture in match"},
        BadCase{"routes:\n  - name: r\n    match: \"d/{id}/**\"\n    cloud: \"f/{site}/{id}/**\"\n",
                "t.yaml:4:12: routes[0].cloud: {site} is neither captured by match, nor {device}, nor in gateway.variables"},
        BadCase{"routes:\n  - name: a\n    match: \"devices/**\"\n  - name: b\n    match: \"devices/{device}/x\"\n",
                "t.yaml:4:5: routes[1]: match 'devices/{device}/x' overlaps route 'a' ('devices/**'): a path could match both"},
        BadCase{"routes:\n  - name: a\n    match: \"x\"\n    app: nope\n", "t.yaml:4:10: routes[0].app: unknown app 'nope'"},
        BadCase{"apps:\n  - id: a\n  - id: b\nroutes:\n  - { name: r, app: a, match: \"**\" }\n",
                "t.yaml:5:3: routes: app 'b' has no route: its devices could read and write nothing"},
        BadCase{"apps:\n  - id: a\n  - id: b\n",
                "t.yaml:2:3: apps: 2 apps and no routes: each would see the others' data (device path = cloud path "
                "for all). Give each app its own routes, e.g.\nroutes:\n  - { name: a, app: a, match: \"**\", cloud: "
                "\"a/**\" }\n  - { name: b, app: b, match: \"**\", cloud: \"b/**\" }"},
        BadCase{"routes:\n  - { name: open-apps, match: \"x/**\" }\n",
                "t.yaml:2:13: routes[0].name: 'open-apps' is the route of the apps accepted without an `apps` list; "
                "choose another name"}));

TEST(Config, RoutesWithVariablesAndAccess) {
  Config c = ParseOk(
      "gateway:\n  id: gw1\n  variables: { site: plant7 }\n"
      "apps:\n  - id: myapp\n    auth: { mode: tokens, tokens: [ { device: d1, token: t1 } ] }\n"
      "routes:\n"
      "  - name: devices\n    match: \"devices/{device}/**\"\n    cloud: \"fleet/{site}/{device}/**\"\n"
      "    read: own\n    write: own\n    queue: { max_entries: 1000, on_full: drop-oldest, ttl: 7d }\n"
      "  - name: config\n    match: \"config/**\"\n    write: none\n    sync: [ \"config\" ]\n"
      "upstream:\n  url: http://127.0.0.1:9000/\n");
  EXPECT_EQ(c.gateway_id, "gw1");
  EXPECT_EQ(c.variables.at("site"), "plant7");
  ASSERT_EQ(c.routes.size(), 2u);
  EXPECT_EQ(c.routes[0].read, RouteConfig::Access::kOwn);
  EXPECT_EQ(c.routes[0].queue.on_full, QueuePolicy::OnFull::kDropOldest);
  EXPECT_EQ(c.routes[0].queue.ttl->count(), 7 * 86400000LL);
  EXPECT_EQ(c.routes[1].write, RouteConfig::Access::kNone);
  EXPECT_EQ(c.routes[1].sync, std::vector<std::string>{"config"});
  ASSERT_TRUE(c.upstream);
  EXPECT_EQ(c.upstream->url, "http://127.0.0.1:9000");
  EXPECT_EQ(c.upstream->presence_path, "/tether-gateways/gw1");
  EXPECT_EQ(c.upstream->auth_variable_override, "") << "off by default";
  EXPECT_EQ(c.upstream->observe_streams, 32u);
  EXPECT_EQ(c.upstream->observe_poll_interval.count(), 30000);
  EXPECT_EQ(c.apps[0].auth.tokens[0].device, "d1");
}

TEST(Config, AuthVariableOverrideIsOffTrueOrATemplate) {
  auto with = [](const std::string& v) {
    return ParseOk("upstream:\n  url: http://h\n  auth_variable_override: " + v + "\n").upstream->auth_variable_override;
  };
  EXPECT_EQ(with("false"), "");
  EXPECT_EQ(with("true"), AuthOverride::kDefault);
  EXPECT_EQ(with("'{\"uid\":\"{app}/{device}\"}'"), R"({"uid":"{app}/{device}"})");
  Config c = ParseOk("upstream:\n  url: http://h\n  observe_streams: 0\n  observe_poll_interval: 5s\n  ca_file: /ca.pem\n");
  EXPECT_EQ(c.upstream->observe_streams, 0u);
  EXPECT_EQ(c.upstream->observe_poll_interval.count(), 5000);
  EXPECT_EQ(c.upstream->ca_file, "/ca.pem");
}

TEST(Config, PresencePathDefaultIsAValidFirebasePathWhateverTheHostName) {
  EXPECT_EQ(ParseOk("gateway:\n  id: gw-7\nupstream:\n  url: https://x\n").upstream->presence_path, "/tether-gateways/gw-7");
  EXPECT_EQ(PresenceKey("gw.example.com"), "gw_example_com") << "a default id is the host name, dots and all";
  EXPECT_EQ(PresenceKey("a$b#c[d]e/f\x01"), "a_b_c_d_e_f_");
  EXPECT_EQ(ParseOk("upstream:\n  url: https://x\n  presence_path: ops/gateways/gw1\n").upstream->presence_path,
            "ops/gateways/gw1");
  Config c = ParseOk("upstream:\n  url: https://x\n");
  EXPECT_EQ(c.upstream->clock_wait.count(), 10000);
  EXPECT_EQ(c.upstream->on_clock_timeout, UpstreamConfig::OnClockTimeout::kUpload);
  c = ParseOk("upstream:\n  url: https://x\n  clock_wait: 2m\n  on_clock_timeout: hold\n");
  EXPECT_EQ(c.upstream->clock_wait.count(), 120000);
  EXPECT_EQ(c.upstream->on_clock_timeout, UpstreamConfig::OnClockTimeout::kHold);
}

TEST(Config, MissingFileIsAClearError) {
  try {
    Config::Load("/nonexistent/tether.yaml");
    FAIL() << "expected an error";
  } catch (const ConfigError& e) {
    EXPECT_STREQ(e.what(), "/nonexistent/tether.yaml: cannot read the file");
  }
}

}  // namespace
}  // namespace tether
