// RFC 7252 message codec. A Message is a view into the datagram it was parsed
// from: option values and the payload point into that buffer, which must
// outlive the Message. Parsing validates untrusted bytes and never reads past
// the buffer; serialization never writes past the output span.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "device_proto/option.h"

namespace tether::coap {

enum class Type : uint8_t { kCon = 0, kNon = 1, kAck = 2, kRst = 3 };

namespace code {
constexpr uint8_t Make(unsigned cls, unsigned detail) { return static_cast<uint8_t>(cls << 5 | detail); }
inline constexpr uint8_t kEmpty = 0;
inline constexpr uint8_t kGet = 1, kPost = 2, kPut = 3, kDelete = 4, kFetch = 5, kPatch = 6;
inline constexpr uint8_t kChanged = Make(2, 4), kContent = Make(2, 5), kContinue = Make(2, 31);
inline constexpr uint8_t kBadRequest = Make(4, 0), kUnauthorized = Make(4, 1), kBadOption = Make(4, 2);
inline constexpr uint8_t kNotFound = Make(4, 4), kMethodNotAllowed = Make(4, 5);
inline constexpr uint8_t kRequestEntityIncomplete = Make(4, 8), kRequestEntityTooLarge = Make(4, 13);
inline constexpr uint8_t kInternalServerError = Make(5, 0), kServiceUnavailable = Make(5, 3);
constexpr unsigned Cls(uint8_t c) { return c >> 5; }
}  // namespace code

struct Token {
  uint8_t len = 0;  // 0..8
  std::array<uint8_t, 8> bytes{};

  std::span<const uint8_t> view() const { return {bytes.data(), len}; }
  bool operator==(const Token& o) const {
    return len == o.len && std::equal(bytes.begin(), bytes.begin() + len, o.bytes.begin());
  }
};

struct Option {
  uint16_t number;
  std::span<const uint8_t> value;
  std::string_view str() const { return {reinterpret_cast<const char*>(value.data()), value.size()}; }
};

struct Message {
  Type type = Type::kCon;
  uint8_t code = code::kEmpty;
  uint16_t mid = 0;
  Token token;
  std::vector<Option> options;  // in wire order, i.e. sorted by number
  std::span<const uint8_t> payload;

  bool is_empty() const { return code == code::kEmpty; }
  bool is_request() const { return code != code::kEmpty && code::Cls(code) == 0; }
  const Option* Find(uint16_t number) const;  // first occurrence
  std::optional<uint32_t> UintOption(uint16_t number) const;  // nullopt if absent or > 4 bytes
  std::optional<Block> BlockOption(uint16_t number) const;  // nullopt if absent or invalid
};

enum class ParseStatus {
  kOk,
  kMalformed,   // type, code and mid are valid; token too iff token_readable
  kUnreadable,  // shorter than 4 bytes or not version 1: ignore silently
};

enum class ParseError {
  kNone, kTooShort, kBadVersion, kBadTokenLength, kTruncatedToken, kEmptyWithData,
  kReservedCode, kReservedNibble, kTruncatedOption, kOptionNumberOverflow, kMarkerWithoutPayload,
};
const char* Describe(ParseError e);

struct ParseResult {
  ParseStatus status = ParseStatus::kOk;
  ParseError error = ParseError::kNone;
  bool token_readable = false;
  bool ok() const { return status == ParseStatus::kOk; }
};

// Parses `datagram` into `out` (out.options is cleared and its capacity reused).
ParseResult Parse(std::span<const uint8_t> datagram, Message& out);

// Appends a message to a fixed buffer. Options must be added in nondecreasing
// number order. Any overflow or misuse latches ok() to false.
class Writer {
 public:
  explicit Writer(std::span<uint8_t> out) : out_(out) {}
  void Header(Type type, uint8_t code, uint16_t mid, std::span<const uint8_t> token);
  void Option(uint16_t number, std::span<const uint8_t> value);
  void Option(uint16_t number, std::string_view value);
  void OptionUint(uint16_t number, uint32_t value);
  void Payload(std::span<const uint8_t> bytes);  // writes the marker only if non-empty
  bool ok() const { return ok_; }
  size_t size() const { return ok_ ? used_ : 0; }

 private:
  void Put(const uint8_t* p, size_t n);
  std::span<uint8_t> out_;
  size_t used_ = 0;
  uint16_t last_number_ = 0;
  bool ok_ = true;
};

// Serializes `m`; returns 0 if it does not fit.
size_t Serialize(const Message& m, std::span<uint8_t> out);

}  // namespace tether::coap
