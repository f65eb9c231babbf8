// Diagnostic / Expected<T> (gateway/model/diagnostic.h) and the two mappings from its codes to
// what peers see: CoapCodeOf (devices) and HttpStatusOf (the admin API). The mappings are checked
// against the numbers devices and tetherctl saw before there was a Diagnostic, so a change to
// either shows here, not only in the end-to-end tests.
#include "gateway/model/diagnostic.h"

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <utility>
#include <vector>

#include "device_proto/message.h"
#include "gateway/admin/admin_server.h"
#include "gateway/device/device_reply.h"
#include "tests/support/diagnostic_text.h"

namespace tether {
namespace {

constexpr ErrorCode kAllCodes[] = {
    ErrorCode::kInvalid,  ErrorCode::kUnauthorized,      ErrorCode::kForbidden, ErrorCode::kNotFound,
    ErrorCode::kMethodNotAllowed, ErrorCode::kNotAcceptable, ErrorCode::kConflict, ErrorCode::kTooLarge,
    ErrorCode::kUnsupportedFormat, ErrorCode::kWrongHost, ErrorCode::kUnavailable, ErrorCode::kInternal,
};

Expected<int> Half(int n) {
  if (n % 2) return Diagnostic::Invalid(std::to_string(n) + " is odd");
  return n / 2;
}

Expected<void> Even(int n) {
  if (auto r = Half(n); !r) return r.error();
  return {};
}

TEST(Expected, HoldsTheValueOrTheDiagnostic) {
  Expected<int> ok = Half(8);
  ASSERT_TRUE(ok);
  EXPECT_TRUE(ok.ok());
  EXPECT_EQ(*ok, 4);
  EXPECT_EQ(ok.Value(), 4);
  EXPECT_THROW((void)ok.error(), std::bad_variant_access);

  Expected<int> bad = Half(7);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, ErrorCode::kInvalid);
  EXPECT_EQ(bad.error().message, "7 is odd");
  EXPECT_FALSE(bad.error().retry_after_s);
  EXPECT_THROW((void)bad.Value(), std::bad_variant_access);
}

TEST(Expected, MovesItsValueAndItsDiagnosticOut) {
  Expected<std::vector<std::string>> v = std::vector<std::string>{"a", "b"};
  std::vector<std::string> taken = *std::move(v);
  EXPECT_EQ(taken, (std::vector<std::string>{"a", "b"}));
  v->push_back("c");  // operator-> reaches the value
  EXPECT_EQ(v->size(), 1u);

  Expected<std::string> e = Diagnostic{ErrorCode::kUnavailable, "overloaded, retry later", 1};
  Diagnostic d = std::move(e).Error();
  EXPECT_EQ(d, (Diagnostic{ErrorCode::kUnavailable, "overloaded, retry later", 1}));
}

TEST(Expected, VoidCarriesOnlyTheRefusal) {
  Expected<void> ok = Even(4);
  EXPECT_TRUE(ok);
  EXPECT_EQ(MessageOf(ok), "");
  EXPECT_THROW((void)ok.error(), std::bad_optional_access);
  Expected<void> bad = Even(3);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error(), Diagnostic::Invalid("3 is odd"));
  EXPECT_EQ(MessageOf(bad), "3 is odd");
}

TEST(Diagnostic, PrefixedKeepsCodeAndRetryHint) {
  Diagnostic d = Diagnostic{ErrorCode::kUnavailable, "cloud away", 5}.Prefixed("expect: ");
  EXPECT_EQ(d, (Diagnostic{ErrorCode::kUnavailable, "expect: cloud away", 5}));
}

TEST(Diagnostic, EveryCodeHasItsOwnName) {
  std::set<std::string> names;
  for (ErrorCode c : kAllCodes) names.insert(ErrorCodeName(c));
  EXPECT_EQ(names.size(), std::size(kAllCodes));
}

// What a device has always seen for each kind of refusal (docs/device-protocol.md).
TEST(CoapCodeOf, MapsEachCodeToTheCoapResponseCode) {
  const std::vector<std::pair<ErrorCode, uint8_t>> want = {
      {ErrorCode::kInvalid, coap::code::Make(4, 0)},
      {ErrorCode::kUnauthorized, coap::code::Make(4, 1)},
      {ErrorCode::kForbidden, coap::code::Make(4, 3)},
      {ErrorCode::kNotFound, coap::code::Make(4, 4)},
      {ErrorCode::kMethodNotAllowed, coap::code::Make(4, 5)},
      {ErrorCode::kNotAcceptable, coap::code::Make(4, 6)},
      {ErrorCode::kConflict, coap::code::Make(4, 12)},
      {ErrorCode::kTooLarge, coap::code::Make(4, 13)},
      {ErrorCode::kUnsupportedFormat, coap::code::Make(4, 15)},
      {ErrorCode::kWrongHost, coap::code::Make(4, 0)},  // CoAP has no 4.21
      {ErrorCode::kUnavailable, coap::code::Make(5, 3)},
      {ErrorCode::kInternal, coap::code::Make(5, 0)},
  };
  ASSERT_EQ(want.size(), std::size(kAllCodes));
  for (const auto& [code, coap_code] : want) EXPECT_EQ(CoapCodeOf(code), coap_code) << ErrorCodeName(code);
}

// The store keeps store::Status; the device side sees its refusals as these Diagnostics.
TEST(CoapCodeOf, StoreRefusalsBecomeOneDiagnosticEach) {
  EXPECT_EQ(DiagnosticOf(store::Status::Error(store::StatusCode::kRejected, "route devices over max_entries")),
            (Diagnostic{ErrorCode::kUnavailable, "queue full, retry later", 30}));
  EXPECT_EQ(DiagnosticOf(store::Status::Error(store::StatusCode::kFull, "MDB_MAP_FULL")),
            (Diagnostic{ErrorCode::kUnavailable, "storage full, retry later", 60}));
  EXPECT_EQ(DiagnosticOf(store::Status::Error(store::StatusCode::kClosed, "closing")),
            (Diagnostic{ErrorCode::kUnavailable, "gateway stopping", 5}));
  EXPECT_EQ(DiagnosticOf(store::Status::Error(store::StatusCode::kInvalidArgument, "value not finite")),
            Diagnostic::Invalid("value not finite"));
  // A long store message is cut to what fits a diagnostic payload.
  Diagnostic longer = DiagnosticOf(store::Status::Error(store::StatusCode::kInvalidArgument, std::string(300, 'x')));
  EXPECT_EQ(longer.message, std::string(120, 'x'));
  // Anything else is ours, and says nothing of the store's internals.
  for (store::StatusCode c : {store::StatusCode::kIoError, store::StatusCode::kNotFound, store::StatusCode::kConflict}) {
    EXPECT_EQ(DiagnosticOf(store::Status::Error(c, "MDB_CORRUPTED: /var/lib/tether")),
              (Diagnostic{ErrorCode::kInternal, "storage error"}));
  }
}

// What tetherctl and other admin clients have always seen (gateway/admin/admin_server.h).
TEST(HttpStatusOf, MapsEachCodeToTheHttpStatus) {
  const std::vector<std::pair<ErrorCode, int>> want = {
      {ErrorCode::kInvalid, 400},           {ErrorCode::kUnauthorized, 401},      {ErrorCode::kForbidden, 403},
      {ErrorCode::kNotFound, 404},          {ErrorCode::kMethodNotAllowed, 405},  {ErrorCode::kNotAcceptable, 406},
      {ErrorCode::kConflict, 409},          {ErrorCode::kTooLarge, 413},          {ErrorCode::kUnsupportedFormat, 415},
      {ErrorCode::kWrongHost, 421},         {ErrorCode::kUnavailable, 503},       {ErrorCode::kInternal, 500},
  };
  ASSERT_EQ(want.size(), std::size(kAllCodes));
  std::set<int> statuses;
  for (const auto& [code, status] : want) {
    EXPECT_EQ(HttpStatusOf(code), status) << ErrorCodeName(code);
    statuses.insert(HttpStatusOf(code));
  }
  EXPECT_EQ(statuses.size(), std::size(kAllCodes)) << "two codes answer with the same status";
}

}  // namespace
}  // namespace tether
