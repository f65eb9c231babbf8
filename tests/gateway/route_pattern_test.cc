#include "gateway/model/route_pattern.h"

#include <gtest/gtest.h>

#include <random>

#include "tests/support/diagnostic_text.h"

namespace tether {
namespace {

RoutePattern P(const std::string& s) {
  auto p = RoutePattern::Parse(s);
  EXPECT_TRUE(p) << s << ": " << MessageOf(p);
  return *p;
}

TEST(RoutePattern, MatchesAndExpands) {
  RoutePattern m = P("devices/{device}/**");
  RoutePattern c = P("fleet/{site}/{device}/**");
  Captures caps;
  std::vector<std::string> rest;
  ASSERT_TRUE(m.Match(SplitPath("/devices/d1/temp/now"), &caps, &rest));
  EXPECT_EQ(caps.at("device"), "d1");
  EXPECT_EQ(JoinPath(rest), "temp/now");
  caps["site"] = "s7";
  EXPECT_EQ(JoinPath(*c.Expand(caps, rest)), "fleet/s7/d1/temp/now");
  EXPECT_EQ(JoinPath(c.LiteralPrefix()), "fleet");
  EXPECT_FALSE(c.Expand({{"device", "d"}}, rest)) << "unbound {site}";

  EXPECT_TRUE(m.Match(SplitPath("devices/d1"), &caps, &rest)) << "** matches zero segments";
  EXPECT_TRUE(rest.empty());
  EXPECT_FALSE(m.Match(SplitPath("devices"), &caps, &rest));
  EXPECT_FALSE(m.Match(SplitPath("other/d1/x"), &caps, &rest));
}

TEST(RoutePattern, ExactPatternHasNoRest) {
  RoutePattern p = P("config/site");
  EXPECT_TRUE(p.Match(SplitPath("config/site"), nullptr, nullptr));
  EXPECT_FALSE(p.Match(SplitPath("config/site/x"), nullptr, nullptr));
  EXPECT_FALSE(p.Match(SplitPath("config"), nullptr, nullptr));
}

TEST(RoutePattern, EverythingPattern) {
  for (const char* s : {"", "**", "/"}) {
    RoutePattern p = P(s);
    EXPECT_TRUE(p.Match({}, nullptr, nullptr)) << s;
    EXPECT_TRUE(p.Match(SplitPath("a/b/c"), nullptr, nullptr)) << s;
  }
}

struct OverlapCase {
  const char* a;
  const char* b;
  bool overlap;
};

class RouteOverlap : public testing::TestWithParam<OverlapCase> {};

TEST_P(RouteOverlap, IsSymmetric) {
  auto c = GetParam();
  EXPECT_EQ(P(c.a).Overlaps(P(c.b)), c.overlap) << c.a << " vs " << c.b;
  EXPECT_EQ(P(c.b).Overlaps(P(c.a)), c.overlap) << c.b << " vs " << c.a;
}

INSTANTIATE_TEST_SUITE_P(Table, RouteOverlap,
                         testing::Values(OverlapCase{"devices/**", "config/**", false},
                                         OverlapCase{"devices/**", "devices/{d}/x", true},
                                         OverlapCase{"devices/{d}/x", "devices/{e}/y", false},
                                         OverlapCase{"devices/{d}/x", "devices/a/x", true},
                                         OverlapCase{"a/b", "a/b/c", false},
                                         OverlapCase{"a/b/**", "a/b", true},
                                         OverlapCase{"**", "anything/at/all", true},
                                         OverlapCase{"{x}", "a/b", false}));

// The index finds exactly what comparing with every earlier pattern finds (the smallest id), for
// random sequences of patterns over a small alphabet, where overlaps of every kind are common.
TEST(PatternOverlapIndex, AgreesWithPairwiseOverlaps) {
  std::mt19937 rng(7);
  const std::vector<std::string> pieces = {"a", "b", "{x}", "{y}"};
  auto random_pattern = [&] {
    std::string text;
    size_t n = rng() % 4;
    for (size_t i = 0; i < n; ++i) {
      std::string piece = pieces[rng() % pieces.size()];
      if (piece[0] == '{' && text.find(piece) != std::string::npos) piece = "c";  // one capture name once
      text += (text.empty() ? "" : "/") + piece;
    }
    if (rng() % 3 == 0) text += text.empty() ? "**" : "/**";
    return P(text);
  };
  for (int round = 0; round < 300; ++round) {
    PatternOverlapIndex index;
    std::vector<RoutePattern> added;
    for (int i = 0; i < 12; ++i) {
      RoutePattern p = random_pattern();
      int want = -1;
      for (size_t j = 0; j < added.size() && want < 0; ++j) {
        if (added[j].Overlaps(p)) want = static_cast<int>(j);
      }
      ASSERT_EQ(index.FindOverlap(p), want) << "round " << round << ": " << p.text();
      index.Add(p, i);
      added.push_back(p);
    }
  }
}

TEST(RoutePattern, RejectsMalformed) {
  EXPECT_FALSE(RoutePattern::Parse("a/**/b"));
  EXPECT_FALSE(RoutePattern::Parse("a/{}"));
  EXPECT_FALSE(RoutePattern::Parse("a/{x}{y}"));
  EXPECT_FALSE(RoutePattern::Parse("a/{x}/{x}"));
  EXPECT_FALSE(RoutePattern::Parse("a.b"));
  EXPECT_FALSE(RoutePattern::Parse("a/*"));
}

}  // namespace
}  // namespace tether
