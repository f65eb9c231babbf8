#include "gateway/config/device_auth.h"

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

// A reload keeps a session only while its token would still open it (docs/operations.md,
// "Security model"); sessions restored after a restart keep no token and are judged by device.
TEST(DeviceAuth, StillAcceptsJudgesASessionByTheTokenThatOpenedIt) {
  AppConfig app{"a", true, {}};
  app.auth.mode = AppAuth::Mode::kTokens;
  app.auth.tokens = {{"d1", "tok-one"}, {"d2", "tok-two"}};
  DeviceAuthenticator before(app);
  const std::string fp = DeviceAuthenticator::Fingerprint("tok-one");
  EXPECT_TRUE(before.StillAccepts("d1", false, fp));
  EXPECT_FALSE(before.StillAccepts("d2", false, fp)) << "another device's token";
  app.auth.tokens = {{"d1", "tok-new"}, {"d2", "tok-two"}};
  DeviceAuthenticator after(app);
  EXPECT_FALSE(after.StillAccepts("d1", false, fp)) << "its token was replaced";
  EXPECT_TRUE(after.StillAccepts("d1", false, "")) << "restored: d1 still has a token";
  EXPECT_FALSE(after.StillAccepts("d3", false, "")) << "restored: d3 has none";

  const std::string path = testing::TempDir() + "/still.secret";
  std::ofstream(path) << "0123456789abcdef-app-secret\n";
  AppConfig hmac{"h", true, {}};
  hmac.auth.mode = AppAuth::Mode::kHmac;
  hmac.auth.secret_file = path;
  DeviceAuthenticator h1(hmac);
  const std::string signed_fp = DeviceAuthenticator::Fingerprint(DeviceAuthenticator::HmacToken("0123456789abcdef-app-secret", "s1"));
  EXPECT_TRUE(h1.StillAccepts("s1", false, signed_fp));
  EXPECT_EQ(h1.RestoredFingerprint("s1"), signed_fp);
  std::ofstream(path) << "another-secret-0123456789\n";
  DeviceAuthenticator h2(hmac);
  EXPECT_FALSE(h2.StillAccepts("s1", false, signed_fp)) << "the secret changed";

  AppConfig open{"o", true, {}};
  EXPECT_TRUE(DeviceAuthenticator(open).StillAccepts("anon-x", true, DeviceAuthenticator::Fingerprint("")));
}

}  // namespace
}  // namespace tether
