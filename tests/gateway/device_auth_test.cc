#include "gateway/device_auth.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

namespace tether {
namespace {

TEST(DeviceAuth, OpenAppTakesTheTokenAsDeviceId) {
  AppConfig app{"a", true, {}};
  DeviceAuthenticator auth(app);
  EXPECT_TRUE(auth.Authenticate("").ok);
  EXPECT_EQ(auth.Authenticate("").device, "");
  EXPECT_EQ(auth.Authenticate("dev-7").device, "dev-7");
  EXPECT_EQ(auth.Authenticate("not/a/key").device, "");
}

TEST(DeviceAuth, TokenList) {
  AppConfig app{"a", true, {}};
  app.auth.mode = AppAuth::Mode::kTokens;
  app.auth.tokens = {{"d1", "SECRETTOKEN"}, {"d2", "other"}};
  DeviceAuthenticator auth(app);
  EXPECT_EQ(auth.Authenticate("SECRETTOKEN").device, "d1");
  EXPECT_EQ(auth.Authenticate("other").device, "d2");
  EXPECT_FALSE(auth.Authenticate("SECRETTOKEM").ok);
  EXPECT_FALSE(auth.Authenticate("").ok);
}

TEST(DeviceAuth, HmacTokens) {
  std::string path = testing::TempDir() + "/hmac.secret";
  std::ofstream(path) << "0123456789abcdef-app-secret\n";
  AppConfig app{"a", true, {}};
  app.auth.mode = AppAuth::Mode::kHmac;
  app.auth.secret_file = path;
  DeviceAuthenticator auth(app);
  std::string tok = DeviceAuthenticator::HmacToken("0123456789abcdef-app-secret", "sensor-42");
  EXPECT_EQ(tok.size(), std::string("sensor-42:").size() + 64);
  AuthOutcome ok = auth.Authenticate(tok);
  EXPECT_TRUE(ok.ok);
  EXPECT_EQ(ok.device, "sensor-42");
  std::string forged = tok;
  forged.back() = forged.back() == '0' ? '1' : '0';
  EXPECT_FALSE(auth.Authenticate(forged).ok);
  EXPECT_FALSE(auth.Authenticate("sensor-43" + tok.substr(9)).ok) << "the MAC binds the device id";
  EXPECT_FALSE(auth.Authenticate("no-colon").ok);
  // Known-answer: HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog").
  EXPECT_EQ(DeviceAuthenticator::HmacToken("key", "The quick brown fox jumps over the lazy dog"),
            "The quick brown fox jumps over the lazy dog:f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8");
  std::remove(path.c_str());
}

TEST(DeviceAuth, UnreadableOrShortSecretIsAConfigError) {
  AppConfig app{"a", true, {}};
  app.auth.mode = AppAuth::Mode::kHmac;
  app.auth.secret_file = "/nonexistent/secret";
  EXPECT_THROW(DeviceAuthenticator{app}, ConfigError);
  std::string path = testing::TempDir() + "/short.secret";
  std::ofstream(path) << "short";
  app.auth.secret_file = path;
  EXPECT_THROW(DeviceAuthenticator{app}, ConfigError);
}

}  // namespace
}  // namespace tether
