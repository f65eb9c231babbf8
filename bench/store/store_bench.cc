// store_bench: durable acknowledged writes/s through Store (group commit) with 1, 16 and 256
// outstanding submissions, next to raw LMDB one-commit-per-write and raw LMDB batched commits
// measured in the same run, plus open-to-serving time with 1M queued entries + 100k sessions.
//
//   store_bench [--seconds N] [--entries N] [--sessions N] [--dir /tmp/...]
// Every figure uses fsync'ed commits (Durability::kFsync / plain mdb_txn_commit) unless noted.
#include <lmdb.h>
#include <stdlib.h>
#include <uv.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>

#include "store/boot_clock.h"
#include "store/store.h"

using namespace tether::store;
using Clock = std::chrono::steady_clock;

namespace {

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

QueueEntry MakeEntry(uint64_t n) {
  QueueEntry e;
  e.route = "bench";
  e.device_id = "device-" + std::to_string(n % 1000);
  e.kind = OpKind::kSet;
  e.path = "/devices/device-" + std::to_string(n % 1000) + "/temp";
  e.payload = "{\"t\":21.5,\"n\":" + std::to_string(n) + "}";
  e.wall_ms = WallClockMs();
  e.boottime_ms = BootTimeMs();
  e.boot_id = BootId();
  return e;
}

struct LoadRun {
  Store* store = nullptr;
  uint64_t submitted = 0, acked = 0, failed = 0;
  Clock::time_point deadline;
  bool with_tree = false;
};

void SubmitOne(LoadRun* run) {
  WriteBatch b;
  QueueEntry e = MakeEntry(run->submitted++);
  if (run->with_tree) b.TreeSet(e.path, nlohmann::json::parse(e.payload));
  b.Append(std::move(e));
  run->store->Submit(std::move(b), [run](const BatchResult& r) {
    if (r.status.ok()) run->acked++; else run->failed++;
    if (Clock::now() < run->deadline) SubmitOne(run);
  });
}

// Durable acknowledged writes/s with `concurrency` submissions outstanding at all times.
double StoreWritesPerSecond(const std::string& dir, int concurrency, double seconds, bool with_tree,
                            uint64_t* batches_per_commit) {
  std::filesystem::remove_all(dir);
  uv_loop_t loop;
  uv_loop_init(&loop);
  double rate = 0;
  {
    auto store = Store::Open(dir, StoreOptions{}, &loop);
    LoadRun run;
    run.store = store.get();
    run.with_tree = with_tree;
    auto start = Clock::now();
    run.deadline = start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
    for (int i = 0; i < concurrency; ++i) SubmitOne(&run);
    uv_run(&loop, UV_RUN_DEFAULT);
    rate = run.acked / Seconds(start);
    if (run.failed) std::fprintf(stderr, "warning: %llu failed writes\n", (unsigned long long)run.failed);
    store->Close();
    *batches_per_commit = store->GroupsCommitted();
    if (*batches_per_commit) *batches_per_commit = run.acked / *batches_per_commit;  // average batches per commit
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  return rate;
}

// Raw LMDB: `per_txn` puts per fsync'ed commit, same key layout and value size as the store.
double RawLmdbWritesPerSecond(const std::string& dir, int per_txn, double seconds) {
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  MDB_env* env;
  mdb_env_create(&env);
  mdb_env_set_mapsize(env, 1ull << 30);
  mdb_env_set_maxdbs(env, 4);
  if (mdb_env_open(env, dir.c_str(), MDB_NOTLS, 0640)) return 0;
  MDB_dbi dbi;
  MDB_txn* txn;
  mdb_txn_begin(env, nullptr, 0, &txn);
  mdb_dbi_open(txn, "queue", MDB_CREATE, &dbi);
  mdb_txn_commit(txn);
  uint64_t n = 0;
  auto start = Clock::now();
  while (Seconds(start) < seconds) {
    mdb_txn_begin(env, nullptr, 0, &txn);
    for (int i = 0; i < per_txn; ++i, ++n) {
      char key[12] = {0, 0, 0, 1};
      for (int b = 0; b < 8; ++b) key[4 + b] = static_cast<char>(n >> (56 - 8 * b));
      QueueEntry e = MakeEntry(n);
      std::string v = e.route + e.device_id + e.path + e.payload + e.boot_id + std::string(40, 'x');
      MDB_val k{sizeof key, key}, mv{v.size(), v.data()};
      mdb_put(txn, dbi, &k, &mv, MDB_APPEND);
    }
    mdb_txn_commit(txn);
  }
  double rate = n / Seconds(start);
  mdb_env_close(env);
  return rate;
}

void Recovery(const std::string& dir, uint64_t entries, uint64_t sessions) {
  std::filesystem::remove_all(dir);
  auto t0 = Clock::now();
  {
    StoreOptions build;
    build.durability = Durability::kOsBuffered;  // only to build the fixture quickly
    build.map_size = 4ull << 30;
    auto s = Store::Open(dir, build, nullptr);
    for (uint64_t n = 0; n < entries;) {
      WriteBatch b;
      for (int i = 0; i < 10000 && n < entries; ++i, ++n) {
        QueueEntry e = MakeEntry(n);
        e.route = "route-" + std::to_string(n % 8);
        b.Append(std::move(e));
      }
      if (!s->CommitBlocking(std::move(b)).status.ok()) std::abort();
    }
    for (uint64_t n = 0; n < sessions;) {
      WriteBatch b;
      for (int i = 0; i < 10000 && n < sessions; ++i, ++n) {
        SessionRecord r;
        r.session_id = "session-" + std::to_string(n);
        r.app_id = "app";
        r.device_id = "device-" + std::to_string(n);
        char tok[40];
        std::snprintf(tok, sizeof tok, "%08llx", (unsigned long long)n);
        r.short_token = tok;
        std::snprintf(tok, sizeof tok, "%032llx", (unsigned long long)n * 7919);
        r.long_token = tok;
        r.bound_address = "10.1.2.3:5683";
        r.heartbeat_timeout_ms = 30000;
        b.PutSession(std::move(r));
      }
      if (!s->CommitBlocking(std::move(b)).status.ok()) std::abort();
    }
  }
  std::printf("fixture: %llu entries + %llu sessions built in %.1f s\n", (unsigned long long)entries,
              (unsigned long long)sessions, Seconds(t0));
  auto start = Clock::now();
  auto s = Store::Open(dir, StoreOptions{}, nullptr);
  auto totals = s->queue().Totals();
  auto head = s->queue().Peek("route-0", 1);
  auto by_token = s->sessions().FindByShortToken("00000001");
  double open_s = Seconds(start);
  auto list_start = Clock::now();
  auto all = s->sessions().ListAll();
  double list_s = Seconds(list_start);
  std::printf("open-to-serving: %.1f ms (open + totals + first peek + token lookup; %llu entries)\n",
              open_s * 1000, (unsigned long long)totals.entries);
  std::printf("list all %zu sessions: %.1f ms; open + list = %.1f ms\n", all.size(), list_s * 1000,
              (open_s + list_s) * 1000);
  if (head.empty() || !by_token) std::printf("ERROR: fixture not readable\n");
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 3;
  uint64_t entries = 1'000'000, sessions = 100'000;
  std::string dir;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--seconds")) seconds = std::atof(argv[i + 1]);
    if (!std::strcmp(argv[i], "--entries")) entries = std::strtoull(argv[i + 1], nullptr, 10);
    if (!std::strcmp(argv[i], "--sessions")) sessions = std::strtoull(argv[i + 1], nullptr, 10);
    if (!std::strcmp(argv[i], "--dir")) dir = argv[i + 1];
  }
  bool own_dir = dir.empty();
  if (own_dir) {
    char tmpl[] = "/tmp/tether-store-bench-XXXXXX";
    dir = mkdtemp(tmpl);
  }
  std::printf("durable (fsync) acknowledged writes/s, %.0f s each\n", seconds);
  std::printf("  raw LMDB, 1 put per commit : %10.0f\n", RawLmdbWritesPerSecond(dir + "/raw1", 1, seconds));
  std::printf("  raw LMDB, 256 puts/commit  : %10.0f\n", RawLmdbWritesPerSecond(dir + "/raw256", 256, seconds));
  for (int c : {1, 16, 256}) {
    uint64_t per_group = 0;
    double r = StoreWritesPerSecond(dir + "/store", c, seconds, false, &per_group);
    std::printf("  Store, %3d outstanding      : %10.0f   (queue append per batch; %llu batches/commit)\n", c, r,
                (unsigned long long)per_group);
  }
  for (int c : {1, 256}) {
    uint64_t per_group = 0;
    double r = StoreWritesPerSecond(dir + "/store", c, seconds, true, &per_group);
    std::printf("  Store, %3d outstanding      : %10.0f   (tree set + queue append per batch; %llu batches/commit)\n",
                c, r, (unsigned long long)per_group);
  }
  Recovery(dir + "/recovery", entries, sessions);
  if (own_dir) std::filesystem::remove_all(dir);
  return 0;
}
