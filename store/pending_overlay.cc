#include "store/pending_overlay.h"

#include <cmath>
#include <cstdint>
#include <optional>

#include "store/lmdb_env.h"
#include "store/record_codec.h"
#include "store/tree_path.h"

namespace tether::store {
namespace {

std::string Child(const std::string& base, std::string_view rel) {
  if (base.empty()) return std::string(rel);
  if (rel.empty()) return base;
  std::string out = base;
  out += '/';
  out += rel;
  return out;
}

bool IsTimestamp(const nlohmann::json& v) {
  if (!v.is_object() || v.size() != 1) return false;
  auto it = v.find(".sv");
  return it != v.end() && it->is_string() && it->get_ref<const std::string&>() == "timestamp";
}

bool IsIncrement(const nlohmann::json& v) {
  if (!v.is_object() || v.size() != 1) return false;
  auto it = v.find(".sv");
  return it != v.end() && it->is_object() && it->size() == 1 && it->contains("increment") &&
         (*it)["increment"].is_number();
}

// Server values inside `v` (written at tree key `key`) as the cloud will resolve them.
void Resolve(MDB_txn* txn, MDB_dbi tree, const std::string& key, int64_t event_ms, nlohmann::json* v) {
  if (IsTimestamp(*v)) {
    *v = event_ms;
    return;
  }
  if (IsIncrement(*v)) {  // a sum that is not finite: the cloud refuses it, its number stays
    nlohmann::json current = LeafAt(txn, tree, key);
    *v = IncrementSum(current, (*v)[".sv"]["increment"]).value_or(current);
    return;
  }
  if (v->is_object()) {
    if (v->contains(".sv")) {  // a server value this build does not know: nothing to show
      *v = nullptr;
      return;
    }
    for (auto it = v->begin(); it != v->end(); ++it) Resolve(txn, tree, Child(key, it.key()), event_ms, &*it);
  } else if (v->is_array()) {
    for (size_t i = 0; i < v->size(); ++i) Resolve(txn, tree, Child(key, std::to_string(i)), event_ms, &(*v)[i]);
  }
}

// The part of `v` (the value at some key) at relative key `rel` ("x/y"): *part, null if absent.
// If a plain value (or a server value) stands on the way, *cut_at is the length of rel's prefix
// where it stands ("" = v itself) and *cut the value.
void Below(const nlohmann::json& v, std::string_view rel, nlohmann::json* part, std::optional<size_t>* cut_at,
           nlohmann::json* cut) {
  *part = nullptr;
  const nlohmann::json* cur = &v;
  size_t i = 0;
  while (i <= rel.size()) {
    if (IsTimestamp(*cur) || IsIncrement(*cur) || (!cur->is_object() && !cur->is_array())) {
      if (!cur->is_null()) {
        *cut_at = i == 0 ? 0 : i - 1;
        *cut = *cur;
      }
      return;
    }
    size_t j = rel.find('/', i);
    if (j == std::string_view::npos) j = rel.size();
    std::string seg(rel.substr(i, j - i));
    if (cur->is_object()) {
      auto it = cur->find(seg);
      if (it == cur->end()) return;
      cur = &*it;
    } else {
      if (seg.empty() || seg.size() > 9 || seg.find_first_not_of("0123456789") != std::string::npos) return;
      size_t n = std::stoul(seg);
      if (n >= cur->size()) return;
      cur = &(*cur)[n];
    }
    i = j + 1;
  }
  *part = *cur;
}

}  // namespace

nlohmann::json ReadSubtree(MDB_txn* txn, MDB_dbi tree, const std::string& key) {
  nlohmann::json out;
  MDB_val k = Val(key), v;
  if (!key.empty() && mdb_get(txn, tree, &k, &v) == 0) return DecodeLeaf(View(v));
  const std::string prefix = key.empty() ? std::string() : key + "/";
  Cursor c(txn, tree);
  k = Val(prefix);
  int rc = prefix.empty() ? mdb_cursor_get(c.get(), &k, &v, MDB_FIRST) : mdb_cursor_get(c.get(), &k, &v, MDB_SET_RANGE);
  for (; rc == 0; rc = mdb_cursor_get(c.get(), &k, &v, MDB_NEXT)) {
    std::string_view found = View(k);
    if (found.substr(0, prefix.size()) != prefix) break;
    if (out.is_null()) out = nlohmann::json::object();
    InsertLeaf(&out, found.substr(prefix.size()), DecodeLeaf(View(v)));
  }
  return out;
}

nlohmann::json LeafAt(MDB_txn* txn, MDB_dbi tree, const std::string& key) {
  MDB_val k = Val(key), v;
  if (key.empty() || mdb_get(txn, tree, &k, &v) != 0) return nullptr;
  return DecodeLeaf(View(v));
}

std::optional<nlohmann::json> IncrementSum(const nlohmann::json& current, const nlohmann::json& by) {
  if (!by.is_number()) return by;
  const nlohmann::json base = current.is_number() ? current : nlohmann::json(0);
  auto as_int64 = [](const nlohmann::json& n, int64_t* out) {
    if (n.is_number_unsigned()) {
      if (n.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) return false;
    } else if (!n.is_number_integer()) {
      return false;
    }
    *out = n.get<int64_t>();
    return true;
  };
  int64_t x = 0, y = 0, sum = 0;
  if (as_int64(base, &x) && as_int64(by, &y) && !__builtin_add_overflow(x, y, &sum)) return sum;
  const double d = base.get<double>() + by.get<double>();
  if (!std::isfinite(d)) return std::nullopt;
  return d;
}

Status ReapplyWithin(MDB_txn* txn, MDB_dbi tree, const QueueEntry& e, const std::string& key, const TreeSetter& set) {
  std::vector<std::string> segs;
  std::string error;
  if (!ParseTreePath(e.path, &segs, &error)) return Status::Ok();
  const std::string at = JoinKey(segs, segs.size());
  nlohmann::json payload = nlohmann::json::parse(e.payload, nullptr, false);
  if (payload.is_discarded()) return Status::Ok();
  const int64_t event_ms = e.wall_ms + e.cloud_offset_ms.value_or(0);
  // One value written at tree key `target`, restricted to the subtree at `key`.
  auto set_within = [&](const std::string& target, const nlohmann::json& value) -> Status {
    if (KeyWithin(target, key)) {
      nlohmann::json part = value;
      Resolve(txn, tree, target, event_ms, &part);
      return set(target, part);
    }
    if (!KeyWithin(key, target)) return Status::Ok();
    const std::string_view rel = std::string_view(key).substr(target.empty() ? 0 : target.size() + 1);
    nlohmann::json part, cut;
    std::optional<size_t> cut_at;
    Below(value, rel, &part, &cut_at, &cut);
    Resolve(txn, tree, key, event_ms, &part);
    Status s = set(key, part);
    if (!s.ok() || !cut_at) return s;
    // The write put a plain value above `key` (the cloud's data there just replaced it): it is
    // back unless a later write, or other cloud data, put children there meanwhile.
    const std::string at_cut = Child(target, rel.substr(0, *cut_at));
    if (!ReadSubtree(txn, tree, at_cut).is_null()) return Status::Ok();
    Resolve(txn, tree, at_cut, event_ms, &cut);
    return set(at_cut, cut);
  };
  switch (e.kind) {
    case OpKind::kSet:
    case OpKind::kPush: return set_within(at, payload);
    case OpKind::kRemove: return set_within(at, nullptr);
    case OpKind::kUpdate:
    case OpKind::kIncrementUpdate: {
      if (!payload.is_object()) return Status::Ok();
      std::vector<std::string> rel;
      for (auto it = payload.begin(); it != payload.end(); ++it) {
        if (!ParseTreePath(it.key(), &rel, &error) || rel.empty()) continue;
        Status s = set_within(Child(at, JoinKey(rel, rel.size())), *it);
        if (!s.ok()) return s;
      }
      return Status::Ok();
    }
    case OpKind::kConditionalSet: {
      if (!payload.is_object()) return Status::Ok();
      nlohmann::json expect = payload.value("expect", nlohmann::json());
      if (ReadSubtree(txn, tree, at) != expect) return Status::Ok();  // its upload will conflict
      return set_within(at, payload.value("value", nlohmann::json()));
    }
  }
  return Status::Ok();
}

}  // namespace tether::store
