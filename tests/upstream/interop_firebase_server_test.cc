// Interop: the client's REST requests (multi-path PATCH and root PUT from the Drainer, PUT,
// DELETE, GET, percent-encoded keys)
// against npm firebase-server, an independent implementation. Skipped when it is not installed.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <deque>
#include <filesystem>
#include <functional>

#include "tests/integration/tetherd_process.h"
#include "tests/support/eventually.h"
#include "tests/upstream/fakecloud_process.h"
#include "tests/upstream/memory_outbox.h"
#include "tests/upstream/run_until.h"
#include "upstream/drainer.h"
#include "upstream/rest_get.h"

namespace tether::upstream {
namespace {

using testing::RunUntil;

TEST(Interop, FirebaseServerAcceptsClientRequests) {
  std::string bin = testing::SourceDir() + "/tests/peers/node_modules/.bin/firebase-server";
  if (!std::filesystem::exists(bin)) GTEST_SKIP() << "npm firebase-server not installed";
  int port = ::tether::testing::FreePort(false);
  pid_t pid = fork();
  if (pid == 0) {
    std::string p = std::to_string(port);
    execl(bin.c_str(), bin.c_str(), "-e", "-p", p.c_str(), "-a", "127.0.0.1",
          static_cast<char*>(nullptr));
    _exit(127);
  }
  std::string base = "http://127.0.0.1:" + std::to_string(port);
  uv_loop_t loop;
  uv_loop_init(&loop);
  {
    HttpClient http(&loop);
    auto creds = MakeNoCredentials();
    auto get = [&](const std::string& path) {
      GetResult got;
      bool done = false;
      RestGet(http, *creds, base, path, 3000, false, [&](GetResult r) { got = r, done = true; });
      RunUntil(&loop, [&] { return done; });
      return got;
    };
    // Wait until it listens (bounded).
    ASSERT_TRUE(tether::testing::Eventually([&] { return get("/").ok; }, std::chrono::seconds(10),
                                            std::chrono::milliseconds(100)))
        << "firebase-server did not start";

    testing::MemoryOutbox outbox;
    using K = OutboundOp::Kind;
    outbox.Add({0, "r", K::Set, "dev/d1/temp", "21.5", 0});
    outbox.Add({0, "r", K::Update, "dev/d2", R"({"a":1,"b":{"c":"x"}})", 0});
    outbox.Add({0, "r", K::Push, "log/-NpushKey0000000001", R"({"t":{".sv":"timestamp"}})", 777});
    outbox.Add({0, "r", K::Set, "dev/d3", "true", 0});
    outbox.Add({0, "r", K::Remove, "dev/d3", "", 0});  // overlaps: second batch
    DrainerOptions opt;
    opt.base_url = base;
    Drainer drainer(&loop, http, *creds, outbox, {{"r", "site"}}, opt);
    drainer.Start();
    ASSERT_TRUE(RunUntil(&loop, [&] { return outbox.pending() == 0; }));
    auto site = get("/site");
    ASSERT_TRUE(site.ok) << site.error;
    EXPECT_EQ(site.value, nlohmann::json::parse(
        R"({"dev":{"d1":{"temp":21.5},"d2":{"a":1,"b":{"c":"x"}}},"log":{"-NpushKey0000000001":{"t":777}}})"));
    EXPECT_EQ(drainer.stats()["r"].batches, 2u);
    // A write of the route root itself goes as a PUT that replaces it; odd keys travel in the
    // PATCH body. (firebase-server does not decode percent-encoded URL paths, unlike Firebase, so
    // encoded URLs are checked against fakecloud only: drainer_test, sync_stream_test.)
    outbox.Add({0, "r", K::Set, "", R"({"dev":{"d9":{"name":"a b?c&d"}}})", 0});
    outbox.Add({0, "r", K::Set, "odd key+%", "1", 0});
    drainer.Notify("r");
    ASSERT_TRUE(RunUntil(&loop, [&] { return outbox.pending() == 0; }));
    site = get("/site");
    ASSERT_TRUE(site.ok) << site.error;
    EXPECT_EQ(site.value, nlohmann::json::parse(R"({"dev":{"d9":{"name":"a b?c&d"}},"odd key+%":1})"));
    drainer.Stop();

    int put_status = 0;
    HttpRequest put;
    put.method = "PUT";
    put.url = base + "/site/dev/d1.json";
    put.body = R"({"temp":19})";
    http.Start(put, [&](HttpResponse r) { put_status = r.status; });
    ASSERT_TRUE(RunUntil(&loop, [&] { return put_status != 0; }));
    EXPECT_EQ(put_status, 200);
    EXPECT_EQ(get("/site/dev/d1/temp").value, 19);

    int status = 0;
    HttpRequest del;
    del.method = "DELETE";
    del.url = base + "/site/dev/d1.json";
    http.Start(del, [&](HttpResponse r) { status = r.status; });
    ASSERT_TRUE(RunUntil(&loop, [&] { return status != 0; }));
    EXPECT_EQ(status, 200);
    EXPECT_FALSE(get("/site/dev").value.contains("d1"));
  }
  uv_run(&loop, UV_RUN_NOWAIT);
  uv_loop_close(&loop);
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
}

}  // namespace
}  // namespace tether::upstream
