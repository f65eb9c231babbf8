#include "upstream/batch_builder.h"

#include <set>
#include <vector>

namespace tether::upstream {
namespace {

std::string_view Trim(std::string_view p) {
  while (!p.empty() && p.front() == '/') p.remove_prefix(1);
  while (!p.empty() && p.back() == '/') p.remove_suffix(1);
  return p;
}

// Entries (key path -> value) that one op contributes to the PATCH body.
bool Contribute(const OutboundOp& op, std::vector<std::pair<std::string, nlohmann::json>>& out) {
  std::string path(Trim(op.path));
  if (op.kind == OutboundOp::Kind::Remove) {
    out.emplace_back(path, nullptr);
    return true;
  }
  auto v = nlohmann::json::parse(op.json, nullptr, false);
  if (v.is_discarded()) return false;
  if (op.event_time_ms) ResolveServerTimestamps(v, *op.event_time_ms);
  if (op.kind == OutboundOp::Kind::Update) {
    if (!v.is_object()) return false;
    for (auto& [k, child] : v.items()) {
      std::string key(Trim(k));
      out.emplace_back(path.empty() ? key : path + "/" + key, std::move(child));
    }
    return true;
  }
  out.emplace_back(path, std::move(v));  // Set and Push (path already holds the push key)
  return true;
}

// True when `p` overlaps a path in `taken` (sorted): an ancestor of p, p itself, or a descendant.
bool OverlapsAny(const std::set<std::string, std::less<>>& taken, const std::string& p) {
  if (taken.empty()) return false;
  if (p.empty() || taken.count("")) return true;
  for (size_t i = 0; i <= p.size(); ++i)
    if ((i == p.size() || p[i] == '/') && taken.count(std::string_view(p).substr(0, i))) return true;
  auto it = taken.lower_bound(p + "/");
  return it != taken.end() && it->compare(0, p.size() + 1, p + "/") == 0;
}

}  // namespace

bool PathsOverlap(std::string_view a, std::string_view b) {
  a = Trim(a);
  b = Trim(b);
  if (a.size() > b.size()) std::swap(a, b);
  if (a.empty()) return true;  // the root overlaps everything
  return b.substr(0, a.size()) == a && (b.size() == a.size() || b[a.size()] == '/');
}

void ResolveServerTimestamps(nlohmann::json& v, int64_t time_ms) {
  if (v.is_object()) {
    if (v.size() == 1 && v.contains(".sv") && v[".sv"] == "timestamp") {
      v = time_ms;
      return;
    }
    for (auto& [k, child] : v.items()) ResolveServerTimestamps(child, time_ms);
  } else if (v.is_array()) {
    for (auto& child : v) ResolveServerTimestamps(child, time_ms);
  }
}

Batch BuildBatch(std::span<const OutboundOp> ops, const BatchLimits& limits) {
  Batch b;
  std::set<std::string, std::less<>> paths;  // keys already in the body
  std::vector<std::pair<std::string, nlohmann::json>> entries;
  for (size_t i = 0; i < ops.size() && b.op_count < limits.max_ops; ++i) {
    if (ops[i].auth_override != ops[0].auth_override) break;
    entries.clear();
    if (!Contribute(ops[i], entries)) {
      b.bad_op = static_cast<int>(i);
      break;
    }
    size_t add = 0;
    bool overlap = false;
    for (auto& [p, v] : entries) {
      overlap = overlap || OverlapsAny(paths, p);
      add += p.size() + 4 + (v.is_null() ? 4 : v.dump().size());
    }
    // Within one Update, children never overlap each other; an empty Update contributes nothing.
    if (overlap || (b.op_count > 0 && b.bytes + add > limits.max_bytes)) break;
    if (entries.size() == 1 && entries[0].first.empty()) {  // overlaps everything: alone
      b.body = std::move(entries[0].second);
      b.replace_root = true;
      b.bytes = add;
      b.last_seq = ops[i].seq;
      b.op_count = 1;
      break;
    }
    for (auto& [p, v] : entries) {
      paths.insert(p);
      b.body[p] = std::move(v);
    }
    b.bytes += add;
    b.last_seq = ops[i].seq;
    ++b.op_count;
  }
  return b;
}

}  // namespace tether::upstream
