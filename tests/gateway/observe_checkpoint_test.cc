// The Observe checkpoint of a long-lived observation (gateway/device/persisted_observer.h): rewritten every
// kSeqCheckpointEvery (2^20) notifications, so a restart never jumps less than what was sent since.
// A million notifications: labelled slow (seconds here, minutes under the sanitizers).
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#include <gtest/gtest.h>

#include <climits>

#include "gateway/device/persisted_observer.h"
#include "tests/gateway/device_api_harness.h"

namespace tether::testing {
namespace {

// A long-lived observation's checkpoint is rewritten every kSeqCheckpointEvery notifications, so a
// restart never jumps less than what was sent since the last checkpoint.
TEST(DeviceApiTest, ObserveCheckpointFollowsLongRunningObservations) {
  // Sessions must outlive a million notifications on a slow (sanitized) build. The test's device
  // acknowledges nothing, so every notification goes as a NON (a CON would hold back the rest
  // until it is acknowledged: docs/device-protocol.md, "Notification pacing").
  coap::EndpointOptions all_non;
  all_non.con_notify_every = UINT_MAX;
  all_non.con_notify_interval_ms = UINT32_MAX;
  all_non.probe_after_ms = UINT32_MAX;
  Gateway gw(all_non, "device:\n  heartbeat_target: 30m\n  session_timeout: 1h\n"
                 "apps:\n  - id: myapp\n    default: true\n"
                 "routes:\n  - { name: all, app: myapp, match: \"**\" }\n");
  const std::string cs = gw.Open(Peer(1), 1);
  ASSERT_EQ(cs.size(), 8u);
  ASSERT_TRUE(gw.Ask(Peer(1), Request(coap::code::kGet, ".info/connected", cs, 2).OptUint(coap::opt::kObserve, 0)));
  auto checkpoint = [&]() -> int64_t {
    for (const auto& r : gw.store().sessions().ListAll()) {
      std::vector<PersistedObserver> o = DecodeObservers(r.observers);
      if (r.short_token == cs && o.size() == 1) return o[0].wire.seq;
    }
    return -1;
  };
  ASSERT_TRUE(gw.Pump([&] { return checkpoint() == 1; })) << "registered with Observe 1";
  gw.Record(false);
  // Each flip of the cloud link notifies the observer (no store write involved).
  for (uint32_t i = 0; i < kSeqCheckpointEvery - 1; ++i) gw.api().SetCloudLink(i % 2 == 0, 0);
  gw.Pump([] { return false; }, 50);
  EXPECT_EQ(checkpoint(), 1) << "not yet";
  gw.api().SetCloudLink(false, 0);  // the last flip set it true: notification number 2^20
  ASSERT_TRUE(gw.Pump([&] { return checkpoint() == 1 + static_cast<int64_t>(kSeqCheckpointEvery); }))
      << "checkpoint " << checkpoint();
  gw.Record(true);
  gw.api().SetCloudLink(true, 0);
  ASSERT_FALSE(gw.sent().empty());
  EXPECT_EQ(gw.sent().back().p->m.UintOption(coap::opt::kObserve), 2 + kSeqCheckpointEvery);
}

}  // namespace
}  // namespace tether::testing
