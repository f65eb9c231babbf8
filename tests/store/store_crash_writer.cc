// store_crash_writer <store-dir> <report-fd>: writes forever, reporting each acknowledgement.
//
// Keeps 32 single-write batches outstanding on a libuv loop. Write n carries payload "n" on route
// "crash", tree leaf /w/<n> = n and /crashmeta/next = n + 1, in one batch. When its callback
// reports ok (durable), "W <seq> <n>\n" goes to <report-fd>. Every 200th acknowledged write also
// simulates an upload confirmation: "S <seq>\n" is reported, then AckThrough(seq) of a write 100
// back is submitted and "A <seq>\n" reported once durable. Killed by the parent with SIGKILL.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>

#include "store/boot_clock.h"
#include "store/store.h"

using namespace tether::store;

namespace {

std::unique_ptr<Store> g_store;
uint64_t g_next = 0;
uint64_t g_acked = 0;
std::map<uint64_t, uint64_t> g_seq_of;  // n -> seq of acknowledged writes (recent ones)
int g_fd = -1;

void Report(const std::string& line) {
  if (write(g_fd, line.data(), line.size()) != static_cast<ssize_t>(line.size())) std::exit(3);
}

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
  b.TreeSet("/crashmeta/next", n + 1);
  b.Append(std::move(e));
  g_store->Submit(std::move(b), [n](const BatchResult& r) {
    if (!r.status.ok()) {
      std::fprintf(stderr, "write %llu failed: %s\n", static_cast<unsigned long long>(n), r.status.ToString().c_str());
      std::exit(2);
    }
    Report("W " + std::to_string(r.seqs[0]) + " " + std::to_string(n) + "\n");
    g_seq_of[n] = r.seqs[0];
    if (++g_acked % 200 == 0 && n >= 100 && g_seq_of.count(n - 100)) {
      uint64_t through = g_seq_of[n - 100];
      Report("S " + std::to_string(through) + "\n");
      WriteBatch ack;
      ack.AckThrough("crash", through);
      g_store->Submit(std::move(ack), [through](const BatchResult& ar) {
        if (!ar.status.ok()) std::exit(4);
        Report("A " + std::to_string(through) + "\n");
      });
      g_seq_of.erase(g_seq_of.begin(), g_seq_of.find(n - 100));
    }
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
  nlohmann::json next = g_store->tree().Get("/crashmeta/next");
  g_next = next.is_number() ? next.get<uint64_t>() : 0;
  for (int i = 0; i < 32; ++i) SubmitNext();
  uv_run(loop, UV_RUN_DEFAULT);
  return 0;
}
