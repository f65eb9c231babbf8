// Device payload decoding: whatever the bytes, decoding either fails with a diagnostic or yields a
// value in the data model that re-encodes and decodes to itself (CBOR and JSON).
#include <cstddef>
#include <cstdint>
#include <string>

#include "gateway/model/data_rules.h"
#include "gateway/model/value_codec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const bool as_json = data[0] & 1;
  std::string_view in(reinterpret_cast<const char*>(data + 1), size - 1);
  const bool update = data[0] & 2;  // an update's map keeps its null members
  auto v = as_json ? tether::DecodeJson(in, update) : tether::DecodeCbor(in, update);
  if (!v) {
    // Every failure explains itself, as a 4.00.
    if (v.error().message.empty() || v.error().code != tether::ErrorCode::kInvalid) __builtin_trap();
    return 0;
  }
  (void)tether::CheckValue(*v, 0);
  (void)tether::CheckUpdate(*v, 0);
  tether::Json plain = tether::WithoutBinary(*v);
  auto back = tether::DecodeCbor(tether::EncodeCbor(*v), update);
  if (!back || *back != *v) __builtin_trap();
  auto jback = tether::DecodeJson(tether::EncodeJson(*v), update);
  if (!jback || !(*jback == plain || (jback->is_number() && plain.is_number()))) __builtin_trap();
  if (tether::HasServerValues(plain)) {
    (void)tether::ExtractIncrements(&plain);
    tether::ResolveTimestamps(&plain, 1);
  }
  return 0;
}
