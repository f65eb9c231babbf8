// The store's on-disk record layout (store/record_codec.h): every record kind decodes to what was
// encoded, and a record that is cut short, carries trailing bytes or claims a string longer than
// itself is refused (false, no crash) rather than read as something else. Records of older
// layouts that the codec documents as readable (sessions before `observers` and the liveness
// checkpoint, route stats of schema 2) decode with the new fields at their defaults.
#include "store/record_codec.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>

namespace tether::store {
namespace {

QueueEntry SampleEntry(bool with_offset) {
  QueueEntry e;
  e.seq = 0x0102030405060708ull;
  e.route = "devs";
  e.device_id = "dev-7";
  e.kind = OpKind::kConditionalSet;
  e.path = "devices/dev-7/log";
  e.payload = std::string("{\"v\":\"a\0b\"}", 11);  // any bytes, NUL included
  e.wall_ms = 1'764'000'000'123;
  e.boottime_ms = -5;  // signed fields keep their sign
  e.boot_id = "6f1c0d3e-boot";
  if (with_offset) e.cloud_offset_ms = -1500;
  return e;
}

void ExpectSameEntry(const QueueEntry& a, const QueueEntry& b) {
  EXPECT_EQ(a.seq, b.seq);
  EXPECT_EQ(a.route, b.route);
  EXPECT_EQ(a.device_id, b.device_id);
  EXPECT_EQ(a.kind, b.kind);
  EXPECT_EQ(a.path, b.path);
  EXPECT_EQ(a.payload, b.payload);
  EXPECT_EQ(a.wall_ms, b.wall_ms);
  EXPECT_EQ(a.boottime_ms, b.boottime_ms);
  EXPECT_EQ(a.boot_id, b.boot_id);
  EXPECT_EQ(a.cloud_offset_ms, b.cloud_offset_ms);
}

SessionRecord SampleSession() {
  SessionRecord s;
  s.session_id = "sess-1";
  s.app_id = "myapp";
  s.device_id = "dev-7";
  s.short_token = "abcdefgh";
  s.long_token = std::string(32, 'L');
  s.bound_address = "127.0.0.9:40000";
  s.created_ms = 1'764'000'000'000;
  s.heartbeat_timeout_ms = 60'000;
  s.last_seen_ms = 1'764'000'030'000;
  s.observers = "obs-bytes";
  s.last_seen_boottime_ms = 123'456;
  s.boot_id = "6f1c0d3e-boot";
  s.last_ping_ms = 1'764'000'029'000;
  return s;
}

// Every strict prefix of `bytes` is refused by `decode`, except the lengths in `accepted`.
template <typename Record, typename Decode>
void ExpectPrefixesRefused(const std::string& bytes, Decode decode, std::initializer_list<size_t> accepted = {}) {
  for (size_t n = 0; n < bytes.size(); ++n) {
    Record r;
    const bool ok = decode(std::string_view(bytes).substr(0, n), &r);
    const bool allowed = std::find(accepted.begin(), accepted.end(), n) != accepted.end();
    EXPECT_EQ(ok, allowed) << "prefix of " << n << " of " << bytes.size() << " bytes";
  }
}

TEST(RecordCodec, QueueEntryRoundTrips) {
  for (bool with_offset : {false, true}) {
    const QueueEntry in = SampleEntry(with_offset);
    QueueEntry out;
    out.cloud_offset_ms = 99;  // decoding resets what the record does not carry
    ASSERT_TRUE(DecodeEntry(EncodeEntry(in), &out));
    ExpectSameEntry(in, out);
  }
}

TEST(RecordCodec, TruncatedOrPaddedQueueEntryIsRefused) {
  const std::string bytes = EncodeEntry(SampleEntry(true));
  ExpectPrefixesRefused<QueueEntry>(bytes, DecodeEntry);
  QueueEntry out;
  EXPECT_FALSE(DecodeEntry(bytes + '\0', &out)) << "trailing bytes";
  // The route's length prefix (after the 8-byte seq) claims more than the record holds.
  std::string corrupt = bytes;
  corrupt.replace(8, 4, "\xff\xff\xff\xff");
  EXPECT_FALSE(DecodeEntry(corrupt, &out));
}

TEST(RecordCodec, DeadLetterRoundTripsAndRefusesTruncation) {
  DeadLetter in;
  in.entry = SampleEntry(false);
  in.reason = "400 Invalid data; couldn't parse JSON object";
  in.http_status = 400;
  in.dead_at_ms = 1'764'000'100'000;
  const std::string bytes = EncodeDeadLetter(in);
  DeadLetter out;
  ASSERT_TRUE(DecodeDeadLetter(bytes, &out));
  ExpectSameEntry(in.entry, out.entry);
  EXPECT_EQ(out.reason, in.reason);
  EXPECT_EQ(out.http_status, in.http_status);
  EXPECT_EQ(out.dead_at_ms, in.dead_at_ms);
  ExpectPrefixesRefused<DeadLetter>(bytes, DecodeDeadLetter);
  EXPECT_FALSE(DecodeDeadLetter(bytes + "x", &out));
}

TEST(RecordCodec, SessionRoundTripsAndReadsOlderLayouts) {
  const SessionRecord in = SampleSession();
  const std::string bytes = EncodeSession(in);
  SessionRecord out;
  ASSERT_TRUE(DecodeSession(bytes, &out));
  EXPECT_EQ(out.session_id, in.session_id);
  EXPECT_EQ(out.app_id, in.app_id);
  EXPECT_EQ(out.device_id, in.device_id);
  EXPECT_EQ(out.short_token, in.short_token);
  EXPECT_EQ(out.long_token, in.long_token);
  EXPECT_EQ(out.bound_address, in.bound_address);
  EXPECT_EQ(out.created_ms, in.created_ms);
  EXPECT_EQ(out.heartbeat_timeout_ms, in.heartbeat_timeout_ms);
  EXPECT_EQ(out.last_seen_ms, in.last_seen_ms);
  EXPECT_EQ(out.observers, in.observers);
  EXPECT_EQ(out.last_seen_boottime_ms, in.last_seen_boottime_ms);
  EXPECT_EQ(out.boot_id, in.boot_id);
  EXPECT_EQ(out.last_ping_ms, in.last_ping_ms);

  // The two older layouts end after last_seen_ms and after observers; their later fields read
  // back empty / 0 even into a record that held values.
  const size_t checkpoint = 8 + (4 + in.boot_id.size()) + 8;
  const size_t before_checkpoint = bytes.size() - checkpoint;
  const size_t before_observers = before_checkpoint - (4 + in.observers.size());
  SessionRecord old = in;
  ASSERT_TRUE(DecodeSession(std::string_view(bytes).substr(0, before_observers), &old));
  EXPECT_EQ(old.last_seen_ms, in.last_seen_ms);
  EXPECT_EQ(old.observers, "");
  EXPECT_EQ(old.last_seen_boottime_ms, 0);
  EXPECT_EQ(old.boot_id, "");
  EXPECT_EQ(old.last_ping_ms, 0);
  old = in;
  ASSERT_TRUE(DecodeSession(std::string_view(bytes).substr(0, before_checkpoint), &old));
  EXPECT_EQ(old.observers, in.observers);
  EXPECT_EQ(old.last_seen_boottime_ms, 0);

  // Any other cut is refused, and so are trailing bytes.
  ExpectPrefixesRefused<SessionRecord>(bytes, DecodeSession, {before_observers, before_checkpoint});
  EXPECT_FALSE(DecodeSession(bytes + "x", &out));
}

TEST(RecordCodec, OnDisconnectOpRoundTripsAndRefusesTruncation) {
  OnDisconnectOp in;
  in.kind = OnDisconnectOp::Kind::kPush;
  in.path = "devices/dev-7/gone";
  in.payload = "{\"at\":{\".sv\":\"timestamp\"}}";
  in.order = 0xfedcba9876543210ull;
  const std::string bytes = EncodeOnDisconnect(in);
  OnDisconnectOp out;
  ASSERT_TRUE(DecodeOnDisconnect(bytes, &out));
  EXPECT_EQ(out.kind, in.kind);
  EXPECT_EQ(out.path, in.path);
  EXPECT_EQ(out.payload, in.payload);
  EXPECT_EQ(out.order, in.order);
  ExpectPrefixesRefused<OnDisconnectOp>(bytes, DecodeOnDisconnect);
  EXPECT_FALSE(DecodeOnDisconnect(bytes + "x", &out));
}

TEST(RecordCodec, RouteStatsRoundTripAndReadSchemaTwo) {
  RouteQueueStats in;
  in.route = "devs";
  in.depth = 1;
  in.bytes = 2;
  in.dropped_oldest = 3;
  in.expired = 4;
  in.rejected = 5;
  in.dead_lettered = 6;
  in.dead_depth = 7;
  in.ttl_age_unknown = 8;
  const std::string bytes = EncodeRouteStats(in);
  RouteQueueStats out;
  ASSERT_TRUE(DecodeRouteStats(bytes, &out));
  EXPECT_EQ(out.route, in.route);
  EXPECT_EQ(out.depth, in.depth);
  EXPECT_EQ(out.bytes, in.bytes);
  EXPECT_EQ(out.dropped_oldest, in.dropped_oldest);
  EXPECT_EQ(out.expired, in.expired);
  EXPECT_EQ(out.rejected, in.rejected);
  EXPECT_EQ(out.dead_lettered, in.dead_lettered);
  EXPECT_EQ(out.dead_depth, in.dead_depth);
  EXPECT_EQ(out.ttl_age_unknown, in.ttl_age_unknown);
  // Schema 2 had no ttl_age_unknown: such a record reads it as 0.
  const size_t schema2 = bytes.size() - 8;
  RouteQueueStats old = in;
  ASSERT_TRUE(DecodeRouteStats(std::string_view(bytes).substr(0, schema2), &old));
  EXPECT_EQ(old.dead_depth, in.dead_depth);
  EXPECT_EQ(old.ttl_age_unknown, 0u);
  ExpectPrefixesRefused<RouteQueueStats>(bytes, DecodeRouteStats, {schema2});
  EXPECT_FALSE(DecodeRouteStats(bytes + "x", &out));
}

TEST(RecordCodec, IntegerKeysSortAsNumbers) {
  std::string a, b;
  PutBe64(&a, 0x00000000000000ffull);
  PutBe64(&b, 0x0000000000000100ull);
  EXPECT_LT(a, b) << "memcmp order is numeric order";
  EXPECT_EQ(GetBe64(b.data()), 0x100u);
  std::string c;
  PutBe32(&c, 0xa1b2c3d4u);
  EXPECT_EQ(GetBe32(c.data()), 0xa1b2c3d4u);
  // One route's queue keys are one contiguous range, ordered by seq.
  EXPECT_LT(QueueKey(1, 255), QueueKey(1, 256));
  EXPECT_LT(QueueKey(1, UINT64_MAX), QueueKey(2, 0));
  EXPECT_EQ(QueueKey(3, 9).size(), 12u);
  EXPECT_EQ(OnDisconnectPrefix("ab"), std::string("\0\x02" "ab", 4));
}

}  // namespace
}  // namespace tether::store
