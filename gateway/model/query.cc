#include "gateway/model/query.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstring>
#include <utility>

#include "gateway/model/data_rules.h"
#include "util/firebase_key.h"
#include "util/percent_encoding.h"
#include "gateway/model/route_pattern.h"

namespace tether {

namespace {

// Keys the official client orders as integers (firebase 7.24 nameCompare): ^-?(0*)\d{1,10}$ within
// the 32-bit range, leading zeros and all ("007" is 7, "00" is 0, "-01" is -1).
std::optional<int64_t> IntegerKey(std::string_view k) {
  const size_t sign = !k.empty() && k[0] == '-' ? 1 : 0;
  if (k.size() == sign || k.find_first_not_of("0123456789", sign) != std::string_view::npos) return std::nullopt;
  const size_t first = k.find_first_not_of('0', sign);
  if (first == std::string_view::npos) return 0;  // "0", "-00", ...
  if (k.size() - first > 10) return std::nullopt;
  int64_t v = 0;
  std::from_chars(k.data() + first, k.data() + k.size(), v);
  if (sign) v = -v;
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

Expected<void> ParseBound(std::string_view name, std::string_view text, std::optional<Json>* out) {
  Json v = Json::parse(text, nullptr, false);
  if (v.is_discarded() || v.is_object() || v.is_array()) {
    return Diagnostic::Invalid(std::string(name) + " must be a JSON scalar (strings in double quotes)");
  }
  if (v.is_string() && v.get_ref<const std::string&>().size() > util::kMaxFirebaseKeyBytes) {
    return Diagnostic::Invalid(std::string(name) + " longer than 768 bytes");
  }
  *out = std::move(v);
  return {};
}

Expected<void> ParseLimit(std::string_view name, std::string_view text, std::optional<uint32_t>* out) {
  uint32_t n = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc() || end != text.data() + text.size() || n == 0 || n > INT32_MAX) {
    return Diagnostic::Invalid(std::string(name) + " must be a positive integer");
  }
  *out = n;
  return {};
}

// Exact order of two JSON numbers: unsigned and signed 64-bit integers and doubles, mixed.
template <typename T> int Cmp(T x, T y) { return x < y ? -1 : x > y ? 1 : 0; }

int CompareIntegers(const Json& a, const Json& b) {
  const bool au = a.is_number_unsigned(), bu = b.is_number_unsigned();
  if (au && bu) return Cmp(a.get<uint64_t>(), b.get<uint64_t>());
  if (!au && !bu) return Cmp(a.get<int64_t>(), b.get<int64_t>());
  if (au) {
    int64_t y = b.get<int64_t>();
    return y < 0 ? 1 : Cmp(a.get<uint64_t>(), static_cast<uint64_t>(y));
  }
  int64_t x = a.get<int64_t>();
  return x < 0 ? -1 : Cmp(static_cast<uint64_t>(x), b.get<uint64_t>());
}

// An integer against a double. Rounding to the nearest double keeps order, so only a tie after
// conversion needs a closer look: then the double is integral (above 2^53 every double is).
int CompareIntegerDouble(const Json& i, double d) {
  double di = i.is_number_unsigned() ? static_cast<double>(i.get<uint64_t>()) : static_cast<double>(i.get<int64_t>());
  if (di != d) return di < d ? -1 : 1;
  if (d >= 18446744073709551616.0) return -1;  // 2^64: above every uint64
  if (d < -9223372036854775808.0) return 1;
  Json exact = d < 0 ? Json(static_cast<int64_t>(d)) : Json(static_cast<uint64_t>(d));
  return CompareIntegers(i, exact);
}

int CompareNumbers(const Json& a, const Json& b) {
  const bool ai = a.is_number_integer(), bi = b.is_number_integer();
  if (ai && bi) return CompareIntegers(a, b);
  if (ai) return CompareIntegerDouble(a, b.get<double>());
  if (bi) return -CompareIntegerDouble(b, a.get<double>());
  return Cmp(a.get<double>(), b.get<double>());
}

// UTF-16 code units of UTF-8 text, one at a time (-1 at the end), as JavaScript and Java compare
// strings: characters above U+FFFF (surrogate pairs, 0xD800..) sort before U+E000..U+FFFF. A
// byte that is not well-formed UTF-8 stands for itself.
class Utf16Units {
 public:
  explicit Utf16Units(std::string_view s) : s_(s) {}
  int Next() {
    if (low_) return std::exchange(low_, 0);
    if (i_ >= s_.size()) return -1;
    const unsigned char c = static_cast<unsigned char>(s_[i_]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    uint32_t cp = n == 1 ? c : n == 2 ? c & 0x1f : n == 3 ? c & 0x0f : c & 0x07;
    if (n == 0 || i_ + n > s_.size()) {
      ++i_;
      return c;
    }
    for (size_t k = 1; k < n; ++k) {
      const unsigned char cc = static_cast<unsigned char>(s_[i_ + k]);
      if ((cc >> 6) != 2) {
        ++i_;
        return c;
      }
      cp = (cp << 6) | (cc & 0x3f);
    }
    i_ += n;
    if (cp < 0x10000) return static_cast<int>(cp);
    cp -= 0x10000;
    low_ = static_cast<int>(0xdc00 + (cp & 0x3ff));
    return static_cast<int>(0xd800 + (cp >> 10));
  }

 private:
  std::string_view s_;
  size_t i_ = 0;
  int low_ = 0;
};

}  // namespace

int CompareKeys(std::string_view a, std::string_view b) {
  auto ia = IntegerKey(a), ib = IntegerKey(b);
  if (ia && ib) {
    if (*ia != *ib) return *ia < *ib ? -1 : 1;
    // Equal integers ("1", "01"): the shorter key first, as the official client orders them. Of
    // equal length ("-0", "00", which that client takes for one key): by text, so the order of
    // distinct keys stays total.
    if (a.size() != b.size()) return a.size() < b.size() ? -1 : 1;
    return CompareStrings(a, b);
  }
  if (ia) return -1;
  if (ib) return 1;
  return CompareStrings(a, b);
}

int CompareStrings(std::string_view a, std::string_view b) {
  Utf16Units ua(a), ub(b);
  while (true) {
    int x = ua.Next(), y = ub.Next();
    if (x != y) return x < y ? -1 : 1;
    if (x < 0) return 0;
  }
}

int CompareValues(const Json& a, const Json& b) {
  int ra = TypeRank(a), rb = TypeRank(b);
  if (ra != rb) return ra < rb ? -1 : 1;
  if (ra == 3) return CompareNumbers(a, b);
  if (ra == 4) {
    if (a.is_string() && b.is_string()) return CompareStrings(Bytes(a), Bytes(b));
    int c = Bytes(a).compare(Bytes(b));  // byte strings (local only; the cloud has base64 text)
    return c < 0 ? -1 : c > 0 ? 1 : 0;
  }
  return 0;  // null, equal booleans, objects: tie (broken by key)
}

Expected<void> ParseQuery(const std::vector<std::string_view>& params, Query* q) {
  *q = Query{};
  bool any_filter = false, seen_start = false, seen_end = false, seen_order = false;
  for (std::string_view p : params) {
    if (p.empty() || p[0] == '.') continue;
    size_t eq = p.find('=');
    std::string_view name = p.substr(0, eq);
    std::string_view text = eq == std::string_view::npos ? std::string_view() : p.substr(eq + 1);
    if (eq == std::string_view::npos) {
      return Diagnostic::Invalid("query parameter '" + std::string(name.substr(0, 40)) + "' needs a value");
    }
    Expected<void> e;
    if (name == "orderBy") {
      if (seen_order) return Diagnostic::Invalid("orderBy given twice");
      seen_order = true;
      std::string by(text);
      if (by.size() >= 2 && by.front() == '"' && by.back() == '"') {
        Json s = Json::parse(by, nullptr, false);
        if (!s.is_string()) return Diagnostic::Invalid("orderBy: malformed JSON string");
        by = s.get<std::string>();
      }
      if (by == "$key") {
        q->order = Query::Order::kKey;
      } else if (by == "$value") {
        q->order = Query::Order::kValue;
      } else if (by == "$priority") {
        return Diagnostic::Invalid("orderBy $priority is not supported (use $key, $value or a child path)");
      } else {
        q->child = SplitPath(by);
        if (q->child.empty()) return Diagnostic::Invalid("orderBy needs $key, $value or a child path");
        if (auto r = CheckPath(q->child); !r) return std::move(r).Error().Prefixed("orderBy: ");
        q->order = Query::Order::kChild;
      }
      continue;
    }
    if (name == "startAt" || name == "endAt" || name == "equalTo") {
      bool& seen = name == "startAt" ? seen_start : name == "endAt" ? seen_end : q->equal_to;
      if (seen) return Diagnostic::Invalid(std::string(name) + " given twice");
      seen = true;
      e = ParseBound(name, text, name == "endAt" ? &q->end_at : &q->start_at);
      if (name == "equalTo" && e) q->end_at = q->start_at;
    } else if (name == "limitToFirst") {
      if (q->limit_first) return Diagnostic::Invalid("limitToFirst given twice");
      e = ParseLimit(name, text, &q->limit_first);
    } else if (name == "limitToLast") {
      if (q->limit_last) return Diagnostic::Invalid("limitToLast given twice");
      e = ParseLimit(name, text, &q->limit_last);
    } else {
      return Diagnostic::Invalid("unknown query parameter '" + std::string(name.substr(0, 40)) +
                                 "' (orderBy, startAt, endAt, equalTo, limitToFirst, limitToLast)");
    }
    if (!e) return e;
    any_filter = true;
  }
  if (q->equal_to && (seen_start || seen_end)) {
    return Diagnostic::Invalid("equalTo cannot be combined with startAt or endAt");
  }
  if (q->limit_first && q->limit_last) return Diagnostic::Invalid("use limitToFirst or limitToLast, not both");
  if (any_filter && !seen_order) {
    return Diagnostic::Invalid("orderBy is required with startAt, endAt, equalTo and limits");
  }
  if (q->order == Query::Order::kKey) {
    for (const auto* b : {&q->start_at, &q->end_at}) {
      if (*b && !(*b)->is_string()) return Diagnostic::Invalid("orderBy $key needs string bounds (in double quotes)");
    }
  }
  return {};
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
    out += std::string(part.substr(0, eq + 1)) + util::PercentEncode(part.substr(eq + 1));
    if (amp == std::string::npos) break;
    pos = amp + 1;
  }
  return out;
}

namespace {

// A child in query order: its key and the value it is ordered by.
struct Item {
  const std::string* key;
  const Json* sort;
};

Item ItemOf(const Query& q, const std::string& key, const Json& child) {
  return {&key, q.order == Query::Order::kChild ? &ChildAt(child, q.child) : &child};
}

bool Before(const Query& q, const Item& a, const Item& b) {
  if (q.order != Query::Order::kKey) {
    if (int c = CompareValues(*a.sort, *b.sort); c != 0) return c < 0;
  }
  return CompareKeys(*a.key, *b.key) < 0;
}

int CompareToBound(const Query& q, const Item& it, const Json& bound) {
  if (q.order == Query::Order::kKey) return CompareKeys(*it.key, bound.get_ref<const std::string&>());
  return CompareValues(*it.sort, bound);
}

bool InBounds(const Query& q, const Item& it) {
  return !(q.start_at && CompareToBound(q, it, *q.start_at) < 0) && !(q.end_at && CompareToBound(q, it, *q.end_at) > 0);
}

}  // namespace

std::vector<std::string> QueryKeys(const Json& in, const Query& q) {
  std::vector<std::string> keys;
  const Json value = AsObject(in);
  if (!value.is_object()) return keys;
  std::vector<Item> items;
  items.reserve(value.size());
  for (auto it = value.begin(); it != value.end(); ++it) items.push_back(ItemOf(q, it.key(), *it));
  std::sort(items.begin(), items.end(), [&](const Item& a, const Item& b) { return Before(q, a, b); });
  std::vector<const Item*> kept;
  for (const Item& it : items) {
    if (InBounds(q, it)) kept.push_back(&it);
  }
  size_t from = 0, to = kept.size();
  if (q.limit_first && *q.limit_first < to) to = *q.limit_first;
  if (q.limit_last && *q.limit_last < to) from = to - *q.limit_last;
  for (size_t i = from; i < to; ++i) keys.push_back(*kept[i]->key);
  return keys;
}

std::vector<std::string> StaleKeys(const Json& local_in, const Json& result_in, const Query& q) {
  std::vector<std::string> stale;
  const Json local = AsObject(local_in), result = AsObject(result_in);
  if (q.empty() || !local.is_object() || !(result.is_object() || result.is_null())) return stale;
  const size_t n = result.is_object() ? result.size() : 0;
  // A limit the result fills proves the range only up to its last child (limitToFirst) or from
  // its first child (limitToLast): beyond it the cloud may hold more.
  const bool upto = q.limit_first && n >= *q.limit_first;
  const bool from = q.limit_last && n >= *q.limit_last;
  std::optional<Item> edge;
  if (upto || from) {
    for (auto it = result.begin(); it != result.end(); ++it) {
      Item item = ItemOf(q, it.key(), *it);
      if (!edge || (upto ? Before(q, *edge, item) : Before(q, item, *edge))) edge = item;
    }
  }
  for (auto it = local.begin(); it != local.end(); ++it) {
    if (result.is_object() && result.contains(it.key())) continue;
    Item item = ItemOf(q, it.key(), *it);
    if (!InBounds(q, item)) continue;
    if (edge && (upto ? Before(q, *edge, item) : Before(q, item, *edge))) continue;
    stale.push_back(it.key());
  }
  return stale;
}

Json ApplyQuery(const Json& in, const Query& q) {
  if (q.empty()) return in;
  const Json value = AsObject(in);
  // A plain value has no children: a range or a limit selects none of them (the official client's
  // RangedFilter and LimitedFilter answer null); orderBy alone leaves the value as it is.
  if (!value.is_object()) return q.filters() ? Json() : value;
  Json out;
  for (const auto& k : QueryKeys(value, q)) out[k] = value.at(k);
  return out;
}

}  // namespace tether
