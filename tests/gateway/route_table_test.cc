#include "gateway/config/route_table.h"

#include <gtest/gtest.h>

namespace tether {
namespace {

Config Fleet() {
  return Config::Parse(
      "gateway:\n  variables: { site: plant7 }\n"
      "apps:\n  - id: myapp\n    default: true\n  - id: other\n"
      "routes:\n"
      "  - { name: own, app: myapp, match: \"devices/{device}/**\", cloud: \"fleet/{site}/{device}/**\", read: own, write: own }\n"
      "  - { name: cfg, app: myapp, match: \"config/**\", write: none }\n"
      "  - { name: shared, app: myapp, match: \"rooms/{room}/**\", cloud: \"sites/{site}/rooms/{room}/**\" }\n"
      "  - { name: all, app: other, match: \"**\", cloud: \"other/**\" }\n",
      "t.yaml");
}

struct Case {
  const char* app;
  const char* device;
  const char* path;
  const char* route;  // "" = no route
  const char* cloud;
  bool read;
  bool write;
};

class RouteResolve : public testing::TestWithParam<Case> {};

TEST_P(RouteResolve, Table) {
  static RouteTable table(Fleet());
  const Case& c = GetParam();
  auto r = table.Resolve(c.app, c.device, SplitPath(c.path));
  if (std::string(c.route).empty()) {
    EXPECT_FALSE(r) << c.path;
    return;
  }
  ASSERT_TRUE(r) << c.path;
  EXPECT_EQ(r->route->name, c.route);
  EXPECT_EQ(JoinPath(r->cloud_path), c.cloud);
  EXPECT_EQ(r->may_read, c.read);
  EXPECT_EQ(r->may_write, c.write);
}

INSTANTIATE_TEST_SUITE_P(
    Fleet, RouteResolve,
    testing::Values(Case{"myapp", "d1", "devices/d1/temp", "own", "fleet/plant7/d1/temp", true, true},
                    Case{"myapp", "d1", "devices/d1", "own", "fleet/plant7/d1", true, true},
                    Case{"myapp", "d1", "devices/d2/temp", "own", "fleet/plant7/d2/temp", false, false},
                    Case{"myapp", "d1", "config/rate", "cfg", "config/rate", true, false},
                    Case{"myapp", "d1", "rooms/r9/light", "shared", "sites/plant7/rooms/r9/light", true, true},
                    Case{"myapp", "d1", "elsewhere", "", "", false, false},
                    Case{"myapp", "d1", "", "", "", false, false},
                    Case{"other", "d1", "anything/x", "all", "other/anything/x", true, true},
                    Case{"nope", "d1", "devices/d1", "", "", false, false}));

TEST(RouteTable, AppSelectionByUriHost) {
  RouteTable t(Fleet());
  EXPECT_EQ(t.FindApp(std::string("myapp.wilddogio.com"))->id, "myapp");
  EXPECT_EQ(t.FindApp(std::string("other"))->id, "other");
  EXPECT_EQ(t.FindApp(std::nullopt)->id, "myapp");
  EXPECT_FALSE(t.FindApp(std::string("unknown.wilddogio.com"))) << "apps are listed: an unknown id stays unknown";
  EXPECT_EQ(JoinPath(t.CloudRoot(0)), "fleet");
  EXPECT_EQ(JoinPath(t.CloudRoot(3)), "other");
}

TEST(RouteTable, NoDefaultAppMeansHostIsRequired) {
  RouteTable t(Config::Parse("apps:\n  - id: a\n  - id: b\nroutes:\n  - { name: a, app: a, match: \"**\", cloud: \"a/**\" }\n"
                             "  - { name: b, app: b, match: \"**\", cloud: \"b/**\" }\n",
                             "t.yaml"));
  EXPECT_FALSE(t.FindApp(std::nullopt));
  ASSERT_TRUE(t.Resolve("b", "d", SplitPath("x/y")));
  EXPECT_EQ(JoinPath(t.Resolve("b", "d", SplitPath("x/y"))->cloud_path), "b/x/y");
}

// Without an `apps` list every app id is accepted, each in its own namespace; requests without
// Uri-Host keep the default app's device path = cloud path.
TEST(RouteTable, WithoutAppsEveryAppIdIsAnOpenAppOfItsOwn) {
  RouteTable t(Config::Parse("", "t.yaml"));
  ASSERT_TRUE(t.config().open_apps);
  auto dflt = t.FindApp(std::nullopt);
  ASSERT_TRUE(dflt);
  EXPECT_EQ(dflt->id, "default");
  auto mine = t.FindApp(std::string("myapp.wilddogio.com"));
  ASSERT_TRUE(mine) << "any app id is accepted";
  EXPECT_EQ(mine->id, "myapp");
  EXPECT_EQ(mine->config->auth.mode, AppAuth::Mode::kOpen);
  EXPECT_EQ(t.FindApp(std::string("default.wilddogio.com"))->id, "default");
  EXPECT_FALSE(t.FindApp(std::string("my$app.wilddogio.com"))) << "not a valid key: no namespace for it";
  auto own = t.Resolve("myapp", "d1", SplitPath("rooms/r1"));
  ASSERT_TRUE(own);
  EXPECT_EQ(JoinPath(own->cloud_path), "myapp/rooms/r1");
  EXPECT_EQ(own->route->name, Config::kOpenAppsRoute);
  EXPECT_TRUE(own->may_read && own->may_write);
  EXPECT_EQ(JoinPath(t.Resolve("app2", "d1", SplitPath("rooms/r1"))->cloud_path), "app2/rooms/r1")
      << "two app ids never share a path";
  EXPECT_EQ(JoinPath(t.Resolve("default", "d1", SplitPath("rooms/r1"))->cloud_path), "rooms/r1")
      << "the default app keeps device path = cloud path";
  // One listed app: as before, device path = cloud path, and unknown ids are refused.
  RouteTable one(Config::Parse("apps:\n  - id: myapp\n", "t.yaml"));
  EXPECT_FALSE(one.config().open_apps);
  EXPECT_EQ(JoinPath(one.Resolve("myapp", "d1", SplitPath("rooms/r1"))->cloud_path), "rooms/r1");
  EXPECT_FALSE(one.FindApp(std::string("other.wilddogio.com")));
  EXPECT_FALSE(one.Resolve("other", "d1", SplitPath("rooms/r1")));
}

}  // namespace
}  // namespace tether
