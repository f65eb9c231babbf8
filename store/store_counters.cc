#include "store/store_counters.h"

#include "store/record_codec.h"

namespace tether::store {

std::string EncodeCounters(const StoreCounters& c) {
  std::string out;
  PutBe64(&out, c.next_seq);
  PutBe64(&out, c.next_op_order);
  PutBe32(&out, c.next_route_id);
  PutBe64(&out, c.queue_entries);
  PutBe64(&out, c.queue_bytes);
  PutBe64(&out, c.dead_entries);
  PutBe64(&out, c.tree_bytes);
  PutBe64(&out, c.tree_version);
  PutBe64(&out, c.evictions);
  PutBe64(&out, c.lru_clock);
  return out;
}

bool DecodeCounters(std::string_view in, StoreCounters* c) {
  constexpr size_t kSchema2 = 8 * 8 + 4;
  if (in.size() != kSchema2 && in.size() != kSchema2 + 8) return false;
  const char* p = in.data();
  c->next_seq = GetBe64(p), p += 8;
  c->next_op_order = GetBe64(p), p += 8;
  c->next_route_id = GetBe32(p), p += 4;
  c->queue_entries = GetBe64(p), p += 8;
  c->queue_bytes = GetBe64(p), p += 8;
  c->dead_entries = GetBe64(p), p += 8;
  c->tree_bytes = GetBe64(p), p += 8;
  c->tree_version = GetBe64(p), p += 8;
  c->evictions = GetBe64(p), p += 8;
  c->lru_clock = in.size() == kSchema2 ? 0 : GetBe64(p);
  return true;
}

std::string EncodeUnit(const UnitRecord& u) {
  std::string out;
  PutBe64(&out, u.bytes);
  PutBe64(&out, u.last_use);
  out.push_back(u.parked ? 1 : 0);
  return out;
}

bool DecodeUnit(std::string_view in, UnitRecord* u) {
  if (in.size() != 17) return false;
  u->bytes = GetBe64(in.data());
  u->last_use = GetBe64(in.data() + 8);
  u->parked = in[16] != 0;
  return true;
}

std::string LruKey(uint64_t last_use, std::string_view unit) {
  std::string k;
  PutBe64(&k, last_use);
  k.append(unit);
  return k;
}

}  // namespace tether::store
