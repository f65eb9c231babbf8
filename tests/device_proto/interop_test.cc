// Interop: the engine (coap_test_server) against libcoap's coap-client-notls
// and npm `coap`. Each external command runs under `timeout`.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <string>

namespace {

std::string Env(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v ? v : fallback;
}

std::string RunShell(const std::string& cmd) {
  std::string out;
  FILE* f = popen((cmd + " 2>&1").c_str(), "r");
  if (!f) return out;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), f)) > 0) out.append(buf.data(), n);
  pclose(f);
  return out;
}

class Interop : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string server = Env("TETHER_BUILD_DIR", TETHER_BUILD_DIR_FALLBACK) + "/tests/device_proto/coap_test_server";
    int fds[2];
    ASSERT_EQ(pipe(fds), 0);
    pid_ = fork();
    if (pid_ == 0) {
      dup2(fds[1], 1);
      close(fds[0]);
      execl(server.c_str(), server.c_str(), "127.0.0.1", "0", "200", nullptr);
      _exit(127);
    }
    close(fds[1]);
    FILE* f = fdopen(fds[0], "r");
    unsigned port = 0;
    ASSERT_EQ(fscanf(f, "PORT %u", &port), 1) << "server did not start: " << server;
    fclose(f);
    base_ = "coap://127.0.0.1:" + std::to_string(port);
    port_ = port;
  }
  void TearDown() override {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      waitpid(pid_, nullptr, 0);
    }
  }
  std::string Client(const std::string& args) { return RunShell("timeout 20 coap-client-notls -B 10 " + args); }

  pid_t pid_ = -1;
  std::string base_;
  unsigned port_ = 0;
};

TEST_F(Interop, LibcoapGetPut) {
  EXPECT_NE(Client(base_ + "/echo").find("initial"), std::string::npos);
  Client("-m put -e libcoap-was-here " + base_ + "/echo");
  EXPECT_NE(Client(base_ + "/echo").find("libcoap-was-here"), std::string::npos);
  EXPECT_NE(Client("-N " + base_ + "/echo").find("libcoap-was-here"), std::string::npos) << "NON request";
}

TEST_F(Interop, LibcoapSeparateResponse) {
  EXPECT_NE(Client(base_ + "/slow").find("slow done"), std::string::npos);
}

TEST_F(Interop, LibcoapObserve) {
  const std::string out = Client("-w -s 2 " + base_ + "/counter");
  // Expect several distinct increasing values, one per line.
  std::vector<long> values;
  size_t pos = 0;
  while (pos < out.size()) {
    size_t nl = out.find('\n', pos);
    std::string line = out.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
    if (!line.empty() && line.find_first_not_of("0123456789") == std::string::npos) values.push_back(std::stol(line));
    if (nl == std::string::npos) break;
    pos = nl + 1;
  }
  ASSERT_GE(values.size(), 4u) << out;
  for (size_t i = 1; i < values.size(); ++i) EXPECT_GT(values[i], values[i - 1]) << out;
}

TEST_F(Interop, LibcoapBlockwise) {
  std::string expected;
  for (int i = 0; i < 3000; ++i) expected.push_back(static_cast<char>('A' + i % 26));
  EXPECT_NE(Client(base_ + "/large").find(expected), std::string::npos) << "server-chosen Block2";
  EXPECT_NE(Client("-b 64 " + base_ + "/large").find(expected), std::string::npos) << "client-chosen Block2";
  // Block1: a 2500-byte PUT in 256-byte blocks, then read back (Block2).
  std::string body;
  for (int i = 0; i < 2500; ++i) body.push_back(static_cast<char>('a' + i % 26));
  const std::string file = testing::TempDir() + "/block1_body";
  FILE* f = fopen(file.c_str(), "w");
  fwrite(body.data(), 1, body.size(), f);
  fclose(f);
  Client("-m put -b 256 -f " + file + " " + base_ + "/echo");
  EXPECT_NE(Client(base_ + "/echo").find(body), std::string::npos);
}

TEST_F(Interop, NodeCoap) {
  const std::string src = Env("TETHER_SOURCE_DIR", TETHER_SOURCE_DIR_FALLBACK);
  // A missing peer is a broken test environment, not a pass: `make peers` installs both.
  ASSERT_FALSE(RunShell("command -v node").empty()) << "node is not installed: run `make peers` (scripts/install-deps.sh)";
  ASSERT_EQ(access((src + "/tests/peers/node_modules/coap/package.json").c_str(), R_OK), 0)
      << "npm peer 'coap' missing in " << src << "/tests/peers/node_modules: run `make peers`";
  const std::string out = RunShell("NODE_PATH=" + src + "/tests/peers/node_modules timeout 30 node " + src +
                              "/tests/device_proto/node_interop.js 127.0.0.1 " + std::to_string(port_) +
                              "; echo EXIT=$?");
  EXPECT_NE(out.find("OK echo"), std::string::npos) << out;
  EXPECT_NE(out.find("OK large 3000"), std::string::npos) << out;
  EXPECT_NE(out.find("OK observe"), std::string::npos) << out;
  EXPECT_NE(out.find("EXIT=0"), std::string::npos) << out;
}

}  // namespace
