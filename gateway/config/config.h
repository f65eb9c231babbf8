// Config: the whole of /etc/tether/tether.yaml, validated against its schema.
//
// Load() either returns a complete, valid Config or throws ConfigError naming file:line:col and the
// key path. Every key and its default is documented in docs/configuration.md; keep the two in step.
#pragma once

#include <chrono>
#include <map>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "gateway/config/config_error.h"
#include "store/options.h"

namespace tether {

using Millis = std::chrono::milliseconds;

struct HostPort {
  std::string host;
  uint16_t port = 0;
  std::string ToString() const;
};

struct DeviceConfig {
  HostPort listen{"0.0.0.0", 5683};
  uint32_t max_datagram = 1280;
  Millis heartbeat_target{20'000};  // devices are steered to ping at least this often
  Millis session_timeout{35'000};   // silence after which a session ends (default 1.75 x target)
  uint32_t max_payload = 16 * 1024;  // larger request bodies get 4.13
  // Hostile-LAN limits (docs/operations.md, "Security model"); 0 = no limit.
  uint32_t opens_per_second = 100;           // POST /.cs per source IP (burst 2 s worth)
  uint32_t auth_failures_per_second = 20;    // answered token refusals per source IP (burst 2 s worth)
  uint32_t max_unconfirmed_sessions = 4096;  // opened, not yet used by their device: the oldest go
  // While the oldest commit in progress has waited longer than this, new writes get 5.03.
  Millis max_write_wait{100};
  // Per-session caps (a hostile session cannot grow the gateway without bound); beyond them a
  // registration gets 4.03 with a diagnostic. Far above what an SDK application registers.
  uint32_t max_observers_per_session = 256;
  uint32_t max_ondisconnect_per_session = 256;
  uint64_t max_ondisconnect_bytes_per_session = 256 * 1024;  // paths + encoded values
};

// CoAP over DTLS 1.2 with pre-shared keys. The PSK identity is the device id.
struct DtlsConfig {
  HostPort listen{"0.0.0.0", 5684};
  std::string keys_file;                  // YAML map identity: key ("0x" + hex, or the key's text)
  std::string master_key_file;            // keys not listed: derived from this (see PskStore)
  uint32_t max_live_sessions = 256;       // in memory (~35 KB each); the rest sleep serialized
  uint32_t max_sessions = 200'000;        // established sessions kept, live or asleep
  uint32_t max_handshakes = 64;           // in flight at once
  Millis sleep_after{10'000};             // idle time after which a session is serialized
  Millis session_timeout{86'400'000};     // silence after which a DTLS session is forgotten
  Millis handshake_timeout{30'000};
  uint32_t hellos_per_second = 20;        // per source IP; 0 = no limit
};

struct StoreConfig {
  std::string path;                       // default: $STATE_DIRECTORY, else /var/lib/tether
  bool fsync = true;                      // durability: "fsync" (default) or "os-buffered"
  uint64_t map_size = store::kDefaultMapSize;  // initial LMDB map size
  uint64_t map_max = store::kDefaultMapMax;    // the map grows up to this (32-bit: maps it at once)
  uint64_t cache_bytes = 10'000'000;      // LRU bound of the local data copy (sync roots pinned)
  uint32_t cache_unit_depth = 2;          // path depth of the subtrees the bound evicts
  uint64_t queue_max_entries = 10'000'000;
  uint64_t queue_max_bytes = store::kDefaultMapMax / 2;  // 4 GiB (32-bit: 512 MiB)
};

struct UpstreamConfig {
  std::string url;                        // https://<db>.firebaseio.com or http://127.0.0.1:<port>
  std::string secret_file;                // database secret (auth=)
  std::string access_token_file;          // OAuth2 token, re-read when it changes
  std::string service_account_file;       // service-account JSON key
  // JSON object template ({device}, {app}, {gateway}) evaluated by the cloud's rules as `auth`
  // for each write; empty: writes use the gateway's own credential. See AuthOverride.
  std::string auth_variable_override;
  std::string presence_path;              // default "/tether-gateways/<gateway.id>" (see PresenceKey)
  std::string ca_file;                    // trusted CAs (PEM); empty: the system's
  uint32_t observe_streams = 32;          // SSE streams for observed paths outside sync roots
  Millis observe_poll_interval{30'000};   // beyond observe_streams: how often such paths are read
  // A write with a server timestamp on an event-time route waits at most this long, while the
  // cloud answers, for a clock estimate measured on the current link; then it is uploaded with
  // the best estimate there is (kUpload) or keeps waiting, shown as held (kHold).
  Millis clock_wait{10'000};
  enum class OnClockTimeout { kUpload, kHold } on_clock_timeout = OnClockTimeout::kUpload;
};

// A gateway id made a valid database key: characters a key may not hold become '_' (the id
// defaults to the host name, which may hold dots). Names the gateway's own nodes in the cloud.
std::string PresenceKey(const std::string& gateway_id);

struct AppAuth {
  enum class Mode { kOpen, kTokens, kHmac } mode = Mode::kOpen;
  struct Token { std::string device; std::string token; };
  std::vector<Token> tokens;              // kTokens: token -> device id
  std::string secret_file;                // kHmac: token = "<device>:" + hex(HMAC-SHA256(secret, device))
};

struct AppConfig {
  std::string id;                         // first label of Uri-Host ("myapp" in myapp.wilddogio.com)
  bool is_default = false;                // serves requests without Uri-Host
  AppAuth auth;
};

struct QueuePolicy {
  uint64_t max_entries = 1'000'000;
  uint64_t max_bytes = 256ull << 20;
  enum class OnFull { kReject, kDropOldest } on_full = OnFull::kReject;
  std::optional<Millis> ttl;              // queued entries older than this are dropped (counted)
};

struct RouteConfig {
  std::string name;
  std::string app;                        // app id this route belongs to
  std::string match;                      // device path pattern, e.g. "devices/{device}/**"
  std::string cloud;                      // cloud path pattern, e.g. "fleet/site1/{device}/**"
  enum class Access { kNone, kOwn, kAll };
  Access read = Access::kAll;             // kOwn: only paths whose {device} is the caller's id
  Access write = Access::kAll;
  bool on_disconnect = true;
  enum class Timestamps { kEventTime, kArrival } timestamps = Timestamps::kEventTime;
  int priority = 0;                       // higher drains first when several routes have backlog
  std::vector<std::string> sync;          // cloud paths kept synced into the local copy
  QueuePolicy queue;
};

// A file the configuration names (secrets and keys) and where it names it.
struct FileRef {
  enum class Kind { kHmacSecret, kDatabaseSecret, kAccessToken, kServiceAccount } kind;
  std::string path;
  int line = 0, column = 0;
  std::string key_path;
};

struct Config {
  std::string source_file;
  std::string gateway_id;                 // default: the host name
  std::map<std::string, std::string> variables;  // fill {name} in route cloud patterns (e.g. {site})
  DeviceConfig device;
  std::optional<DtlsConfig> dtls;         // absent: no DTLS listener
  StoreConfig store;
  std::optional<UpstreamConfig> upstream; // absent: local-only mode
  HostPort admin_listen{"127.0.0.1", 8790};
  std::string admin_token_file;           // default: $RUNTIME_DIRECTORY/admin.token, else /run/tether/admin.token
  std::string log_level = "info";
  std::vector<AppConfig> apps;            // never empty after Load (a default open app)
  std::vector<RouteConfig> routes;        // never empty after Load (a catch-all route)
  // No `apps` in the file: any app id is accepted as an open app of its own (each Wilddog app id
  // was its own database). Its data lives under "<id>/" through the route kOpenAppsRoute (app
  // kAnyApp); the app "default" (requests without Uri-Host) keeps its own routes.
  bool open_apps = false;
  static constexpr const char* kAnyApp = "*";
  static constexpr const char* kOpenAppsRoute = "open-apps";
  std::vector<FileRef> files;             // every secret/key file named above

  static Config Load(const std::string& file);
  static Config Parse(const std::string& yaml_text, const std::string& file_name);
  // Reads every file in `files`: readable, and of the right shape (an HMAC secret of at least 16
  // bytes, a non-empty token, a service-account key with client_email and a usable private_key),
  // and the DTLS key files (PskStore).
  // Throws ConfigError at the key naming the first bad one; never puts file content in it.
  void CheckFiles() const;
};

}  // namespace tether
