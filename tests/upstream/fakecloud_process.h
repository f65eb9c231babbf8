// FakeCloud: spawns tests/fakecloud/fakecloud.py on a free 127.0.0.1 port for one test and
// talks to its control API with blocking libcurl calls. Killed (SIGKILL) on destruction.
#pragma once
#include <curl/curl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

namespace tether::upstream::testing {

inline std::string SourceDir() {
  const char* env = std::getenv("TETHER_SOURCE_DIR");
  return env ? env : TETHER_SOURCE_DIR_FALLBACK;
}

class FakeCloud {
 public:
  explicit FakeCloud(const std::string& extra_args = "") {
    std::string cmd = "exec python3 " + SourceDir() + "/tests/fakecloud/fakecloud.py --port 0 " +
                      extra_args;
    int fds[2];
    if (pipe(fds) != 0) throw std::runtime_error("pipe");
    pid_ = fork();
    if (pid_ == 0) {
      dup2(fds[1], 1);
      close(fds[0]);
      close(fds[1]);
      execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    close(fds[1]);
    FILE* out = fdopen(fds[0], "r");
    if (fscanf(out, "%d", &port_) != 1) throw std::runtime_error("fakecloud did not start");
    fclose(out);
  }
  ~FakeCloud() {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  int port() const { return port_; }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }

  nlohmann::json Control(const nlohmann::json& req) const {
    return Request("POST", "/_control", req.dump());
  }
  nlohmann::json Get(const std::string& path) const { return Request("GET", path + ".json", ""); }

  nlohmann::json Request(const std::string& method, const std::string& path,
                         const std::string& body) const {
    CURL* c = curl_easy_init();
    std::string url = this->url() + path, resp;
    curl_easy_setopt(c, CURLOPT_URL, url.c_str());
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method.c_str());
    if (method != "GET") curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.c_str());
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION,
                     +[](char* p, size_t s, size_t n, void* u) {
                       static_cast<std::string*>(u)->append(p, s * n);
                       return s * n;
                     });
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &resp);
    CURLcode rc = curl_easy_perform(c);
    curl_easy_cleanup(c);
    if (rc != CURLE_OK) throw std::runtime_error(std::string("fakecloud: ") + curl_easy_strerror(rc));
    return nlohmann::json::parse(resp, nullptr, false);
  }

 private:
  pid_t pid_ = -1;
  int port_ = 0;
};

}  // namespace tether::upstream::testing
