#include "gateway/query.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstring>

#include "gateway/data_rules.h"
#include "gateway/route_pattern.h"

namespace tether {

namespace {

// Keys that Firebase orders as integers: "0" or -?[1-9][0-9]* within int32.
std::optional<int64_t> IntegerKey(std::string_view k) {
  if (k.empty() || k.size() > 11) return std::nullopt;
  size_t i = k[0] == '-' ? 1 : 0;
  if (i == k.size() || (k[i] == '0' && k.size() > i + 1) || (i == 1 && k == "-0")) return std::nullopt;
  for (size_t j = i; j < k.size(); ++j) {
    if (k[j] < '0' || k[j] > '9') return std::nullopt;
  }
  int64_t v = 0;
  std::from_chars(k.data(), k.data() + k.size(), v);
  if (v < INT32_MIN || v > INT32_MAX) return std::nullopt;
  return v;
}

int TypeRank(const Json& v) {
  if (v.is_null()) return 0;
  if (v.is_boolean()) return v.get<bool>() ? 2 : 1;
  if (v.is_number()) return 3;
  if (v.is_string() || v.is_binary()) return 4;
  return 5;  // object
}

std::string_view Bytes(const Json& v) {
  if (v.is_string()) return v.get_ref<const std::string&>();
  const auto& b = v.get_binary();
  return std::string_view(reinterpret_cast<const char*>(b.data()), b.size());
}

const Json& ChildAt(const Json& v, const std::vector<std::string>& path) {
  static const Json kNull;
  const Json* cur = &v;
  for (const auto& seg : path) {
    if (!cur->is_object()) return kNull;
    auto it = cur->find(seg);
    if (it == cur->end()) return kNull;
    cur = &*it;
  }
  return *cur;
}

// Firebase answers children keyed 0..n as a JSON array: they are children all the same.
Json AsObject(const Json& v) {
  if (!v.is_array()) return v;
  Json out;
  for (size_t i = 0; i < v.size(); ++i) {
    if (!v[i].is_null()) out[std::to_string(i)] = v[i];
  }
  return out;
}

std::string Pct(std::string_view s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

std::string ParseBound(std::string_view name, std::string_view text, std::optional<Json>* out) {
  Json v = Json::parse(text, nullptr, false);
  if (v.is_discarded() || v.is_object() || v.is_array()) {
    return std::string(name) + " must be a JSON scalar (strings in double quotes)";
  }
  if (v.is_string() && v.get_ref<const std::string&>().size() > kMaxKeyBytes) {
    return std::string(name) + " longer than 768 bytes";
  }
  *out = std::move(v);
  return "";
}

std::string ParseLimit(std::string_view name, std::string_view text, std::optional<uint32_t>* out) {
  uint32_t n = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc() || end != text.data() + text.size() || n == 0 || n > INT32_MAX) {
    return std::string(name) + " must be a positive integer";
  }
  *out = n;
  return "";
}

}  // namespace

int CompareKeys(std::string_view a, std::string_view b) {
  auto ia = IntegerKey(a), ib = IntegerKey(b);
  if (ia && ib) return *ia < *ib ? -1 : *ia > *ib ? 1 : 0;
  if (ia) return -1;
  if (ib) return 1;
  int c = a.compare(b);
  return c < 0 ? -1 : c > 0 ? 1 : 0;
}

int CompareValues(const Json& a, const Json& b) {
  int ra = TypeRank(a), rb = TypeRank(b);
  if (ra != rb) return ra < rb ? -1 : 1;
  if (ra == 3) {
    if (a.is_number_integer() && b.is_number_integer()) {
      int64_t x = a.get<int64_t>(), y = b.get<int64_t>();
      return x < y ? -1 : x > y ? 1 : 0;
    }
    double x = a.get<double>(), y = b.get<double>();
    return x < y ? -1 : x > y ? 1 : 0;
  }
  if (ra == 4) {
    int c = Bytes(a).compare(Bytes(b));
    return c < 0 ? -1 : c > 0 ? 1 : 0;
  }
  return 0;  // null, equal booleans, objects: tie (broken by key)
}

std::string ParseQuery(const std::vector<std::string_view>& params, Query* q) {
  *q = Query{};
  bool any_filter = false, seen_start = false, seen_end = false, seen_order = false;
  for (std::string_view p : params) {
    if (p.empty() || p[0] == '.') continue;
    size_t eq = p.find('=');
    std::string_view name = p.substr(0, eq);
    std::string_view text = eq == std::string_view::npos ? std::string_view() : p.substr(eq + 1);
    if (eq == std::string_view::npos) return "query parameter '" + std::string(name.substr(0, 40)) + "' needs a value";
    std::string e;
    if (name == "orderBy") {
      if (seen_order) return "orderBy given twice";
      seen_order = true;
      std::string by(text);
      if (by.size() >= 2 && by.front() == '"' && by.back() == '"') {
        Json s = Json::parse(by, nullptr, false);
        if (!s.is_string()) return "orderBy: malformed JSON string";
        by = s.get<std::string>();
      }
      if (by == "$key") {
        q->order = Query::Order::kKey;
      } else if (by == "$value") {
        q->order = Query::Order::kValue;
      } else if (by == "$priority") {
        return "orderBy $priority is not supported (use $key, $value or a child path)";
      } else {
        q->child = SplitPath(by);
        if (q->child.empty()) return "orderBy needs $key, $value or a child path";
        if (std::string ce = CheckPath(q->child); !ce.empty()) return "orderBy: " + ce;
        q->order = Query::Order::kChild;
      }
      continue;
    }
    if (name == "startAt" || name == "endAt" || name == "equalTo") {
      bool& seen = name == "startAt" ? seen_start : name == "endAt" ? seen_end : q->equal_to;
      if (seen) return std::string(name) + " given twice";
      seen = true;
      e = ParseBound(name, text, name == "endAt" ? &q->end_at : &q->start_at);
      if (name == "equalTo" && e.empty()) q->end_at = q->start_at;
    } else if (name == "limitToFirst") {
      if (q->limit_first) return "limitToFirst given twice";
      e = ParseLimit(name, text, &q->limit_first);
    } else if (name == "limitToLast") {
      if (q->limit_last) return "limitToLast given twice";
      e = ParseLimit(name, text, &q->limit_last);
    } else {
      return "unknown query parameter '" + std::string(name.substr(0, 40)) +
             "' (orderBy, startAt, endAt, equalTo, limitToFirst, limitToLast)";
    }
    if (!e.empty()) return e;
    any_filter = true;
  }
  if (q->equal_to && (seen_start || seen_end)) return "equalTo cannot be combined with startAt or endAt";
  if (q->limit_first && q->limit_last) return "use limitToFirst or limitToLast, not both";
  if (any_filter && !seen_order) return "orderBy is required with startAt, endAt, equalTo and limits";
  if (q->order == Query::Order::kKey) {
    for (const auto* b : {&q->start_at, &q->end_at}) {
      if (*b && !(*b)->is_string()) return "orderBy $key needs string bounds (in double quotes)";
    }
  }
  return "";
}

std::string Query::Canonical() const {
  if (empty()) return "";
  std::string by = order == Order::kKey ? "$key" : order == Order::kValue ? "$value" : JoinPath(child);
  std::string out = "orderBy=" + Json(by).dump();
  if (equal_to) {
    out += "&equalTo=" + start_at->dump();
  } else {
    if (start_at) out += "&startAt=" + start_at->dump();
    if (end_at) out += "&endAt=" + end_at->dump();
  }
  if (limit_first) out += "&limitToFirst=" + std::to_string(*limit_first);
  if (limit_last) out += "&limitToLast=" + std::to_string(*limit_last);
  return out;
}

std::string Query::RestParams() const {
  std::string canonical = Canonical(), out;
  size_t pos = 0;
  while (pos < canonical.size()) {
    size_t amp = canonical.find('&', pos);
    std::string_view part = std::string_view(canonical).substr(pos, amp == std::string::npos ? std::string::npos : amp - pos);
    size_t eq = part.find('=');
    if (!out.empty()) out += '&';
    out += std::string(part.substr(0, eq + 1)) + Pct(part.substr(eq + 1));
    if (amp == std::string::npos) break;
    pos = amp + 1;
  }
  return out;
}

std::vector<std::string> QueryKeys(const Json& in, const Query& q) {
  std::vector<std::string> keys;
  const Json value = AsObject(in);
  if (!value.is_object()) return keys;
  struct Item {
    const std::string* key;
    const Json* sort;
  };
  std::vector<Item> items;
  items.reserve(value.size());
  for (auto it = value.begin(); it != value.end(); ++it) {
    const Json* sort = &*it;
    if (q.order == Query::Order::kChild) sort = &ChildAt(*it, q.child);
    items.push_back({&it.key(), sort});
  }
  auto cmp_item = [&](const Item& a, const Item& b) {
    if (q.order != Query::Order::kKey) {
      if (int c = CompareValues(*a.sort, *b.sort); c != 0) return c < 0;
    }
    return CompareKeys(*a.key, *b.key) < 0;
  };
  std::sort(items.begin(), items.end(), cmp_item);
  auto bound_cmp = [&](const Item& it, const Json& bound) {
    if (q.order == Query::Order::kKey) return CompareKeys(*it.key, bound.get_ref<const std::string&>());
    return CompareValues(*it.sort, bound);
  };
  std::vector<const Item*> kept;
  for (const Item& it : items) {
    if (q.start_at && bound_cmp(it, *q.start_at) < 0) continue;
    if (q.end_at && bound_cmp(it, *q.end_at) > 0) continue;
    kept.push_back(&it);
  }
  size_t from = 0, to = kept.size();
  if (q.limit_first && *q.limit_first < to) to = *q.limit_first;
  if (q.limit_last && *q.limit_last < to) from = to - *q.limit_last;
  for (size_t i = from; i < to; ++i) keys.push_back(*kept[i]->key);
  return keys;
}

Json ApplyQuery(const Json& in, const Query& q) {
  if (q.empty()) return in;
  const Json value = AsObject(in);
  if (!value.is_object()) return value;
  Json out;
  for (const auto& k : QueryKeys(value, q)) out[k] = value.at(k);
  return out;
}

}  // namespace tether
