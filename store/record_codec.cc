#include "store/record_codec.h"

#include <cstring>

#include "store/lmdb_env.h"
#include "store/tree_path.h"

namespace tether::store {
namespace {

class Writer {
 public:
  void U8(uint8_t v) { out_.push_back(static_cast<char>(v)); }
  void U32(uint32_t v) { PutBe32(&out_, v); }
  void U64(uint64_t v) { PutBe64(&out_, v); }
  void I64(int64_t v) { U64(static_cast<uint64_t>(v)); }
  void Str(std::string_view s) {
    U32(static_cast<uint32_t>(s.size()));
    out_.append(s);
  }
  std::string Take() { return std::move(out_); }

 private:
  std::string out_;
};

// Reader: every accessor fails soft; ok() is false once any read ran past the end.
class Reader {
 public:
  explicit Reader(std::string_view in) : in_(in) {}
  uint8_t U8() {
    if (!Need(1)) return 0;
    uint8_t v = static_cast<uint8_t>(in_[0]);
    in_.remove_prefix(1);
    return v;
  }
  uint32_t U32() {
    if (!Need(4)) return 0;
    uint32_t v = GetBe32(in_.data());
    in_.remove_prefix(4);
    return v;
  }
  uint64_t U64() {
    if (!Need(8)) return 0;
    uint64_t v = GetBe64(in_.data());
    in_.remove_prefix(8);
    return v;
  }
  int64_t I64() { return static_cast<int64_t>(U64()); }
  std::string Str() {
    uint32_t n = U32();
    if (!Need(n)) return {};
    std::string s(in_.substr(0, n));
    in_.remove_prefix(n);
    return s;
  }
  bool ok() const { return ok_; }
  bool done() const { return ok_ && in_.empty(); }

 private:
  bool Need(size_t n) {
    if (in_.size() < n) ok_ = false;
    return ok_;
  }
  std::string_view in_;
  bool ok_ = true;
};

void WriteEntry(Writer& w, const QueueEntry& e) {
  w.U64(e.seq);
  w.Str(e.route);
  w.Str(e.device_id);
  w.U8(static_cast<uint8_t>(e.kind));
  w.Str(e.path);
  w.Str(e.payload);
  w.I64(e.wall_ms);
  w.I64(e.boottime_ms);
  w.Str(e.boot_id);
  w.U8(e.cloud_offset_ms ? 1 : 0);
  if (e.cloud_offset_ms) w.I64(*e.cloud_offset_ms);
}

void ReadEntry(Reader& r, QueueEntry* e) {
  e->seq = r.U64();
  e->route = r.Str();
  e->device_id = r.Str();
  e->kind = static_cast<OpKind>(r.U8());
  e->path = r.Str();
  e->payload = r.Str();
  e->wall_ms = r.I64();
  e->boottime_ms = r.I64();
  e->boot_id = r.Str();
  if (r.U8()) {
    e->cloud_offset_ms = r.I64();
  } else {
    e->cloud_offset_ms.reset();
  }
}

}  // namespace

void PutBe32(std::string* out, uint32_t v) {
  char b[4];
  for (int i = 3; i >= 0; --i, v >>= 8) b[i] = static_cast<char>(v & 0xff);
  out->append(b, 4);
}

void PutBe64(std::string* out, uint64_t v) {
  char b[8];
  for (int i = 7; i >= 0; --i, v >>= 8) b[i] = static_cast<char>(v & 0xff);
  out->append(b, 8);
}

uint32_t GetBe32(const char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

uint64_t GetBe64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

std::string QueueKey(uint32_t route_id, uint64_t seq) {
  std::string k;
  k.reserve(12);
  PutBe32(&k, route_id);
  PutBe64(&k, seq);
  return k;
}

bool PendingIndexKey(std::string_view tree_path, uint64_t seq, std::string* key) {
  std::vector<std::string> segs;
  std::string error;
  if (!ParseTreePath(tree_path, &segs, &error)) return false;
  *key = JoinKey(segs, segs.size());
  key->push_back('\0');
  PutBe64(key, seq);
  return key->size() <= kMaxLmdbKeyBytes;
}

std::string OnDisconnectPrefix(std::string_view session_id) {
  std::string k;
  k.push_back(static_cast<char>((session_id.size() >> 8) & 0xff));
  k.push_back(static_cast<char>(session_id.size() & 0xff));
  k.append(session_id);
  return k;
}

std::string EncodeEntry(const QueueEntry& e) {
  Writer w;
  WriteEntry(w, e);
  return w.Take();
}

bool DecodeEntry(std::string_view in, QueueEntry* e) {
  Reader r(in);
  ReadEntry(r, e);
  return r.done();
}

std::string EncodeDeadLetter(const DeadLetter& d) {
  Writer w;
  WriteEntry(w, d.entry);
  w.Str(d.reason);
  w.I64(d.http_status);
  w.I64(d.dead_at_ms);
  return w.Take();
}

bool DecodeDeadLetter(std::string_view in, DeadLetter* d) {
  Reader r(in);
  ReadEntry(r, &d->entry);
  d->reason = r.Str();
  d->http_status = static_cast<int>(r.I64());
  d->dead_at_ms = r.I64();
  return r.done();
}

std::string EncodeSession(const SessionRecord& s) {
  Writer w;
  w.Str(s.session_id);
  w.Str(s.app_id);
  w.Str(s.device_id);
  w.Str(s.short_token);
  w.Str(s.long_token);
  w.Str(s.bound_address);
  w.I64(s.created_ms);
  w.I64(s.heartbeat_timeout_ms);
  w.I64(s.last_seen_ms);
  w.Str(s.observers);
  w.I64(s.last_seen_boottime_ms);
  w.Str(s.boot_id);
  w.I64(s.last_ping_ms);
  return w.Take();
}

bool DecodeSession(std::string_view in, SessionRecord* s) {
  Reader r(in);
  s->session_id = r.Str();
  s->app_id = r.Str();
  s->device_id = r.Str();
  s->short_token = r.Str();
  s->long_token = r.Str();
  s->bound_address = r.Str();
  s->created_ms = r.I64();
  s->heartbeat_timeout_ms = r.I64();
  s->last_seen_ms = r.I64();
  s->observers.clear();
  s->last_seen_boottime_ms = 0;
  s->boot_id.clear();
  s->last_ping_ms = 0;
  if (r.ok() && !r.done()) s->observers = r.Str();  // absent in records of older versions
  if (r.ok() && !r.done()) {                        // liveness checkpoint: likewise
    s->last_seen_boottime_ms = r.I64();
    s->boot_id = r.Str();
    s->last_ping_ms = r.I64();
  }
  return r.done();
}

std::string EncodeOnDisconnect(const OnDisconnectOp& op) {
  Writer w;
  w.U8(static_cast<uint8_t>(op.kind));
  w.Str(op.path);
  w.Str(op.payload);
  w.U64(op.order);
  return w.Take();
}

bool DecodeOnDisconnect(std::string_view in, OnDisconnectOp* op) {
  Reader r(in);
  op->kind = static_cast<OnDisconnectOp::Kind>(r.U8());
  op->path = r.Str();
  op->payload = r.Str();
  op->order = r.U64();
  return r.done();
}

std::string EncodeRouteStats(const RouteQueueStats& s) {
  Writer w;
  w.Str(s.route);
  w.U64(s.depth);
  w.U64(s.bytes);
  w.U64(s.dropped_oldest);
  w.U64(s.expired);
  w.U64(s.rejected);
  w.U64(s.dead_lettered);
  w.U64(s.dead_depth);
  w.U64(s.ttl_age_unknown);
  return w.Take();
}

bool DecodeRouteStats(std::string_view in, RouteQueueStats* s) {
  Reader r(in);
  s->route = r.Str();
  s->depth = r.U64();
  s->bytes = r.U64();
  s->dropped_oldest = r.U64();
  s->expired = r.U64();
  s->rejected = r.U64();
  s->dead_lettered = r.U64();
  s->dead_depth = r.U64();
  s->ttl_age_unknown = r.done() ? 0 : r.U64();  // absent in records of schema 2
  return r.done();
}

}  // namespace tether::store
