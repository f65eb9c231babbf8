// HeartbeatPolicy: how the gateway answers /.ping so every device pings within the target.
//
// The Wilddog SDK grows its ping interval by `delta` after each 2.05 (19 s + 8 s steps up to
// 165 s) and shrinks it after a 4.01 (interval -= delta, delta /= 2, then POST /.rst). Answering
// 4.01 to a ping that arrives later than target + tolerance therefore pulls an SDK device back to
// about the target, while a native client that pings within the target never sees a 4.01.
// See tests/gateway/heartbeat_policy_test.cc for the SDK model this is proved against.
#pragma once

#include <cstdint>

namespace tether {

struct HeartbeatPolicy {
  int64_t target_ms = 20'000;
  int64_t tolerance_ms = 1'000;  // network jitter, retransmission of the ping itself

  // prev_ping_ms: monotonic time of the session's previous ping (0 = none yet).
  bool ShouldSteerDown(int64_t prev_ping_ms, int64_t now_ms) const {
    return prev_ping_ms != 0 && now_ms - prev_ping_ms > target_ms + tolerance_ms;
  }
};

}  // namespace tether
