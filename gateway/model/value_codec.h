// Value codec: device payloads (CBOR, or JSON with Content-Format 50) <-> the Firebase data model.
//
// The data model is nlohmann::json restricted to objects, strings, numbers, booleans and null;
// arrays become objects keyed "0","1",... (as Firebase does); CBOR byte strings become
// json::binary (kept as bytes for devices, base64 text on the way to the cloud).
// Decoding never trusts input: errors are kInvalid Diagnostics (4.00 with the message as payload).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "gateway/model/diagnostic.h"

namespace tether {

using Json = nlohmann::json;

constexpr int kContentFormatText = 0;  // text/plain;charset=utf-8 (a push key)
constexpr int kContentFormatCbor = 60;
constexpr int kContentFormatJson = 50;

// Deepest nesting accepted while decoding (the data model allows 32 path levels).
constexpr int kMaxDecodeDepth = 48;

// Malformed input: a kInvalid Diagnostic saying what is wrong. An empty payload decodes to null.
// Null members and empty maps vanish (Firebase's model), except with `update`: the members of the
// top-level map are an update's children, where null means "remove" (Firebase's update), so they
// stay, and that map stays an object even when empty.
Expected<Json> DecodeCbor(std::string_view bytes, bool update = false);
Expected<Json> DecodeJson(std::string_view text, bool update = false);
// The former out-parameter form, deleted: a pointer would otherwise convert to `update` silently.
Expected<Json> DecodeCbor(std::string_view, std::string*, bool = false) = delete;
Expected<Json> DecodeJson(std::string_view, std::string*, bool = false) = delete;

// Definite-length CBOR (the SDK accepts definite and indefinite maps). Integral numbers that fit
// are encoded as integers, others as float64.
std::string EncodeCbor(const Json& value);
// JSON text; binary values become base64 strings.
std::string EncodeJson(const Json& value);
// The same value with every binary replaced by its base64 text (the form the cloud and the local
// copy hold).
Json WithoutBinary(Json value);

}  // namespace tether
