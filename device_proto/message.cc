#include "device_proto/message.h"

#include <cstring>

namespace tether::coap {

const Option* Message::Find(uint16_t number) const {
  for (const Option& o : options) {
    if (o.number == number) return &o;
    if (o.number > number) break;
  }
  return nullptr;
}

std::optional<uint32_t> Message::UintOption(uint16_t number) const {
  const Option* o = Find(number);
  return o ? DecodeUint(o->value) : std::nullopt;
}

std::optional<Block> Message::BlockOption(uint16_t number) const {
  const Option* o = Find(number);
  return o ? Block::Decode(o->value) : std::nullopt;
}

const char* Describe(ParseError e) {
  switch (e) {
    case ParseError::kNone: return "ok";
    case ParseError::kTooShort: return "shorter than header";
    case ParseError::kBadVersion: return "bad version";
    case ParseError::kBadTokenLength: return "token length > 8";
    case ParseError::kTruncatedToken: return "truncated token";
    case ParseError::kEmptyWithData: return "empty message with data";
    case ParseError::kReservedCode: return "reserved code class";
    case ParseError::kReservedNibble: return "option nibble 15";
    case ParseError::kTruncatedOption: return "truncated option";
    case ParseError::kOptionNumberOverflow: return "option number > 65535";
    case ParseError::kMarkerWithoutPayload: return "payload marker without payload";
  }
  return "?";
}

namespace {

ParseResult Fail(ParseStatus s, ParseError e, bool token_readable) { return {s, e, token_readable}; }

// Reads an extended delta/length for nibble `n` at p[i]; advances i. False if truncated.
bool ReadExtended(std::span<const uint8_t> d, size_t& i, unsigned n, uint32_t& value) {
  if (n < 13) {
    value = n;
  } else if (n == 13) {
    if (i + 1 > d.size()) return false;
    value = 13u + d[i];
    i += 1;
  } else {  // 14
    if (i + 2 > d.size()) return false;
    value = 269u + (uint32_t{d[i]} << 8 | d[i + 1]);
    i += 2;
  }
  return true;
}

}  // namespace

ParseResult Parse(std::span<const uint8_t> d, Message& out) {
  out.options.clear();
  out.payload = {};
  out.token = Token{};
  if (d.size() < 4) return Fail(ParseStatus::kUnreadable, ParseError::kTooShort, false);
  if ((d[0] >> 6) != 1) return Fail(ParseStatus::kUnreadable, ParseError::kBadVersion, false);
  out.type = static_cast<Type>((d[0] >> 4) & 3);
  out.code = d[1];
  out.mid = static_cast<uint16_t>(d[2] << 8 | d[3]);
  const unsigned tkl = d[0] & 0x0F;
  if (tkl > 8) return Fail(ParseStatus::kMalformed, ParseError::kBadTokenLength, false);
  if (4 + tkl > d.size()) return Fail(ParseStatus::kMalformed, ParseError::kTruncatedToken, false);
  out.token.len = static_cast<uint8_t>(tkl);
  if (tkl) std::memcpy(out.token.bytes.data(), d.data() + 4, tkl);
  if (out.code == code::kEmpty) {
    if (d.size() != 4 || tkl != 0) return Fail(ParseStatus::kMalformed, ParseError::kEmptyWithData, true);
    return {};
  }
  const unsigned cls = code::Cls(out.code);
  if (cls == 1 || cls >= 6) return Fail(ParseStatus::kMalformed, ParseError::kReservedCode, true);

  size_t i = 4 + tkl;
  uint32_t number = 0;
  while (i < d.size()) {
    const uint8_t b = d[i++];
    if (b == 0xFF) {
      if (i == d.size()) return Fail(ParseStatus::kMalformed, ParseError::kMarkerWithoutPayload, true);
      out.payload = d.subspan(i);
      return {ParseStatus::kOk, ParseError::kNone, true};
    }
    const unsigned dn = b >> 4, ln = b & 0x0F;
    if (dn == 15 || ln == 15) return Fail(ParseStatus::kMalformed, ParseError::kReservedNibble, true);
    uint32_t delta = 0, length = 0;
    if (!ReadExtended(d, i, dn, delta) || !ReadExtended(d, i, ln, length))
      return Fail(ParseStatus::kMalformed, ParseError::kTruncatedOption, true);
    number += delta;
    if (number > 0xFFFF) return Fail(ParseStatus::kMalformed, ParseError::kOptionNumberOverflow, true);
    if (length > d.size() - i) return Fail(ParseStatus::kMalformed, ParseError::kTruncatedOption, true);
    out.options.push_back(Option{static_cast<uint16_t>(number), d.subspan(i, length)});
    i += length;
  }
  return {ParseStatus::kOk, ParseError::kNone, true};
}

void Writer::Put(const uint8_t* p, size_t n) {
  if (!ok_ || n > out_.size() - used_) {
    ok_ = false;
    return;
  }
  if (n) std::memcpy(out_.data() + used_, p, n);
  used_ += n;
}

void Writer::Header(Type type, uint8_t code, uint16_t mid, std::span<const uint8_t> token) {
  if (used_ != 0 || token.size() > 8) {
    ok_ = false;
    return;
  }
  const uint8_t h[4] = {static_cast<uint8_t>(0x40 | static_cast<unsigned>(type) << 4 | token.size()), code,
                        static_cast<uint8_t>(mid >> 8), static_cast<uint8_t>(mid)};
  Put(h, 4);
  Put(token.data(), token.size());
}

void Writer::Option(uint16_t number, std::span<const uint8_t> value) {
  if (number < last_number_ || used_ < 4 || value.size() > 65535u + 269u) {
    ok_ = false;
    return;
  }
  uint8_t ext[5];
  size_t n = 1;
  auto nibble = [&](uint32_t v) -> unsigned {
    if (v < 13) return v;
    if (v < 269) {
      ext[n++] = static_cast<uint8_t>(v - 13);
      return 13;
    }
    ext[n++] = static_cast<uint8_t>((v - 269) >> 8);
    ext[n++] = static_cast<uint8_t>(v - 269);
    return 14;
  };
  const unsigned dn = nibble(number - last_number_);
  const unsigned ln = nibble(static_cast<uint32_t>(value.size()));
  ext[0] = static_cast<uint8_t>(dn << 4 | ln);
  Put(ext, n);
  Put(value.data(), value.size());
  last_number_ = number;
}

void Writer::Option(uint16_t number, std::string_view value) {
  Option(number, {reinterpret_cast<const uint8_t*>(value.data()), value.size()});
}

void Writer::OptionUint(uint16_t number, uint32_t value) {
  uint8_t b[4];
  Option(number, {b, EncodeUint(value, b)});
}

void Writer::Payload(std::span<const uint8_t> bytes) {
  if (bytes.empty()) return;
  const uint8_t marker = 0xFF;
  Put(&marker, 1);
  Put(bytes.data(), bytes.size());
}

size_t Serialize(const Message& m, std::span<uint8_t> out) {
  Writer w(out);
  w.Header(m.type, m.code, m.mid, m.token.view());
  for (const Option& o : m.options) w.Option(o.number, o.value);
  w.Payload(m.payload);
  return w.size();
}

}  // namespace tether::coap
