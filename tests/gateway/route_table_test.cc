#include "gateway/route_table.h"

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
  EXPECT_EQ(t.FindApp(std::string("unknown.wilddogio.com")), nullptr);
  EXPECT_EQ(JoinPath(t.CloudRoot(0)), "fleet");
  EXPECT_EQ(JoinPath(t.CloudRoot(3)), "other");
}

TEST(RouteTable, NoDefaultAppMeansHostIsRequired) {
  RouteTable t(Config::Parse("apps:\n  - id: a\n  - id: b\n", "t.yaml"));
  EXPECT_EQ(t.FindApp(std::nullopt), nullptr);
  ASSERT_TRUE(t.Resolve("b", "d", SplitPath("x/y")));
  EXPECT_EQ(JoinPath(t.Resolve("b", "d", SplitPath("x/y"))->cloud_path), "x/y");
}

}  // namespace
}  // namespace tether
