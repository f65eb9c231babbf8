// The upstream.auth_variable_override template.
#include "gateway/config/auth_override.h"

#include <gtest/gtest.h>

namespace tether {
namespace {

TEST(AuthOverride, FillsThePlaceholdersOfEachDevice) {
  std::string error;
  auto t = AuthOverride::Parse(R"({"uid":"{app}:{device}","site":"north","claims":{"gw":"{gateway}","n":3}})", &error);
  ASSERT_TRUE(t) << error;
  EXPECT_EQ(t->Render("d1", "myapp", "gw-1"), R"({"claims":{"gw":"gw-1","n":3},"site":"north","uid":"myapp:d1"})");
  EXPECT_EQ(t->Render("d\"2", "a", "g"), R"({"claims":{"gw":"g","n":3},"site":"north","uid":"a:d\"2"})")
      << "values are JSON-escaped";
  EXPECT_EQ(t->Render("", "myapp", "gw-1"), "null") << "no device: an unauthenticated client, not the gateway";
}

TEST(AuthOverride, DefaultNamesTheDeviceAsUid) {
  auto t = AuthOverride::Parse(AuthOverride::kDefault, nullptr);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->Render("d1", "app", "gw"), R"({"app":"app","gateway":"gw","uid":"d1"})");
}

TEST(AuthOverride, RejectsWhatIsNotAnObjectOrNamesUnknownPlaceholders) {
  std::string error;
  EXPECT_FALSE(AuthOverride::Parse(R"("uid")", &error));
  EXPECT_NE(error.find("JSON object"), std::string::npos) << error;
  EXPECT_FALSE(AuthOverride::Parse(R"({"uid":"{devise}"})", &error));
  EXPECT_EQ(error, "unknown placeholder {devise} (known: {device}, {app}, {gateway})");
  auto literal = AuthOverride::Parse(R"({"note":"a {b c} {"})", &error);
  ASSERT_TRUE(literal) << "braces around non-words are text";
  EXPECT_EQ(literal->Render("d", "a", "g"), R"({"note":"a {b c} {"})");
}

}  // namespace
}  // namespace tether
