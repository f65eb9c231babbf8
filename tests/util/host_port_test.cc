// util host:port text, and that the four places that read one agree with it.
#include "util/host_port.h"

#include <gtest/gtest.h>

#include "device_proto/address.h"
#include "gateway/admin/admin_client.h"

namespace tether::util {
namespace {

TEST(HostPortTest, SplitsEveryForm) {
  auto s = SplitHostPort("example.org:80");
  ASSERT_TRUE(s);
  EXPECT_EQ(s->host, "example.org");
  EXPECT_EQ(s->port, "80");
  s = SplitHostPort("example.org");
  ASSERT_TRUE(s);
  EXPECT_EQ(s->host, "example.org");
  EXPECT_EQ(s->port, std::nullopt);
  s = SplitHostPort("[::1]:5683");
  ASSERT_TRUE(s);
  EXPECT_EQ(s->host, "::1");
  EXPECT_EQ(s->port, "5683");
  s = SplitHostPort("[fe80::1]");
  ASSERT_TRUE(s);
  EXPECT_EQ(s->host, "fe80::1");
  EXPECT_EQ(s->port, std::nullopt);
  s = SplitHostPort("host:");
  ASSERT_TRUE(s);
  EXPECT_EQ(s->port, "") << "an empty port is there, and empty";
  s = SplitHostPort("fe80::1");
  ASSERT_TRUE(s);
  EXPECT_EQ(s->host, "fe80::1") << "a bare IPv6 literal is all host";
  EXPECT_EQ(s->port, std::nullopt);
  EXPECT_FALSE(SplitHostPort("[::1"));
  EXPECT_FALSE(SplitHostPort("[::1]5683"));
}

TEST(HostPortTest, PortIsOneToFiveDigitsUpTo65535) {
  EXPECT_EQ(ParsePort("0"), 0);
  EXPECT_EQ(ParsePort("65535"), 65535);
  EXPECT_EQ(ParsePort("00080"), 80);
  EXPECT_EQ(ParsePort("65536"), std::nullopt);
  EXPECT_EQ(ParsePort("000080"), std::nullopt);
  for (const char* bad : {"", " 80", "+80", "-1", "8o", "80 "}) EXPECT_EQ(ParsePort(bad), std::nullopt) << bad;
}

TEST(HostPortTest, FormatBracketsIpv6AndRoundTrips) {
  EXPECT_EQ(FormatHostPort("127.0.0.1", 8790), "127.0.0.1:8790");
  EXPECT_EQ(FormatHostPort("::1", 5683), "[::1]:5683");
  for (const char* host : {"localhost", "10.0.0.1", "::", "fe80::1"}) {
    auto s = SplitHostPort(FormatHostPort(host, 1234));
    ASSERT_TRUE(s);
    EXPECT_EQ(s->host, host);
    EXPECT_EQ(s->port, "1234");
  }
}

TEST(HostPortTest, DeviceAddressesAndTheAdminAddressReadTheSameText) {
  coap::Address v6 = coap::Address::Parse("[::1]:5683");
  EXPECT_EQ(v6.family, AF_INET6);
  EXPECT_EQ(v6.port, 5683);
  EXPECT_EQ(coap::Address::Parse(v6.to_string()), v6);
  EXPECT_EQ(coap::Address::Parse("dtls:127.0.0.1:5684").secure, 1);
  EXPECT_EQ(coap::Address::Parse("127.0.0.1").family, 0) << "a device address needs its port";
  EXPECT_EQ(coap::Address::Parse("[::1]:65536").family, 0);

  EXPECT_EQ(AdminAddress::Parse("[::1]:9000").ToString(), "[::1]:9000");
  EXPECT_EQ(AdminAddress::Parse(":9000").host, "127.0.0.1");
  EXPECT_EQ(AdminAddress::Parse("10.1.2.3").ToString(), "10.1.2.3:8790");
  EXPECT_THROW(AdminAddress::Parse("host:0"), std::invalid_argument);
  EXPECT_THROW(AdminAddress::Parse("[::1"), std::invalid_argument);
}

}  // namespace
}  // namespace tether::util
