// store_crash_writer <store-dir> <report-fd>: appends forever, reporting each acknowledgement.
//
// Keeps 32 single-write batches outstanding on a libuv loop. Write n carries payload "n" on route
// "crash" plus tree leaf /w/<n> = n, in one batch. When a batch's callback reports ok (durable),
// "seq n\n" is written to <report-fd>. Starts at n = current queue depth of "crash", so the ids in
// the store stay 0,1,2,... across restarts. Killed by the parent with SIGKILL.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "store/boot_clock.h"
#include "store/store.h"

using namespace tether::store;

namespace {

std::unique_ptr<Store> g_store;
uint64_t g_next = 0;
int g_fd = -1;

void SubmitNext() {
  uint64_t n = g_next++;
  WriteBatch b;
  QueueEntry e;
  e.route = "crash";
  e.device_id = "dev";
  e.path = "/w/" + std::to_string(n);
  e.payload = std::to_string(n);
  e.wall_ms = WallClockMs();
  e.boottime_ms = BootTimeMs();
  e.boot_id = BootId();
  b.TreeSet(e.path, n);
  b.Append(std::move(e));
  g_store->Submit(std::move(b), [n](const BatchResult& r) {
    if (!r.status.ok()) {
      std::fprintf(stderr, "write %llu failed: %s\n", static_cast<unsigned long long>(n), r.status.ToString().c_str());
      std::exit(2);
    }
    std::string line = std::to_string(r.seqs[0]) + " " + std::to_string(n) + "\n";
    if (write(g_fd, line.data(), line.size()) != static_cast<ssize_t>(line.size())) std::exit(3);
    SubmitNext();
  });
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s <store-dir> <report-fd>\n", argv[0]);
    return 1;
  }
  g_fd = std::atoi(argv[2]);
  uv_loop_t* loop = uv_default_loop();
  StoreOptions options;
  options.tree_cache_bytes = 0;  // unbounded: the parent checks every acknowledged leaf
  g_store = Store::Open(argv[1], options, loop);
  auto stats = g_store->queue().Stats("crash");
  g_next = stats ? stats->depth : 0;
  for (int i = 0; i < 32; ++i) SubmitNext();
  uv_run(loop, UV_RUN_DEFAULT);
  return 0;
}
