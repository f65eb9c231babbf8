// Restart time of a real tetherd whose store holds ENTRIES queued writes and SESSIONS device sessions.
//
// Builds the store with the store library (the fixture), then measures, in the same run, the time
// from exec to the first answer to a device request:
//   baseline: tetherd on an empty store (process start, config, sockets: the fixed cost);
//   tetherd:  the same on the fixture, answering 2.05 to a device using one of the restored
//             sessions (store open, sessions restored, CoAP and admin listening);
// and, for scale, raw LMDB's mdb_env_open + mdb_stat of every table of the fixture.
// Prints one markdown row: figure | baseline | Tether | ratio.
//   restart_bench [entries=1000000] [sessions=100000]
#include <lmdb.h>

#include <signal.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include "store/boot_clock.h"
#include "store/store.h"
#include "tests/integration/sdk_client.h"
#include "tests/integration/tetherd_process.h"

using namespace tether;
using namespace tether::testing;
using Clock = std::chrono::steady_clock;

namespace {

constexpr int kRoutes = 8;

double Ms(Clock::time_point since) { return std::chrono::duration<double, std::milli>(Clock::now() - since).count(); }

// Session n is bound to its own loopback address, session 1 to `device`'s: a session token is
// acted on only from the address that opened the session (the bench speaks as session 1).
void BuildFixture(const std::string& dir, uint64_t entries, uint64_t sessions, const std::string& device) {
  store::StoreOptions build;
  build.durability = store::Durability::kOsBuffered;  // only to build the fixture quickly
  build.map_size = 4ull << 30;
  auto s = store::Store::Open(dir, build, nullptr);
  for (uint64_t n = 0; n < entries;) {
    store::WriteBatch b;
    for (int i = 0; i < 10000 && n < entries; ++i, ++n) {
      store::QueueEntry e;
      const int route = static_cast<int>(n % kRoutes);
      e.route = "r" + std::to_string(route);
      e.device_id = "device-" + std::to_string(n % 1000);
      e.kind = store::OpKind::kSet;
      e.path = "/r" + std::to_string(route) + "/" + e.device_id + "/temp";
      e.payload = "{\"t\":21.5,\"n\":" + std::to_string(n) + "}";
      e.wall_ms = store::WallClockMs();
      e.boottime_ms = store::BootTimeMs();
      e.boot_id = store::BootId();
      b.Append(std::move(e));
    }
    if (!s->CommitBlocking(std::move(b)).status.ok()) std::abort();
  }
  for (uint64_t n = 0; n < sessions;) {
    store::WriteBatch b;
    for (int i = 0; i < 10000 && n < sessions; ++i, ++n) {
      store::SessionRecord r;
      r.session_id = "session-" + std::to_string(n);
      r.app_id = "myapp";
      r.device_id = "device-" + std::to_string(n);
      char tok[40];
      std::snprintf(tok, sizeof tok, "%08llx", static_cast<unsigned long long>(n));
      r.short_token = tok;
      std::snprintf(tok, sizeof tok, "%032llx", static_cast<unsigned long long>(n) * 7919);
      r.long_token = tok;
      r.bound_address = n == 1 ? device
                               : "127.1." + std::to_string(n / 50000) + "." + std::to_string(n % 50000 / 250 + 1) +
                                     ":" + std::to_string(10000 + n % 250);
      r.heartbeat_timeout_ms = 600000;
      r.created_ms = store::WallClockMs();
      b.PutSession(std::move(r));
    }
    if (!s->CommitBlocking(std::move(b)).status.ok()) std::abort();
  }
}

double RawLmdbOpenMs(const std::string& dir) {
  const auto t0 = Clock::now();
  MDB_env* env = nullptr;
  mdb_env_create(&env);
  mdb_env_set_maxdbs(env, 64);
  mdb_env_set_mapsize(env, 4ull << 30);
  if (mdb_env_open(env, dir.c_str(), MDB_RDONLY | MDB_NOTLS, 0640) != 0) return -1;
  MDB_txn* txn = nullptr;
  mdb_txn_begin(env, nullptr, MDB_RDONLY, &txn);
  MDB_dbi main_db;
  mdb_dbi_open(txn, nullptr, 0, &main_db);
  MDB_cursor* cur = nullptr;
  mdb_cursor_open(txn, main_db, &cur);
  MDB_val k, v;
  size_t tables = 0;
  for (int op = MDB_FIRST; mdb_cursor_get(cur, &k, &v, static_cast<MDB_cursor_op>(op)) == 0; op = MDB_NEXT) {
    std::string name(static_cast<const char*>(k.mv_data), k.mv_size);
    MDB_dbi dbi;
    MDB_stat st;
    if (mdb_dbi_open(txn, name.c_str(), 0, &dbi) == 0 && mdb_stat(txn, dbi, &st) == 0) ++tables;
  }
  mdb_cursor_close(cur);
  mdb_txn_abort(txn);
  mdb_env_close(env);
  return tables ? Ms(t0) : -1;
}

}  // namespace

int main(int argc, char** argv) {
  const uint64_t entries = argc > 1 ? std::stoull(argv[1]) : 1'000'000;
  const uint64_t sessions = argc > 2 ? std::stoull(argv[2]) : 100'000;
  TetherdProcess gw;
  const uint16_t port = static_cast<uint16_t>(FreePort());
  const auto b0 = Clock::now();
  SdkClient dev(port);  // speaks as restored session 1, from the address it is bound to
  dev.set_short_token("00000001");
  dev.set_timeout(std::chrono::milliseconds(20));
  BuildFixture(gw.store_path(), entries, sessions, "127.0.0.1:" + std::to_string(dev.local_port()));
  std::fprintf(stderr, "fixture: %llu entries + %llu sessions in %.1f s\n", static_cast<unsigned long long>(entries),
               static_cast<unsigned long long>(sessions), Ms(b0) / 1000);
  const double raw_ms = RawLmdbOpenMs(gw.store_path());

  std::string routes;
  for (int r = 0; r < kRoutes; ++r) routes += "  - { name: r" + std::to_string(r) + ", match: \"r" + std::to_string(r) + "/**\" }\n";
  // Start-to-first-answer of a tetherd on `store`; `want` is the answer expected ("" = any code).
  auto start_to_answer = [&](TetherdProcess& g, const std::string& want) {
    g.WriteConfig("device:\n  listen: \"127.0.0.1:" + std::to_string(port) + "\"\n  heartbeat_target: 5m\n"
                  "  session_timeout: 10m\nadmin:\n  listen: \"127.0.0.1:" + std::to_string(FreePort(false)) +
                  "\"\nstore:\n  path: ${STORE}\n  map_size: 4GiB\nlog:\n  level: warn\n"
                  "apps:\n  - id: myapp\nroutes:\n" + routes);
    const auto t0 = Clock::now();
    g.Start();
    while (Ms(t0) < 60000) {
      const CoapReply r = dev.Request(1, "r0/device-1", "");
      const bool coap = r.code != 0xff;  // 0xff: no answer yet (timed out or port unreachable)
      if (coap && (want.empty() || r.CodeString() == want)) return Ms(t0);
    }
    return -1.0;
  };
  double empty_ms;
  {
    TetherdProcess empty;
    empty_ms = start_to_answer(empty, "");
    empty.Signal(SIGTERM);
    empty.WaitExit(std::chrono::seconds(10));
  }
  const double full_ms = start_to_answer(gw, "2.05");
  std::printf("| tetherd restart, %llu queued writes + %llu sessions: exec to first answer on a restored session "
              "(raw LMDB open + stat of the same store: %.1f ms) | %.1f ms (empty store) | %.1f ms | %.2f |\n",
              static_cast<unsigned long long>(entries), static_cast<unsigned long long>(sessions), raw_ms, empty_ms,
              full_ms, empty_ms > 0 && full_ms > 0 ? full_ms / empty_ms : 0);
  return full_ms > 0 ? 0 : 1;
}
