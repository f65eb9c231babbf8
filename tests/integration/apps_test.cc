// App selection over real sockets (issue 15.3, 15.4): without an `apps` list any app id is
// accepted, each in its own namespace; listed apps refuse unknown ids; apps never share data
// unless routes say so.
#include <gtest/gtest.h>

#include "tests/integration/sdk_client.h"
#include "tests/integration/tetherd_process.h"

namespace tether::testing {
namespace {

using namespace std::chrono_literals;
constexpr uint8_t kGet = 1, kPut = 3;
const std::string kNull = "\xf6";

std::string Base(uint16_t port) {
  return "device:\n  listen: \"127.0.0.1:" + std::to_string(port) + "\"\n" +
         "admin:\n  listen: \"127.0.0.1:" + std::to_string(FreePort(false)) + "\"\n" +
         "store:\n  path: ${STORE}\nlog:\n  level: info\n";
}

// As etc/tether.yaml ships (no apps, no routes): the SDK's Uri-Host "myapp.wilddogio.com" used
// to get 4.00 unknown app, and a 4.00 stops the SDK for good.
TEST(Apps, WithoutAnAppsListEveryAppIdIsAcceptedInItsOwnNamespace) {
  TetherdProcess gw;
  const uint16_t port = static_cast<uint16_t>(FreePort());
  gw.WriteConfig(Base(port));
  gw.Start();
  ASSERT_TRUE(gw.WaitForLog("listening for CoAP", 10s)) << gw.Log();
  SdkClient mine(port, "myapp"), other(port, "app2"), native(port, "");
  CoapReply open = mine.OpenRaw("");
  ASSERT_EQ(open.CodeString(), "2.05") << open.payload;
  ASSERT_TRUE(mine.AcceptOpen(open));
  ASSERT_TRUE(other.Open());
  ASSERT_TRUE(native.Open());
  ASSERT_EQ(mine.Put("rooms/r1", CborText("mine")).CodeString(), "2.05");
  ASSERT_EQ(other.Put("rooms/r1", CborText("theirs")).CodeString(), "2.05");
  EXPECT_EQ(mine.Get("rooms/r1").payload, CborText("mine"));
  EXPECT_EQ(other.Get("rooms/r1").payload, CborText("theirs")) << "two app ids never share a path";
  EXPECT_EQ(native.Get("rooms/r1").payload, kNull) << "the default app (no Uri-Host) is its own namespace too";
  // The default app is the root: it sees each app id's namespace as a child.
  EXPECT_EQ(native.Request(kGet, "myapp/rooms", "", {}, {}, {}, 50u).payload, "{\"r1\":\"mine\"}");
  // onDisconnect operations stay in their app: app2 leaving does not touch myapp's status.
  ASSERT_EQ(mine.Request(kPut, "status", CborText("mine-gone"), {".dis=add"}).CodeString(), "2.05");
  ASSERT_EQ(other.Request(kPut, "status", CborText("app2-gone"), {".dis=add"}).CodeString(), "2.05");
  ASSERT_EQ(other.GoOffline().CodeString(), "2.05");
  EXPECT_EQ(mine.Get("status").payload, kNull);
  EXPECT_EQ(native.Request(kGet, "app2/status", "", {}, {}, {}, 50u).payload, "\"app2-gone\"");
  EXPECT_EQ(mine.Request(kGet, "", "", {}, {}, {}, 50u).payload, "{\"rooms\":{\"r1\":\"mine\"}}");
  // An id that cannot name a namespace (not a valid key) is refused as unknown.
  SdkClient bad(port, "my$app");
  EXPECT_EQ(bad.OpenRaw("").CodeString(), "4.00");
}

TEST(Apps, ListedAppsStillRefuseUnknownIds) {
  TetherdProcess gw;
  const uint16_t port = static_cast<uint16_t>(FreePort());
  gw.WriteConfig(Base(port) + "apps:\n  - id: myapp\n");
  gw.Start();
  ASSERT_TRUE(gw.WaitForLog("listening for CoAP", 10s)) << gw.Log();
  SdkClient known(port, "myapp"), unknown(port, "app2");
  ASSERT_TRUE(known.Open());
  ASSERT_EQ(known.Put("rooms/r1", CborText("x")).CodeString(), "2.05");
  EXPECT_EQ(known.Request(kGet, "", "", {}, {}, {}, 50u).payload, "{\"rooms\":{\"r1\":\"x\"}}")
      << "the single-app default: device path = cloud path";
  CoapReply r = unknown.OpenRaw("");
  EXPECT_EQ(r.CodeString(), "4.00");
  EXPECT_EQ(r.payload, "unknown app");
}

// Several listed apps and no routes: each catch-all mapped device path = cloud path, so app2 read
// app1's root and their onDisconnect writes collided. Now a configuration error naming the fix.
TEST(Apps, SeveralAppsWithoutRoutesAreRefusedWithTheFix) {
  TetherdProcess gw;
  const uint16_t port = static_cast<uint16_t>(FreePort());
  gw.WriteConfig(Base(port) + "apps:\n  - id: app1\n  - id: app2\n");
  ShellResult r = Shell(TetherdProcess::BinaryPath("tetherd") + " --check-config " + gw.config_path());
  EXPECT_EQ(r.status, 2) << r.out;
  EXPECT_NE(r.out.find("apps: 2 apps and no routes: each would see the others' data"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("- { name: app2, app: app2, match: \"**\", cloud: \"app2/**\" }"), std::string::npos) << r.out;
  gw.Start();
  EXPECT_NE(gw.WaitExit(10s), 0) << "tetherd refuses to start";
  EXPECT_NE(gw.Log().find("each would see the others' data"), std::string::npos) << gw.Log();

  // With routes that keep them apart, the same two apps run, each in its own subtree.
  TetherdProcess ok;
  const uint16_t port2 = static_cast<uint16_t>(FreePort());
  ok.WriteConfig(Base(port2) + "apps:\n  - id: app1\n  - id: app2\nroutes:\n"
                 "  - { name: app1, app: app1, match: \"**\", cloud: \"app1/**\" }\n"
                 "  - { name: app2, app: app2, match: \"**\", cloud: \"app2/**\" }\n");
  ok.Start();
  ASSERT_TRUE(ok.WaitForLog("listening for CoAP", 10s)) << ok.Log();
  SdkClient a(port2, "app1"), b(port2, "app2");
  ASSERT_TRUE(a.Open());
  ASSERT_TRUE(b.Open());
  ASSERT_EQ(a.Put("x", CborText("one")).CodeString(), "2.05");
  EXPECT_EQ(b.Get("x").payload, kNull);
}

}  // namespace
}  // namespace tether::testing
