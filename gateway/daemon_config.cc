#include "gateway/daemon_config.h"

namespace tether {

std::map<std::string, store::QueueLimits> QueueLimitsFrom(const Config& c) {
  std::map<std::string, store::QueueLimits> out;
  for (const auto& r : c.routes) {
    store::QueueLimits l;
    l.max_entries = r.queue.max_entries;
    l.max_bytes = r.queue.max_bytes;
    l.policy = r.queue.on_full == QueuePolicy::OnFull::kReject ? store::OverflowPolicy::kReject
                                                                : store::OverflowPolicy::kDropOldest;
    l.ttl_ms = r.queue.ttl ? r.queue.ttl->count() : 0;
    out[r.name] = l;
  }
  return out;
}

store::StoreOptions StoreOptionsFrom(const Config& c) {
  store::StoreOptions o;
  o.durability = c.store.fsync ? store::Durability::kFsync : store::Durability::kOsBuffered;
  o.map_size = c.store.map_size;
  o.map_max = c.store.map_max;
  o.tree_cache_bytes = c.store.cache_bytes;
  o.tree_unit_depth = c.store.cache_unit_depth;
  o.global_max_entries = c.store.queue_max_entries;
  o.global_max_bytes = c.store.queue_max_bytes;
  o.route_limits = QueueLimitsFrom(c);
  for (const auto& r : c.routes) {
    for (const auto& root : r.sync) o.tree_pinned_roots.push_back(root);
  }
  return o;
}

std::set<std::string> SyncRoots(const Config& c) {
  std::set<std::string> roots;
  for (const auto& r : c.routes) roots.insert(r.sync.begin(), r.sync.end());
  return roots;
}

// See the header.
Config RunnableConfig(const Config& started, Config next, std::vector<std::string>* restart) {
  auto check = [&](bool differs, const char* key) {
    if (differs) restart->push_back(key);
  };
  check(next.gateway_id != started.gateway_id, "gateway.id");
  const DeviceConfig &d = next.device, &d0 = started.device;
  check(d.listen.ToString() != d0.listen.ToString(), "device.listen");
  check(d.max_datagram != d0.max_datagram, "device.max_datagram");
  check(d.heartbeat_target != d0.heartbeat_target, "device.heartbeat_target");
  check(d.session_timeout != d0.session_timeout, "device.session_timeout");
  check(d.max_payload != d0.max_payload, "device.max_payload");
  check(d.max_write_wait != d0.max_write_wait, "device.max_write_wait");
  const StoreConfig &st = next.store, &st0 = started.store;
  check(st.path != st0.path, "store.path");
  check(st.fsync != st0.fsync, "store.durability");
  check(st.map_size != st0.map_size || st.map_max != st0.map_max, "store.map_size/map_max");
  check(st.cache_bytes != st0.cache_bytes, "store.cache_bytes");
  check(st.queue_max_entries != st0.queue_max_entries || st.queue_max_bytes != st0.queue_max_bytes,
        "store.queue_max_entries/queue_max_bytes");
  check(next.admin_listen.ToString() != started.admin_listen.ToString(), "admin.listen");
  check(next.admin_token_file != started.admin_token_file, "admin.token_file");
  if (next.upstream.has_value() != started.upstream.has_value()) {
    restart->push_back(next.upstream ? "upstream (added)" : "upstream (removed)");
  } else if (next.upstream) {
    const UpstreamConfig &u = *next.upstream, &u0 = *started.upstream;
    check(u.url != u0.url, "upstream.url");
    check(u.secret_file != u0.secret_file || u.access_token_file != u0.access_token_file ||
              u.service_account_file != u0.service_account_file,
          "upstream credentials");
    check(u.auth_variable_override != u0.auth_variable_override, "upstream.auth_variable_override");
    check(u.presence_path != u0.presence_path, "upstream.presence_path");
    check(u.ca_file != u0.ca_file, "upstream.ca_file");
    check(u.observe_streams != u0.observe_streams || u.observe_poll_interval != u0.observe_poll_interval,
          "upstream.observe_streams/observe_poll_interval");
    check(u.clock_wait != u0.clock_wait || u.on_clock_timeout != u0.on_clock_timeout,
          "upstream.clock_wait/on_clock_timeout");
  }
  // DTLS: the key files are re-read (new handshakes use them); the listener keeps its settings.
  if (next.dtls.has_value() != started.dtls.has_value()) {
    restart->push_back(next.dtls ? "dtls (added)" : "dtls (removed)");
    next.dtls = started.dtls;
  } else if (next.dtls) {
    const DtlsConfig &t = *next.dtls, &t0 = *started.dtls;
    check(t.listen.ToString() != t0.listen.ToString(), "dtls.listen");
    check(t.max_live_sessions != t0.max_live_sessions || t.max_sessions != t0.max_sessions ||
              t.max_handshakes != t0.max_handshakes || t.sleep_after != t0.sleep_after ||
              t.session_timeout != t0.session_timeout || t.handshake_timeout != t0.handshake_timeout ||
              t.hellos_per_second != t0.hellos_per_second,
          "dtls limits");
    DtlsConfig running = t0;
    running.keys_file = t.keys_file;
    running.master_key_file = t.master_key_file;
    next.dtls = running;
  }
  check(SyncRoots(next) != SyncRoots(started), "routes[].sync");
  next.gateway_id = started.gateway_id;
  {
    // The per-session caps apply to the next registrations (what a session holds beyond a lowered
    // cap stays until it goes); the rest of `device` needs a restart.
    DeviceConfig running = started.device;
    running.max_observers_per_session = next.device.max_observers_per_session;
    running.max_ondisconnect_per_session = next.device.max_ondisconnect_per_session;
    running.max_ondisconnect_bytes_per_session = next.device.max_ondisconnect_bytes_per_session;
    next.device = running;
  }
  next.store = started.store;
  next.admin_listen = started.admin_listen;
  next.admin_token_file = started.admin_token_file;
  next.upstream = started.upstream;
  return next;
}

}  // namespace tether
