// YamlField (gateway/yaml_schema.h), the strict reader under every config file: each value
// written the way the docs spell it reads back as the number it names (durations, sizes, integers,
// booleans, enums), and each refusal is a ConfigError at the node's file:line:col with its dotted
// key path (unknown and duplicate keys, missing keys, wrong types, bad units, out of range,
// overflow).
#include "gateway/yaml_schema.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace tether {
namespace {

using std::chrono::milliseconds;

YamlField Root(const std::string& yaml) { return YamlField("tether.yaml", YAML::Load(yaml), ""); }

// Runs `read` and returns the ConfigError it throws; fails the test if it throws none.
template <typename Read>
ConfigError ErrorOf(Read read) {
  try {
    read();
  } catch (const ConfigError& e) {
    return e;
  }
  ADD_FAILURE() << "no ConfigError";
  return ConfigError("", 0, 0, "", "none");
}

TEST(YamlSchema, DurationsReadBackInMilliseconds) {
  const std::vector<std::pair<std::string, int64_t>> cases = {
      {"250ms", 250}, {"20s", 20'000}, {"20", 20'000}, {"5m", 300'000}, {"1h", 3'600'000}, {"2d", 172'800'000}};
  for (const auto& [text, ms] : cases) {
    YamlField root = Root("t: " + text);
    EXPECT_EQ(root.Required("t").AsDuration(milliseconds(0), milliseconds(INT64_MAX)).count(), ms) << text;
  }
  // Bounds are inclusive.
  EXPECT_EQ(Root("t: 1s").Required("t").AsDuration(milliseconds(1000), milliseconds(1000)).count(), 1000);
}

TEST(YamlSchema, SizesReadBackInBytes) {
  const std::vector<std::pair<std::string, uint64_t>> cases = {
      {"512", 512},          {"512B", 512},        {"64KB", 64'000},          {"10MB", 10'000'000},
      {"1GB", 1'000'000'000}, {"64KiB", 64 * 1024}, {"2MiB", 2ull << 20},      {"1GiB", 1ull << 30}};
  for (const auto& [text, bytes] : cases) {
    EXPECT_EQ(Root("s: " + text).Required("s").AsBytes(0, UINT64_MAX), bytes) << text;
  }
}

TEST(YamlSchema, ScalarsReadBack) {
  YamlField root = Root("i: -42\nyes1: yes\non1: on\nt: true\nno1: no\noff1: off\nf: false\ne: drop_oldest\nname: gw-1\n");
  EXPECT_EQ(root.Required("i").AsInt(-100, 100), -42);
  for (const char* k : {"yes1", "on1", "t"}) EXPECT_TRUE(root.Required(k).AsBool()) << k;
  for (const char* k : {"no1", "off1", "f"}) EXPECT_FALSE(root.Required(k).AsBool()) << k;
  EXPECT_EQ(root.Required("e").AsEnum({"reject", "drop_oldest"}), "drop_oldest");
  EXPECT_EQ(root.Required("name").AsString(), "gw-1");
  EXPECT_NO_THROW(root.Finish());
}

TEST(YamlSchema, AbsentAndNullKeysAreOptional) {
  YamlField root = Root("a: ~\nb: 1\n");
  EXPECT_FALSE(root.Optional("a")) << "null reads as absent";
  EXPECT_FALSE(root.Optional("missing"));
  ASSERT_TRUE(root.Optional("b"));
  EXPECT_NO_THROW(root.Finish());
  EXPECT_TRUE(Root("").IsNull());
  EXPECT_NO_THROW(Root("").Finish()) << "an empty file is an empty map";
}

TEST(YamlSchema, UnknownAndDuplicateKeysAreRefusedAtTheirPosition) {
  YamlField root = Root("store:\n  path: /var/lib/tether\n  pathh: typo\n");
  YamlField store = root.Required("store");
  store.Required("path");
  ConfigError e = ErrorOf([&] { store.Finish(); });
  EXPECT_EQ(e.file(), "tether.yaml");
  EXPECT_EQ(e.line(), 3);
  EXPECT_EQ(e.column(), 3);
  EXPECT_EQ(e.key_path(), "store.pathh");
  EXPECT_NE(std::string(e.what()).find("unknown key"), std::string::npos) << e.what();

  YamlField dup = Root("a: 1\nb: 2\na: 3\n");
  dup.Required("a");
  dup.Required("b");
  e = ErrorOf([&] { dup.Finish(); });
  EXPECT_EQ(e.line(), 3);
  EXPECT_EQ(e.key_path(), "a");
  EXPECT_NE(std::string(e.what()).find("duplicate key"), std::string::npos) << e.what();
}

TEST(YamlSchema, MissingKeysAndWrongShapesNameTheKeyPath) {
  YamlField root = Root("device:\n  listen: \"127.0.0.1:5683\"\nroutes:\n  - { name: a }\n  - 7\n");
  YamlField device = root.Required("device");
  ConfigError e = ErrorOf([&] { device.Required("session_timeout"); });
  EXPECT_EQ(e.key_path(), "device.session_timeout");
  EXPECT_EQ(e.line(), 2) << "at the map that lacks it";
  EXPECT_NE(std::string(e.what()).find("required key is missing"), std::string::npos) << e.what();

  std::vector<YamlField> routes = root.Required("routes").Items();
  ASSERT_EQ(routes.size(), 2u);
  EXPECT_EQ(routes[0].key_path(), "routes[0]");
  EXPECT_EQ(routes[0].Required("name").key_path(), "routes[0].name");
  e = ErrorOf([&] { routes[1].Required("name"); });
  EXPECT_EQ(e.key_path(), "routes[1]");
  EXPECT_EQ(e.line(), 5);
  EXPECT_NE(std::string(e.what()).find("expected a mapping"), std::string::npos) << e.what();
  e = ErrorOf([&] { device.Required("listen").Items(); });
  EXPECT_NE(std::string(e.what()).find("expected a list"), std::string::npos) << e.what();
  e = ErrorOf([&] { root.Required("routes").AsString(); });
  EXPECT_NE(std::string(e.what()).find("expected a string"), std::string::npos) << e.what();
}

TEST(YamlSchema, BadValuesAreRefusedWithTheReason) {
  YamlField root = Root(
      "d1: 5 weeks\nd2: soon\nd3: 1s\nd4: 99999999999999999d\n"
      "s1: 10PB\ns2: 99999999999GiB\ns3: 2KiB\n"
      "i1: 4x\ni2: 101\nb: maybe\ne: sideways\n");
  auto reason = [&](const char* key, auto read) {
    YamlField f = root.Required(key);
    ConfigError e = ErrorOf([&] { read(f); });
    EXPECT_EQ(e.key_path(), key);
    EXPECT_GT(e.line(), 0) << key;
    return std::string(e.what());
  };
  auto duration = [](YamlField& f) { f.AsDuration(milliseconds(0), milliseconds(500)); };
  auto size = [](YamlField& f) { f.AsBytes(0, 1024); };
  EXPECT_NE(reason("d1", duration).find("unknown duration unit 'weeks'"), std::string::npos);
  EXPECT_NE(reason("d2", duration).find("expected a duration"), std::string::npos);
  EXPECT_NE(reason("d3", duration).find("out of range [0ms, 500ms]"), std::string::npos);
  EXPECT_NE(reason("d4", duration).find("too large"), std::string::npos);
  EXPECT_NE(reason("s1", size).find("unknown size unit 'PB'"), std::string::npos);
  EXPECT_NE(reason("s2", size).find("too large"), std::string::npos);
  EXPECT_NE(reason("s3", size).find("out of range [0, 1024] bytes"), std::string::npos);
  EXPECT_NE(reason("i1", [](YamlField& f) { f.AsInt(0, 100); }).find("expected an integer, got '4x'"),
            std::string::npos);
  EXPECT_NE(reason("i2", [](YamlField& f) { f.AsInt(0, 100); }).find("101 is out of range [0, 100]"),
            std::string::npos);
  EXPECT_NE(reason("b", [](YamlField& f) { f.AsBool(); }).find("expected true or false, got 'maybe'"),
            std::string::npos);
  EXPECT_NE(reason("e", [](YamlField& f) { f.AsEnum({"reject", "drop_oldest"}); })
                .find("'sideways' is not one of: reject, drop_oldest"),
            std::string::npos);
}

}  // namespace
}  // namespace tether
