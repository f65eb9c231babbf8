#include "tests/integration/fault_harness.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "tests/integration/tetherd_process.h"
#include "tests/support/eventually.h"

namespace tether::testing {

int64_t TrueWallMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

bool SoakMode() { return std::getenv("TETHER_SOAK") != nullptr; }

bool Tally::Check(bool ok, const std::string& what) {
  if (ok) {
    ++passed_;
    return true;
  }
  ++failed_;
  if (failed_ <= 20) ADD_FAILURE() << suite_ << ": " << what;
  else if (failed_ == 21) ADD_FAILURE() << suite_ << ": more failures, not described";
  return false;
}

void Tally::Print() {
  if (printed_) return;
  printed_ = true;
  std::printf("%s: %d passed, %d failed\n", suite_.c_str(), passed_, failed_);
  std::fflush(stdout);
}

bool WaitForCloudOffset(SdkClient& probe, int64_t skew_ms, int64_t tolerance_ms) {
  return Eventually(
      [&] {
        std::string v = probe.Request(1, ".info/serverTimeOffset", "", {}, {}, {}, 50u).payload;
        return !v.empty() && std::llabs(std::atoll(v.c_str()) - skew_ms) < tolerance_ms;
      },
      std::chrono::seconds(10), std::chrono::milliseconds(100));
}

std::string FaultGatewayYaml(GatewayOptions* o) {
  if (o->port == 0) o->port = static_cast<uint16_t>(FreePort());
  std::string y = "gateway:\n  id: gw-fault\ndevice:\n  listen: \"127.0.0.1:" + std::to_string(o->port) +
                  "\"\n  heartbeat_target: " + o->heartbeat + "\n  session_timeout: " + o->session_timeout +
                  "\nadmin:\n  listen: \"127.0.0.1:" + std::to_string(FreePort(false)) +
                  "\"\nstore:\n  path: ${STORE}\n" + o->store_yaml;
  if (!o->cloud_url.empty()) y += "upstream:\n  url: " + o->cloud_url + "\n";
  const char* level = std::getenv("TETHER_FAULT_LOG_LEVEL");  // "debug" for a post-mortem
  y += "log:\n  level: " + std::string(level ? level : "info") + "\napps:\n  - id: myapp\nroutes:\n"
       "  - { name: devs, match: \"devices/{device}/**\", cloud: \"fleet/{device}/**\" }\n";
  if (o->sync_config) y += "  - { name: cfg, match: \"config/**\", write: none, sync: [ \"config\" ] }\n";
  return y;
}

bool ContinuedBy(const SessionRecord& s, const SessionRecord* next) {
  // 500 ms short of the deadline: a reopen that close could reach the gateway after it.
  return s.end == SessionRecord::End::kSilent && next != nullptr && s.fire_from_ms > 0 &&
         next->opened_ms < s.fire_from_ms - 500;
}

bool MaybeContinuedBy(const SessionRecord& s, const SessionRecord* next) {
  if ((s.end != SessionRecord::End::kSilent && s.end != SessionRecord::End::kLost) || next == nullptr) return false;
  if (s.off_unanswered) return next->first_attempt_ms < s.fire_to_ms;
  return next->first_attempt_ms < next->opened_ms && (s.fire_from_ms == 0 || next->first_attempt_ms < s.fire_from_ms + 500);
}

}  // namespace tether::testing
