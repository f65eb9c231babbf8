#include "gateway/model/value_codec.h"

#include <cbor.h>

#include <cmath>
#include <limits>
#include <memory>

#include "util/base64.h"

namespace tether {

namespace {

struct CborItemFree {
  void operator()(cbor_item_t* i) const { cbor_decref(&i); }
};
using CborPtr = std::unique_ptr<cbor_item_t, CborItemFree>;

bool ValidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = s[i];
    size_t extra = c < 0x80 ? 0 : (c & 0xe0) == 0xc0 ? 1 : (c & 0xf0) == 0xe0 ? 2 : (c & 0xf8) == 0xf0 ? 3 : 4;
    if (extra == 4 || (extra == 1 && c < 0xc2) || c > 0xf4) return false;
    if (i + extra >= s.size()) return false;  // truncated sequence
    for (size_t k = 1; k <= extra; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xc0) != 0x80) return false;
    }
    i += extra + 1;
  }
  return true;
}

// Concatenates a definite or indefinite (chunked) text or byte string.
std::string StringOf(cbor_item_t* item, bool text) {
  auto data = [&](cbor_item_t* it) {
    return text ? std::string(reinterpret_cast<char*>(cbor_string_handle(it)), cbor_string_length(it))
                : std::string(reinterpret_cast<char*>(cbor_bytestring_handle(it)), cbor_bytestring_length(it));
  };
  bool definite = text ? cbor_string_is_definite(item) : cbor_bytestring_is_definite(item);
  if (definite) return data(item);
  std::string out;
  size_t n = text ? cbor_string_chunk_count(item) : cbor_bytestring_chunk_count(item);
  cbor_item_t** chunks = text ? cbor_string_chunks_handle(item) : cbor_bytestring_chunks_handle(item);
  for (size_t i = 0; i < n; ++i) out += data(chunks[i]);
  return out;
}

// keep_nulls: this is an update's top-level map (see DecodeCbor).
bool ToJson(cbor_item_t* item, int depth, Json* out, std::string* error, bool keep_nulls = false) {
  if (depth > kMaxDecodeDepth) {
    *error = "value nested too deeply";
    return false;
  }
  switch (cbor_typeof(item)) {
    case CBOR_TYPE_UINT: {
      uint64_t v = cbor_get_int(item);
      *out = v;
      return true;
    }
    case CBOR_TYPE_NEGINT: {
      uint64_t v = cbor_get_int(item);
      if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        *out = -1.0 - static_cast<double>(v);
      } else {
        *out = -1 - static_cast<int64_t>(v);
      }
      return true;
    }
    case CBOR_TYPE_STRING: {
      std::string s = StringOf(item, true);
      if (!ValidUtf8(s)) {
        *error = "text string is not valid UTF-8";
        return false;
      }
      *out = std::move(s);
      return true;
    }
    case CBOR_TYPE_BYTESTRING: {
      std::string s = StringOf(item, false);
      *out = Json::binary(std::vector<uint8_t>(s.begin(), s.end()));
      return true;
    }
    case CBOR_TYPE_ARRAY: {
      Json obj = Json::object();
      size_t n = cbor_array_size(item);
      cbor_item_t** h = cbor_array_handle(item);
      for (size_t i = 0; i < n; ++i) {
        Json v;
        if (!ToJson(h[i], depth + 1, &v, error)) return false;
        if (!v.is_null()) obj[std::to_string(i)] = std::move(v);
      }
      *out = obj.empty() ? Json() : std::move(obj);
      return true;
    }
    case CBOR_TYPE_MAP: {
      Json obj = Json::object();
      size_t n = cbor_map_size(item);
      cbor_pair* pairs = cbor_map_handle(item);
      for (size_t i = 0; i < n; ++i) {
        std::string key;
        if (cbor_isa_string(pairs[i].key)) {
          key = StringOf(pairs[i].key, true);
        } else if (cbor_isa_bytestring(pairs[i].key)) {
          key = StringOf(pairs[i].key, false);  // the SDK sends some keys as byte strings
        } else if (cbor_isa_uint(pairs[i].key)) {
          key = std::to_string(cbor_get_int(pairs[i].key));
        } else {
          *error = "map keys must be strings";
          return false;
        }
        if (!ValidUtf8(key)) {
          *error = "map key is not valid UTF-8";
          return false;
        }
        if (obj.contains(key)) {
          *error = "duplicate map key '" + key.substr(0, 32) + "'";
          return false;
        }
        Json v;
        if (!ToJson(pairs[i].value, depth + 1, &v, error)) return false;
        if (!v.is_null() || keep_nulls) obj[key] = std::move(v);
      }
      *out = obj.empty() && !keep_nulls ? Json() : std::move(obj);  // no empty objects in the data model
      return true;
    }
    case CBOR_TYPE_TAG: {
      CborPtr tagged(cbor_tag_item(item));  // tags carry no meaning in the data model
      return ToJson(tagged.get(), depth + 1, out, error, keep_nulls);
    }
    case CBOR_TYPE_FLOAT_CTRL: {
      if (cbor_float_ctrl_is_ctrl(item)) {
        uint8_t c = cbor_ctrl_value(item);
        if (c == CBOR_CTRL_TRUE) *out = true;
        else if (c == CBOR_CTRL_FALSE) *out = false;
        else if (c == CBOR_CTRL_NULL || c == CBOR_CTRL_UNDEF) *out = nullptr;
        else {
          *error = "unsupported CBOR simple value";
          return false;
        }
        return true;
      }
      double d = cbor_float_get_float(item);
      if (!std::isfinite(d)) {
        *error = "NaN and infinity are not valid values";
        return false;
      }
      *out = d;
      return true;
    }
  }
  *error = "unsupported CBOR item";
  return false;
}

// Smallest-width integer encodings: the SDK's parser expects canonical widths.
cbor_item_t* BuildUint(uint64_t v) {
  if (v <= UINT8_MAX) return cbor_build_uint8(static_cast<uint8_t>(v));
  if (v <= UINT16_MAX) return cbor_build_uint16(static_cast<uint16_t>(v));
  if (v <= UINT32_MAX) return cbor_build_uint32(static_cast<uint32_t>(v));
  return cbor_build_uint64(v);
}

cbor_item_t* BuildInt(int64_t i) {
  if (i >= 0) return BuildUint(static_cast<uint64_t>(i));
  uint64_t m = static_cast<uint64_t>(-(i + 1));
  cbor_item_t* item = BuildUint(m);
  cbor_mark_negint(item);
  return item;
}

CborPtr ToCbor(const Json& v) {
  switch (v.type()) {
    case Json::value_t::null:
    case Json::value_t::discarded:
      return CborPtr(cbor_new_null());
    case Json::value_t::boolean:
      return CborPtr(cbor_build_bool(v.get<bool>()));
    case Json::value_t::number_unsigned:
      return CborPtr(BuildUint(v.get<uint64_t>()));
    case Json::value_t::number_integer:
      return CborPtr(BuildInt(v.get<int64_t>()));
    case Json::value_t::number_float: {
      double d = v.get<double>();
      if (std::nearbyint(d) == d && std::fabs(d) < 9.007199254740992e15) {
        return CborPtr(BuildInt(static_cast<int64_t>(d)));
      }
      return CborPtr(cbor_build_float8(d));
    }
    case Json::value_t::string: {
      const std::string& s = v.get_ref<const std::string&>();
      return CborPtr(cbor_build_stringn(s.data(), s.size()));
    }
    case Json::value_t::binary: {
      const auto& b = v.get_binary();
      return CborPtr(cbor_build_bytestring(b.data(), b.size()));
    }
    case Json::value_t::array: {
      CborPtr m(cbor_new_definite_map(v.size()));
      size_t i = 0;
      for (const auto& e : v) {
        CborPtr key(cbor_build_string(std::to_string(i++).c_str()));
        cbor_map_add(m.get(), cbor_pair{key.get(), ToCbor(e).get()});
      }
      return m;
    }
    case Json::value_t::object: {
      CborPtr m(cbor_new_definite_map(v.size()));
      for (const auto& [k, e] : v.items()) {
        CborPtr key(cbor_build_stringn(k.data(), k.size()));
        CborPtr val = ToCbor(e);
        cbor_map_add(m.get(), cbor_pair{key.get(), val.get()});
      }
      return m;
    }
  }
  return CborPtr(cbor_new_null());
}

void BinaryToBase64(Json* v) {
  if (v->is_binary()) {
    const auto& b = v->get_binary();
    *v = util::Base64Encode(std::string_view(reinterpret_cast<const char*>(b.data()), b.size()));
  } else if (v->is_object() || v->is_array()) {
    for (auto& e : *v) BinaryToBase64(&e);
  }
}

// Walks the item headers with libcbor's streaming decoder, which allocates nothing, before
// cbor_load builds the value: cbor_load preallocates a definite array or map by its declared
// length, so a 5-byte header claiming 4 billion elements would otherwise cost gigabytes. Rejects
// declared sizes larger than the bytes that follow and nesting deeper than kMaxDecodeDepth.
// Structural errors are left for cbor_load to report.
struct HeaderScan {
  enum class Event { kScalar, kDefinite, kIndefinite, kTag, kBreak };
  Event event = Event::kScalar;
  size_t declared = 0;
  std::vector<int64_t> open;  // per open container: children still to start, or -1 (indefinite)

  static HeaderScan* Of(void* p) { return static_cast<HeaderScan*>(p); }
  static cbor_callbacks Callbacks() {
    cbor_callbacks cb = cbor_empty_callbacks;
    cb.array_start = [](void* c, size_t n) { Of(c)->event = Event::kDefinite, Of(c)->declared = n; };
    cb.map_start = [](void* c, size_t n) {
      Of(c)->event = Event::kDefinite;
      Of(c)->declared = n > SIZE_MAX / 2 ? SIZE_MAX : 2 * n;
    };
    cb.indef_array_start = [](void* c) { Of(c)->event = Event::kIndefinite; };
    cb.indef_map_start = [](void* c) { Of(c)->event = Event::kIndefinite; };
    cb.string_start = [](void* c) { Of(c)->event = Event::kIndefinite; };
    cb.byte_string_start = [](void* c) { Of(c)->event = Event::kIndefinite; };
    cb.tag = [](void* c, uint64_t) { Of(c)->event = Event::kTag; };
    cb.indef_break = [](void* c) { Of(c)->event = Event::kBreak; };
    return cb;
  }
};

bool ScanHeaders(std::string_view bytes, std::string* error) {
  static const cbor_callbacks kCallbacks = HeaderScan::Callbacks();
  HeaderScan scan;
  size_t pos = 0;
  while (pos < bytes.size()) {
    scan.event = HeaderScan::Event::kScalar;
    cbor_decoder_result r = cbor_stream_decode(reinterpret_cast<cbor_data>(bytes.data() + pos), bytes.size() - pos,
                                               &kCallbacks, &scan);
    if (r.status != CBOR_DECODER_FINISHED) return true;  // malformed or truncated: cbor_load says so
    pos += r.read;
    while (!scan.open.empty() && scan.open.back() == 0) scan.open.pop_back();  // completed containers
    if (scan.event == HeaderScan::Event::kBreak) {
      if (!scan.open.empty() && scan.open.back() < 0) scan.open.pop_back();
      continue;
    }
    if (!scan.open.empty() && scan.open.back() > 0) --scan.open.back();
    switch (scan.event) {
      case HeaderScan::Event::kDefinite:
        if (scan.declared > bytes.size() - pos) {
          *error = "malformed CBOR (declared size exceeds the payload)";
          return false;
        }
        if (scan.declared > 0) scan.open.push_back(static_cast<int64_t>(scan.declared));
        break;
      case HeaderScan::Event::kIndefinite: scan.open.push_back(-1); break;
      case HeaderScan::Event::kTag: scan.open.push_back(1); break;
      default: break;
    }
    if (scan.open.size() > static_cast<size_t>(kMaxDecodeDepth)) {
      *error = "value nested too deeply";
      return false;
    }
  }
  return true;
}

}  // namespace

Expected<Json> DecodeCbor(std::string_view bytes, bool update) {
  if (bytes.empty()) return Json();
  std::string error;  // the helpers above say why in words; the boundary wraps it
  if (!ScanHeaders(bytes, &error)) return Diagnostic::Invalid(std::move(error));
  cbor_load_result res;
  CborPtr item(cbor_load(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), &res));
  if (!item || res.error.code != CBOR_ERR_NONE) {
    return Diagnostic::Invalid("malformed CBOR");
  }
  if (res.read != bytes.size()) {
    return Diagnostic::Invalid("trailing bytes after the CBOR value");
  }
  Json out;
  if (!ToJson(item.get(), 0, &out, &error, update)) return Diagnostic::Invalid(std::move(error));
  return out;
}

Expected<Json> DecodeJson(std::string_view text, bool update) {
  if (text.empty()) return Json();
  int depth = 0, max_depth = 0;
  auto cb = [&](int, Json::parse_event_t ev, Json&) {
    if (ev == Json::parse_event_t::object_start || ev == Json::parse_event_t::array_start) {
      max_depth = std::max(max_depth, ++depth);
    } else if (ev == Json::parse_event_t::object_end || ev == Json::parse_event_t::array_end) {
      --depth;
    }
    return max_depth <= kMaxDecodeDepth;
  };
  Json v = Json::parse(text.begin(), text.end(), cb, /*allow_exceptions=*/false);
  if (max_depth > kMaxDecodeDepth) {
    return Diagnostic::Invalid("value nested too deeply");
  }
  if (v.is_discarded()) {
    return Diagnostic::Invalid("malformed JSON");
  }
  // Arrays become objects keyed by index; nulls inside objects vanish (but an update's members).
  std::function<Json(const Json&, bool)> norm = [&](const Json& x, bool keep_nulls) -> Json {
    if (x.is_array() || x.is_object()) {
      Json o = Json::object();
      size_t i = 0;
      for (auto it = x.begin(); it != x.end(); ++it, ++i) {
        Json c = norm(*it, false);
        if (!c.is_null() || keep_nulls) o[x.is_array() ? std::to_string(i) : it.key()] = std::move(c);
      }
      return o.empty() && !keep_nulls ? Json() : o;
    }
    return x;
  };
  return norm(v, update && v.is_object());
}

std::string EncodeCbor(const Json& value) {
  CborPtr item = ToCbor(value);
  unsigned char* buf = nullptr;
  size_t cap = 0;
  size_t n = cbor_serialize_alloc(item.get(), &buf, &cap);
  std::string out(reinterpret_cast<char*>(buf), n);
  free(buf);
  return out;
}

Json WithoutBinary(Json value) {
  BinaryToBase64(&value);
  return value;
}

std::string EncodeJson(const Json& value) {
  return WithoutBinary(value).dump(-1, ' ', false, Json::error_handler_t::replace);
}

}  // namespace tether
