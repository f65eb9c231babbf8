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
  PutBe64(&out, c.evicted_roots);
  return out;
}

bool DecodeCounters(std::string_view in, StoreCounters* c) {
  if (in.size() != 8 * 8 + 4) return false;
  const char* p = in.data();
  c->next_seq = GetBe64(p), p += 8;
  c->next_op_order = GetBe64(p), p += 8;
  c->next_route_id = GetBe32(p), p += 4;
  c->queue_entries = GetBe64(p), p += 8;
  c->queue_bytes = GetBe64(p), p += 8;
  c->dead_entries = GetBe64(p), p += 8;
  c->tree_bytes = GetBe64(p), p += 8;
  c->tree_version = GetBe64(p), p += 8;
  c->evicted_roots = GetBe64(p);
  return true;
}

std::string EncodeRoot(const RootCounters& r) {
  std::string out;
  PutBe64(&out, r.bytes);
  PutBe64(&out, r.pending);
  return out;
}

bool DecodeRoot(std::string_view in, RootCounters* r) {
  if (in.size() != 16) return false;
  r->bytes = GetBe64(in.data());
  r->pending = GetBe64(in.data() + 8);
  return true;
}

}  // namespace tether::store
