// DeviceApi in process (tests/gateway/device_api_harness.h). Covers what is easier to count here
// than over UDP: the notification fan-out cost, failed responses, the .info/connected observation,
// and the Observe sequence and route checks across a restart.
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#include "gateway/device/device_api.h"

#include <gtest/gtest.h>

#include <cstdio>

#include "gateway/device/device_notifier.h"
#include "gateway/device/persisted_observer.h"
#include "tests/gateway/device_api_harness.h"

namespace tether::testing {
namespace {

// Fan-out to many observers of one path costs one read and one encoding, however many observe.
TEST(DeviceApiTest, ThousandObserversOfOnePathCostOneReadAndOneEncoding) {
  Gateway gw;
  constexpr uint32_t kObservers = 1000;
  // 1,000 devices open sessions at once (the store commits them in groups), then observe.
  for (uint32_t i = 0; i < kObservers; ++i) {
    const uint16_t mid = static_cast<uint16_t>(2 * i + 1);
    gw.endpoint().HandleDatagram(0, Peer(i), Build{.code = coap::code::kPost, .mid = mid, .token = Gateway::Token(mid)}
                                                  .Path(".cs").done());
  }
  std::vector<std::string> cs(kObservers);
  ASSERT_TRUE(gw.Pump([&] {
    for (uint32_t i = 0; i < kObservers; ++i) {
      if (!cs[i].empty()) continue;
      const Packet* r = gw.ReplyTo(Peer(i), Gateway::Token(2 * i + 1));
      if (!r) return false;
      cs[i] = Gateway::ShortToken(r->payload());
    }
    return true;
  }));
  for (uint32_t i = 0; i < kObservers; ++i) {
    ASSERT_EQ(cs[i].size(), 8u) << i;
    const Packet* r = gw.Ask(Peer(i), Request(coap::code::kGet, "room", cs[i], static_cast<uint16_t>(2 * i + 2))
                                          .OptUint(coap::opt::kObserve, 0));
    ASSERT_TRUE(r && r->m.UintOption(coap::opt::kObserve)) << i << ": " << (r ? r->payload() : "no reply");
  }
  const std::string writer = gw.Open(Peer(5000), 9000);
  ASSERT_EQ(writer.size(), 8u);
  const DeviceApiCounters before = gw.api().counters();
  const size_t mark = gw.sent().size();
  const auto t0 = std::chrono::steady_clock::now();
  Build put = Request(coap::code::kPut, "room/t", writer, 9001);
  put.payload = {0x15};  // 21
  ASSERT_TRUE(gw.Ask(Peer(5000), put));
  auto notified = [&] {
    size_t n = 0;
    for (size_t i = mark; i < gw.sent().size(); ++i) n += gw.sent()[i].p->m.UintOption(coap::opt::kObserve).has_value();
    return n;
  };
  ASSERT_TRUE(gw.Pump([&] { return notified() == kObservers; }));
  const auto took = std::chrono::steady_clock::now() - t0;
  const DeviceApiCounters& after = gw.api().counters();
  EXPECT_EQ(after.notifications - before.notifications, kObservers);
  EXPECT_EQ(after.notify_reads - before.notify_reads, 1u) << "one store read for the observed path";
  EXPECT_EQ(after.notify_encodes - before.notify_encodes, 1u) << "one CBOR encoding for all observers";
  std::printf("fan-out: write + %u notifications in %lld us\n", kObservers,
              static_cast<long long>(std::chrono::duration_cast<std::chrono::microseconds>(took).count()));
}

// A separate response the device never acknowledges is counted (tether_device_events_total).
TEST(DeviceApiTest, UnacknowledgedSeparateResponsesAreCounted) {
  coap::EndpointOptions eo;
  eo.separate_ack_after_ms = 0;  // every answer after a store commit goes out as a separate CON
  eo.ack_timeout_ms = 10;
  eo.ack_random_factor = 1.0;
  eo.max_retransmit = 1;
  Gateway gw(eo);
  // A write is answered after its store commit, as a separate CON the "device" never ACKs. (An
  // anonymous open is answered at once: nothing is committed until the device uses the session.)
  const std::string cs = gw.Open(Peer(1), 1);
  ASSERT_EQ(cs.size(), 8u);
  Build put = Request(coap::code::kPut, "k", cs, 2);
  put.payload = {0x01};
  ASSERT_TRUE(gw.Send(Peer(1), put.done(), [&] { return gw.api().counters().responses_failed >= 1; }));
  EXPECT_EQ(gw.api().counters().responses_failed, 1u);
  size_t cons = 0;
  for (const Sent& s : gw.sent()) cons += s.p->m.type == coap::Type::kCon;
  EXPECT_EQ(cons, 2u) << "sent and retransmitted once";
}

// .info/connected is observable: it flips with the cloud link, and only on change.
TEST(DeviceApiTest, InfoConnectedObserversHearTheCloudLink) {
  Gateway gw;
  const std::string cs = gw.Open(Peer(1), 1);
  ASSERT_EQ(cs.size(), 8u);
  const Packet* reg = gw.Ask(Peer(1), Request(coap::code::kGet, ".info/connected", cs, 2).OptUint(coap::opt::kObserve, 0));
  ASSERT_TRUE(reg && reg->m.UintOption(coap::opt::kObserve));
  EXPECT_EQ(reg->payload(), "\xf4");
  auto last_notification = [&]() -> const Packet* {
    for (size_t i = gw.sent().size(); i-- > 0;) {
      if (gw.sent()[i].p->m.UintOption(coap::opt::kObserve)) return gw.sent()[i].p.get();
    }
    return nullptr;
  };
  size_t mark = gw.sent().size();
  gw.api().SetCloudLink(true, 12);
  ASSERT_EQ(gw.sent().size(), mark + 1);
  EXPECT_EQ(last_notification()->payload(), "\xf5");
  gw.api().SetCloudLink(true, 12);
  EXPECT_EQ(gw.sent().size(), mark + 1) << "no change, no notification";
  gw.api().SetCloudLink(false, 12);
  ASSERT_EQ(gw.sent().size(), mark + 2);
  EXPECT_EQ(last_notification()->payload(), "\xf4");
}

// The restart design of gateway/device/persisted_observer.h, step by step.
TEST(DeviceApiTest, RestoredObservationsContinueAheadOfTheirCheckpoint) {
  Gateway gw;
  const Address dev = Peer(7), writer = Peer(8);
  const std::string cs = gw.Open(dev, 1), wcs = gw.Open(writer, 100);
  ASSERT_EQ(cs.size(), 8u);
  const Packet* reg = gw.Ask(dev, Request(coap::code::kGet, "room", cs, 2).OptUint(coap::opt::kObserve, 0));
  ASSERT_TRUE(reg);
  uint32_t last_seq = *reg->m.UintOption(coap::opt::kObserve);
  for (uint16_t i = 0; i < 5; ++i) {
    Build put = Request(coap::code::kPut, "room", wcs, static_cast<uint16_t>(101 + i));
    put.payload = {static_cast<uint8_t>(i)};
    const size_t mark = gw.sent().size();
    ASSERT_TRUE(gw.Ask(writer, put));
    ASSERT_TRUE(gw.Pump([&] { return gw.sent().size() > mark + 1; }));
    last_seq = *gw.sent().back().p->m.UintOption(coap::opt::kObserve);
  }
  // Persisted: the registration's checkpoint (the 5 notifications since are within 2^20).
  auto record = [&] {
    for (const auto& r : gw.store().sessions().ListAll()) {
      if (r.short_token == cs) return r;
    }
    return store::SessionRecord{};
  };
  ASSERT_TRUE(gw.Pump([&] { return !record().observers.empty(); }));
  std::vector<PersistedObserver> saved = DecodeObservers(record().observers);
  ASSERT_EQ(saved.size(), 1u);
  EXPECT_EQ(saved[0].device_path, "room");
  EXPECT_EQ(saved[0].wire.peer, dev);
  EXPECT_EQ(saved[0].wire.token, reg->m.token);
  const uint32_t checkpoint = saved[0].wire.seq;
  EXPECT_LE(checkpoint, last_seq);

  const size_t mark = gw.sent().size();
  gw.Reopen();
  // The first notification after the restart: the current snapshot, Observe = checkpoint + 2^22 + 1.
  ASSERT_TRUE(gw.Pump([&] {
    const auto& s = gw.sent();
    return s.size() > mark && s.back().to == dev && s.back().p->m.UintOption(coap::opt::kObserve);
  }));
  const Packet& first = *gw.sent().back().p;
  EXPECT_EQ(first.payload(), std::string(1, '\x04'));
  const uint32_t seq = *first.m.UintOption(coap::opt::kObserve);
  EXPECT_EQ(seq, (checkpoint + kSeqRestartJump + 1) & 0xFFFFFF);
  EXPECT_GT(seq, last_seq);
  EXPECT_LT(seq - last_seq, 1u << 23) << "newer in RFC 7641 serial arithmetic";
  EXPECT_EQ(gw.api().counters().observers_restored, 1u);
  // The advanced checkpoint is what the store holds now: a second restart jumps again from it.
  std::vector<PersistedObserver> after = DecodeObservers(record().observers);
  ASSERT_EQ(after.size(), 1u);
  EXPECT_EQ(after[0].wire.seq, (checkpoint + kSeqRestartJump) & 0xFFFFFF);
}

// A burst of observe registrations (a fleet re-observing after an outage) rewrites every
// session's record. At most SessionKeeper::kRecordWritesInFlight of those writes go to the store
// at once; the others wait their turn, none is lost, and a graceful stop writes the waiting ones.
TEST(DeviceApiTest, ABurstOfObservationsWritesRecordsInTurnAndLosesNone) {
  constexpr size_t kInFlight = SessionKeeper::kRecordWritesInFlight;
  constexpr uint32_t kDevices = kInFlight + 44;
  Gateway gw;
  std::vector<std::string> cs(kDevices);
  uint16_t mid = 1;
  for (uint32_t d = 0; d < kDevices; ++d) {
    cs[d] = gw.Open(Peer(d), mid++);
    ASSERT_EQ(cs[d].size(), 8u);
    ASSERT_TRUE(gw.Ask(Peer(d), Request(coap::code::kGet, "x", cs[d], mid++)));  // confirms: the record is written
  }
  auto observing = [&](size_t n) {  // sessions whose record holds n observations
    size_t count = 0;
    for (const auto& r : gw.store().sessions().ListAll()) count += DecodeObservers(r.observers).size() == n;
    return count;
  };
  ASSERT_TRUE(gw.Pump([&] { return observing(0) == kDevices; }));
  auto burst = [&](const std::string& path) {  // every device observes path, without the loop running between
    for (uint32_t d = 0; d < kDevices; ++d) {
      gw.endpoint().HandleDatagram(0, Peer(d), Request(coap::code::kGet, path, cs[d], mid++).OptUint(coap::opt::kObserve, 0).done());
    }
  };
  burst("a");
  EXPECT_EQ(gw.api().session_records_waiting(), kDevices - kInFlight) << "the rest wait their turn";
  EXPECT_TRUE(gw.Pump([&] { return gw.api().session_records_waiting() == 0 && observing(1) == kDevices; }))
      << observing(1) << " of " << kDevices << " records hold the observation";

  burst("b");
  EXPECT_EQ(gw.api().session_records_waiting(), kDevices - kInFlight);
  burst("c");  // changes records being written (owed once more) and waiting ones (still once)
  EXPECT_EQ(gw.api().session_records_waiting(), kDevices - kInFlight);
  gw.Reopen();  // a graceful stop right away: every record owed is written
  EXPECT_EQ(observing(3), kDevices);
}

// A session's record names its observations' current Observe values when it has a few (encoded
// each time the record is written) and copies the entries it keeps when it has many
// (DeviceNotifier::kKeepEntriesFrom): theirs may lag, by fewer than kSeqCheckpointEvery.
TEST(DeviceApiTest, ARecordWithFewObservationsNamesTheirCurrentObserveValues) {
  Gateway gw;
  const Address dev = Peer(7), writer = Peer(8);
  const std::string cs = gw.Open(dev, 1), wcs = gw.Open(writer, 100);
  ASSERT_EQ(cs.size(), 8u);
  uint16_t mid = 2;
  auto observe = [&](const std::string& path) {
    return gw.Ask(dev, Request(coap::code::kGet, path, cs, mid++).OptUint(coap::opt::kObserve, 0)) != nullptr;
  };
  uint16_t wmid = 101;
  auto change_room = [&](uint8_t v) {  // returns the Observe value of the notification it causes
    Build put = Request(coap::code::kPut, "room", wcs, wmid++);
    put.payload = {v};
    const size_t mark = gw.sent().size();
    EXPECT_TRUE(gw.Ask(writer, put));
    EXPECT_TRUE(gw.Pump([&] { return gw.sent().size() > mark + 1; }));
    return *gw.sent().back().p->m.UintOption(coap::opt::kObserve);
  };
  auto saved_room = [&](size_t observations) -> int64_t {  // the room entry once the record has them all
    for (const auto& r : gw.store().sessions().ListAll()) {
      if (r.short_token != cs) continue;
      std::vector<PersistedObserver> o = DecodeObservers(r.observers);
      if (o.size() != observations) return -1;
      for (const PersistedObserver& e : o) {
        if (e.device_path == "room") return e.wire.seq;
      }
    }
    return -1;
  };
  ASSERT_TRUE(observe("room"));
  ASSERT_TRUE(gw.Pump([&] { return saved_room(1) >= 0; }));
  uint32_t last = 0;
  for (uint8_t i = 0; i < 5; ++i) last = change_room(i);
  ASSERT_TRUE(observe("hall"));  // the record is written again
  ASSERT_TRUE(gw.Pump([&] { return saved_room(2) >= 0; }));
  EXPECT_EQ(saved_room(2), last) << "encoded when written: the current value";

  // Many observations: written once with their entries kept, then copied.
  size_t n = 2;
  for (; n < DeviceNotifier::kKeepEntriesFrom; ++n) ASSERT_TRUE(observe("p" + std::to_string(n)));
  ASSERT_TRUE(gw.Pump([&] { return saved_room(n) >= 0; }));
  const int64_t kept = saved_room(n);
  EXPECT_EQ(kept, last);
  for (uint8_t i = 0; i < 3; ++i) last = change_room(static_cast<uint8_t>(10 + i));
  ASSERT_TRUE(observe("p" + std::to_string(n++)));
  ASSERT_TRUE(gw.Pump([&] { return saved_room(n) >= 0; }));
  EXPECT_EQ(saved_room(n), kept) << "the kept entry is copied";
  EXPECT_LT(saved_room(n), last);
}

// Routes tightened across a restart: a persisted observation the device may no longer read is
// ended with a final 4.03 (no Observe option) instead of being restored or silently dropped.
TEST(DeviceApiTest, RestoredObservationsAreCheckedAgainstTheRoutesInForce) {
  Gateway gw;
  const std::string cs = gw.Open(Peer(1), 1);
  ASSERT_EQ(cs.size(), 8u);
  const Packet* secret = gw.Ask(Peer(1), Request(coap::code::kGet, "secret/x", cs, 2).OptUint(coap::opt::kObserve, 0));
  const Packet* open = gw.Ask(Peer(1), Request(coap::code::kGet, "open/x", cs, 3).OptUint(coap::opt::kObserve, 0));
  ASSERT_TRUE(secret && open);
  const Bytes secret_token = Gateway::Token(2), open_token = Gateway::Token(3);
  auto persisted = [&] {
    for (const auto& r : gw.store().sessions().ListAll()) return DecodeObservers(r.observers).size();
    return size_t{0};
  };
  ASSERT_TRUE(gw.Pump([&] { return persisted() == 2; }));
  const size_t mark = gw.sent().size();
  gw.Reopen(
      "device:\n  heartbeat_target: 20s\n  session_timeout: 60s\n"
      "apps:\n  - id: myapp\n    default: true\n"
      "routes:\n  - { name: open, app: myapp, match: \"open/**\" }\n");
  auto to = [&](const Bytes& token) -> const Packet* {
    for (size_t i = mark; i < gw.sent().size(); ++i) {
      const Packet& p = *gw.sent()[i].p;
      if (Bytes(p.m.token.view().begin(), p.m.token.view().end()) == token) return &p;
    }
    return nullptr;
  };
  ASSERT_TRUE(gw.Pump([&] { return to(secret_token) && to(open_token); }));
  EXPECT_EQ(to(secret_token)->m.code, kForbidden);
  EXPECT_FALSE(to(secret_token)->m.UintOption(coap::opt::kObserve)) << "the observation ends";
  EXPECT_EQ(to(secret_token)->payload(), "read not allowed");
  EXPECT_EQ(to(open_token)->m.code, coap::code::kContent) << "the readable one is restored";
  EXPECT_EQ(gw.api().counters().observers_restored, 1u);
  EXPECT_TRUE(gw.Pump([&] { return persisted() == 1; })) << "the ended one is gone from the store";
}

TEST(PersistedObserverTest, RoundTripAndUnreadableEntries) {
  PersistedObserver a;
  a.device_path = "rooms?orderBy=\"$key\"&startAt=\"a&b\"";
  a.cloud_path = "sites/s1/rooms";
  Query q;
  q.order = Query::Order::kKey;
  q.start_at = Json("a&b");
  q.limit_first = 3;
  a.query = std::make_shared<const Query>(q);
  a.native = true;
  a.wire.peer.family = AF_INET6;
  a.wire.peer.ip[15] = 1;
  a.wire.peer.port = 40000;
  a.wire.socket = 1;
  a.wire.token.len = 4;
  a.wire.token.bytes = {1, 2, 3, 4};
  a.wire.seq = 0xABCDEF;
  a.wire.resource = 0xFFFFFFFFFFFFFFF1ull;
  a.wire.unasked_blocks = true;
  PersistedObserver b;
  b.device_path = b.cloud_path = ".info/connected";
  b.json = true;
  b.wire.peer.family = AF_INET;
  b.wire.peer.ip[0] = 10;
  b.wire.peer.port = 5683;
  std::string blob = EncodeObservers({a, b});
  size_t skipped = 9;
  std::vector<PersistedObserver> back = DecodeObservers(blob, &skipped);
  EXPECT_EQ(skipped, 0u);
  ASSERT_EQ(back.size(), 2u);
  EXPECT_EQ(back[0].device_path, a.device_path);
  EXPECT_EQ(back[0].cloud_path, a.cloud_path);
  // Readers before 2026-12-07 require the key (the route itself is resolved again at restore).
  EXPECT_NE(blob.find("\"route\":\"\""), std::string::npos) << blob;
  ASSERT_TRUE(back[0].query);
  EXPECT_EQ(back[0].query->Canonical(), q.Canonical());
  EXPECT_TRUE(back[0].native);
  EXPECT_FALSE(back[0].json);
  EXPECT_EQ(back[0].wire.peer, a.wire.peer);
  EXPECT_EQ(back[0].wire.socket, 1u);
  EXPECT_EQ(back[0].wire.token, a.wire.token);
  EXPECT_EQ(back[0].wire.seq, 0xABCDEFu);
  EXPECT_EQ(back[0].wire.resource, a.wire.resource);
  EXPECT_TRUE(back[0].wire.unasked_blocks);
  EXPECT_FALSE(back[1].query);
  EXPECT_TRUE(back[1].json);
  EXPECT_EQ(back[1].wire.token.len, 0);
  EXPECT_TRUE(EncodeObservers({}).empty());
  EXPECT_TRUE(DecodeObservers("").empty());
  // An entry is kept with its observer for the session's life: no append slack (≈ 480 B for 270).
  const std::string entry = EncodeObserver(b);
  EXPECT_LT(entry.capacity(), entry.size() + 16) << entry.size();
  // Damaged entries are skipped and counted; the readable ones survive.
  Json j = Json::parse(blob);
  j[1]["token"] = "zz";
  j.push_back(Json{{"dev", 1}});
  back = DecodeObservers(j.dump(), &skipped);
  EXPECT_EQ(skipped, 2u);
  ASSERT_EQ(back.size(), 1u);
  EXPECT_EQ(back[0].device_path, a.device_path);
  EXPECT_TRUE(DecodeObservers("not json", &skipped).empty());
  EXPECT_EQ(skipped, 1u);
}

}  // namespace
}  // namespace tether::testing
