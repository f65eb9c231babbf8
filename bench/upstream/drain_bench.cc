// drain_bench: uploads N queued ops (default 1,000,000) from an in-memory outbox to fakecloud
// through the Drainer and reports ops/s, batches and wall time.
// Usage: upstream_drain_bench [ops] [max_ops_per_batch] [keys] [progress_file]
// progress_file: "seconds uploaded_ops" every 250 ms, for plots.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "tests/upstream/fakecloud_process.h"
#include "tests/upstream/memory_outbox.h"
#include "upstream/drainer.h"

using namespace tether::upstream;

int main(int argc, char** argv) {
  long n = argc > 1 ? std::atol(argv[1]) : 1000000;
  long batch = argc > 2 ? std::atol(argv[2]) : 5000;
  long keys = argc > 3 ? std::atol(argv[3]) : 100000;
  FILE* progress = argc > 4 ? std::fopen(argv[4], "w") : nullptr;
  testing::FakeCloud cloud;
  testing::MemoryOutbox outbox;
  for (long i = 0; i < n; ++i)
    outbox.add({0, "bench", OutboundOp::Kind::Set, "dev/d" + std::to_string(i % keys) + "/v",
                std::to_string(i), 0});
  uv_loop_t loop;
  uv_loop_init(&loop);
  auto t0 = std::chrono::steady_clock::now();
  {
    HttpClient http(&loop);
    auto creds = MakeNoCredentials();
    DrainerOptions opt;
    opt.base_url = cloud.url();
    opt.limits.max_ops = static_cast<size_t>(batch);
    opt.limits.max_bytes = 64 << 20;
    opt.request_timeout_ms = 120000;
    Drainer drainer(&loop, http, *creds, outbox, {{"bench", "bench"}}, opt);
    drainer.start();
    auto limit = t0 + std::chrono::minutes(5);
    auto next_sample = t0;
    while (outbox.pending() > 0 && std::chrono::steady_clock::now() < limit) {
      uv_run(&loop, UV_RUN_ONCE);
      auto now = std::chrono::steady_clock::now();
      if (progress && now >= next_sample) {
        std::fprintf(progress, "%.3f %lu\n", std::chrono::duration<double>(now - t0).count(),
                     static_cast<unsigned long>(drainer.stats()["bench"].uploaded_ops));
        next_sample = now + std::chrono::milliseconds(250);
      }
    }
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (progress) {
      std::fprintf(progress, "%.3f %lu\n", s, static_cast<unsigned long>(drainer.stats()["bench"].uploaded_ops));
      std::fclose(progress);
    }
    auto st = drainer.stats()["bench"];
    std::printf("ops=%lu batches=%lu errors=%lu pending=%zu seconds=%.2f ops_per_s=%.0f\n",
                static_cast<unsigned long>(st.uploaded_ops), static_cast<unsigned long>(st.batches),
                static_cast<unsigned long>(st.retryable_errors + st.network_errors),
                outbox.pending(), s, st.uploaded_ops / s);
    drainer.stop();
  }
  uv_run(&loop, UV_RUN_NOWAIT);
  uv_loop_close(&loop);
  auto last = cloud.get("/bench/dev/d" + std::to_string((n - 1) % keys) + "/v");
  std::printf("last value check: %s (want %ld)\n", last.dump().c_str(), n - 1);
  return outbox.pending() == 0 && last == n - 1 ? 0 : 1;
}
