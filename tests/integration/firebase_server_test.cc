// tetherd against npm firebase-server (tests/peers, `make peers`), an independent Firebase
// implementation, with the documented configuration: the default presence path, event-time
// server timestamps, a sync root. A WAN outage (a TCP proxy in front of the server, which keeps
// its data in memory only and so cannot itself go down), a kill -9 of tetherd in the middle of
// it, then the drain: every acknowledged write is in the server exactly once, each timestamp
// within 1 s of the device's write.
//
// firebase-server's documented limits (firebase-rest.md) are met the way any server could
// present them, never by recognizing it: it echoes {".sv":"timestamp"} unresolved (the clock
// reads the value back), and it answers a stream request with plain JSON (the sync root is read
// periodically).
#include <curl/curl.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <thread>

#include "tests/integration/sdk_client.h"
#include "tests/integration/tetherd_process.h"
#include "tests/support/eventually.h"

namespace tether::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

std::string SourceDir() {
  const char* env = std::getenv("TETHER_SOURCE_DIR");
  return env ? env : TETHER_SOURCE_DIR_FALLBACK;
}

int64_t WallMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// One blocking HTTP request; the body parsed as JSON (discarded on failure).
json Http(const std::string& method, const std::string& url, const std::string& body = "") {
  CURL* c = curl_easy_init();
  std::string out;
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method.c_str());
  if (!body.empty()) curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.c_str());
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 5000L);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, +[](char* p, size_t s, size_t n, void* u) {
    static_cast<std::string*>(u)->append(p, s * n);
    return s * n;
  });
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &out);
  CURLcode rc = curl_easy_perform(c);
  curl_easy_cleanup(c);
  return rc == CURLE_OK ? json::parse(out, nullptr, false) : json(json::value_t::discarded);
}

// A child process killed with SIGKILL on destruction (firebase-server ignores SIGTERM).
class Child {
 public:
  // argv[0] is the program; the first stdout line is returned by FirstLine() when asked for.
  explicit Child(std::vector<std::string> argv, bool read_first_line = false) {
    int fds[2];
    if (read_first_line && pipe(fds) != 0) throw std::runtime_error("pipe");
    pid_ = fork();
    if (pid_ == 0) {
      if (read_first_line) {
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
      }
      std::vector<char*> args;
      for (auto& a : argv) args.push_back(a.data());
      args.push_back(nullptr);
      execv(args[0], args.data());
      _exit(127);
    }
    if (read_first_line) {
      close(fds[1]);
      FILE* f = fdopen(fds[0], "r");
      char buf[64] = {0};
      if (!fgets(buf, sizeof buf, f)) throw std::runtime_error(argv[0] + " did not start");
      first_line_ = buf;
      fclose(f);
    }
  }
  ~Child() {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  void Signal(int sig) const { kill(pid_, sig); }
  const std::string& FirstLine() const { return first_line_; }

 private:
  pid_t pid_ = -1;
  std::string first_line_;
};

struct Write {
  std::string device;
  int k;
  int64_t sent_ms, acked_ms;
};

TEST(FirebaseServer, DefaultPresenceOutageKill9DrainWithEventTimes) {
  const std::string bin = SourceDir() + "/tests/peers/node_modules/.bin/firebase-server";
  ASSERT_TRUE(std::filesystem::exists(bin)) << "npm firebase-server is not installed: run `make peers`";
  const int server_port = FreePort(false);
  // -n: the address the JS SDK is told to use (firebase-rest.md).
  Child server_process({"/usr/bin/env", "node", bin, "-e", "-p", std::to_string(server_port), "-a", "127.0.0.1", "-n",
                        "127.0.0.1:" + std::to_string(server_port)});
  const std::string server = "http://127.0.0.1:" + std::to_string(server_port);
  ASSERT_TRUE(Eventually([&] { return !Http("GET", server + "/.json").is_discarded(); }, 10s, 100ms))
      << "firebase-server did not start";
  Child proxy({"/usr/bin/env", "python3", SourceDir() + "/tests/integration/tcp_proxy.py", "--port", "0", "--target",
               std::to_string(server_port)},
              true);
  const std::string proxy_url = "http://127.0.0.1:" + std::to_string(std::stoi(proxy.FirstLine()));

  const uint16_t port = static_cast<uint16_t>(FreePort());
  const int admin = FreePort(false);
  TetherdProcess gw;
  // The documented configuration: no presence_path, no credential key, event-time routes.
  gw.WriteConfig("gateway:\n  id: gw-fbs\ndevice:\n  listen: \"127.0.0.1:" + std::to_string(port) +
                 "\"\nadmin:\n  listen: \"127.0.0.1:" + std::to_string(admin) +
                 "\"\nstore:\n  path: ${STORE}\nupstream:\n  url: " + proxy_url +
                 "\n  observe_poll_interval: 2s\napps:\n  - id: myapp\nroutes:\n"
                 "  - { name: devs, match: \"devices/{device}/**\", cloud: \"fleet/{device}/**\" }\n"
                 "  - { name: cfg, match: \"config/**\", write: none, sync: [ \"config\" ] }\n");
  gw.Start();
  ASSERT_TRUE(gw.WaitForLog("listening for CoAP", 10s)) << gw.Log();
  auto ctl = [&](const std::string& args) {
    return json::parse(Shell(TetherdProcess::BinaryPath("tetherctl") + " --admin 127.0.0.1:" + std::to_string(admin) +
                             " --json " + args).out, nullptr, false);
  };

  // The presence node, at the default path, in a database that takes only valid paths.
  json presence;
  ASSERT_TRUE(Eventually([&] {
    presence = Http("GET", server + "/tether-gateways/gw-fbs.json");
    return presence.is_object() && presence["status"] == "online" && presence["last_seen"].is_number_integer();
  }, 10s, 100ms)) << presence.dump() << "\n" << gw.Log();
  // An app using the official JS SDK can watch it (it throws on the old /.gateways/<id>).
  ShellResult app = Shell("NODE_PATH=" + SourceDir() + "/tests/peers/node_modules node " + SourceDir() +
                          "/tests/integration/sdk_read.js " + server + " tether-gateways/gw-fbs");
  EXPECT_EQ(app.status, 0) << app.out;
  std::string last = app.out.substr(app.out.rfind('\n', app.out.size() - 2) + 1);  // after any SDK warning
  json seen = json::parse(last, nullptr, false);
  EXPECT_TRUE(seen.is_object() && seen["status"] == "online") << app.out;
  ShellResult old_path = Shell("NODE_PATH=" + SourceDir() + "/tests/peers/node_modules node " + SourceDir() +
                               "/tests/integration/sdk_read.js " + server + " .gateways/gw-fbs");
  EXPECT_EQ(old_path.status, 2) << old_path.out;
  EXPECT_NE(old_path.out.find("invalid path"), std::string::npos) << old_path.out;
  json status;
  EXPECT_TRUE(Eventually([&] {
    status = ctl("status");
    return status.is_object() && status["upstream"]["clock"]["current"] == true;
  }, 5s, 100ms));
  EXPECT_EQ(status["upstream"]["clock"]["source"], "read-back") << status.dump();

  // The sync root: this server does not stream, so it is read periodically.
  ASSERT_FALSE(Http("PUT", server + "/config.json", R"({"rate":5})").is_discarded());
  std::vector<std::unique_ptr<SdkClient>> devs;
  for (int d = 0; d < 4; ++d) {
    devs.push_back(std::make_unique<SdkClient>(port));
    ASSERT_TRUE(devs.back()->Open("d" + std::to_string(d)));
  }
  EXPECT_TRUE(Eventually([&] { return devs[0]->Get("config/rate").payload == CborUint(5); }, 6s, 100ms)) << gw.Log();

  std::map<std::string, Write> writes;  // push key -> the write
  int k = 0;
  auto write_round = [&](int per_device) {
    for (int i = 0; i < per_device; ++i) {
      for (int d = 0; d < 4; ++d) {
        std::string dev = "d" + std::to_string(d);
        auto payload = CborMap({{"k", CborUint(static_cast<uint64_t>(k))}, {"at", CborMap({{".sv", CborText("timestamp")}})}});
        int64_t sent = WallMs();
        CoapReply r = devs[d]->Post("devices/" + dev + "/log", payload);
        ASSERT_EQ(r.CodeString(), "2.05") << dev << " write " << k;
        writes[r.payload] = {dev, k++, sent, WallMs()};
      }
      std::this_thread::sleep_for(100ms);
    }
  };
  write_round(5);  // online
  proxy.Signal(SIGUSR1);  // the WAN goes down
  auto down_at = std::chrono::steady_clock::now();
  write_round(5);  // offline
  gw.Kill9();
  gw.Start();
  ASSERT_TRUE(gw.WaitForLog("listening for CoAP", 10s)) << gw.Log();
  write_round(5);  // offline, in the restarted process (sessions were restored)
  std::this_thread::sleep_until(down_at + 6s);
  proxy.Signal(SIGUSR2);  // back
  auto up_at = std::chrono::steady_clock::now();

  json fleet;
  auto count = [&] {
    size_t n = 0;
    if (fleet.is_object()) {
      for (auto& [dev, v] : fleet.items()) n += v.contains("log") ? v["log"].size() : 0;
    }
    return n;
  };
  Eventually([&] {
    fleet = Http("GET", server + "/fleet.json");
    return count() == writes.size();
  }, 30s, 100ms);
  const double drain_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - up_at).count();
  ASSERT_EQ(count(), writes.size()) << "writes missing after the outage:\n" << fleet.dump() << "\n" << gw.Log();
  int off = 0;
  int64_t worst = 0;
  for (const auto& [key, w] : writes) {
    const json& v = fleet[w.device]["log"][key];
    ASSERT_TRUE(v.is_object()) << key << " of " << w.device << " missing";
    EXPECT_EQ(v["k"], w.k);
    ASSERT_TRUE(v["at"].is_number_integer()) << v.dump();
    int64_t at = v["at"].get<int64_t>();
    int64_t err = at < w.sent_ms ? w.sent_ms - at : at > w.acked_ms ? at - w.acked_ms : 0;
    worst = std::max(worst, err);
    off += err > 1000;
  }
  EXPECT_EQ(off, 0) << "timestamps more than 1 s from the device's write (worst " << worst << " ms)";
  // Health after the drain: nothing held, no stale error, ready.
  json queue = ctl("queue");
  for (const auto& row : queue["routes"]) {
    EXPECT_NE(row["upload_state"], "held") << row.dump();
    EXPECT_FALSE(row.contains("last_error")) << row.dump();
  }
  EXPECT_EQ(Shell("curl -s http://127.0.0.1:" + std::to_string(admin) + "/readyz").out, "ready\n");
  std::printf("firebase-server: %zu writes (a third online, a third offline, a third offline after kill -9) all "
              "delivered once %.1f s after the WAN came back; timestamps within %lld ms of the device's write\n",
              writes.size(), drain_s, static_cast<long long>(worst));
}

}  // namespace
}  // namespace tether::testing
