// Strict argument validation for the bindings: a wrong type throws TypeError,
// a number of the right type but out of range (or not an integer) throws
// RangeError. Nothing is coerced.
#pragma once

#include <napi.h>

#include <climits>
#include <cmath>
#include <cstdint>
#include <string>

#include "errors.h"

namespace vun {

constexpr double kMaxSafeInteger = 9007199254740991.0;  // 2^53 - 1

// An integral JS number in [min, max].
inline double ArgInteger(const Napi::CallbackInfo& info, size_t i, const char* name, double min,
                         double max) {
  Napi::Value v = info[i];
  if (!v.IsNumber()) ThrowTypeError(info.Env(), std::string(name) + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d) || std::trunc(d) != d || d < min || d > max) {
    ThrowRangeError(info.Env(), std::string(name) + " must be an integer in [" +
                                    std::to_string(static_cast<int64_t>(min)) + ", " +
                                    std::to_string(static_cast<int64_t>(max)) + "]");
  }
  return d;
}

inline int ArgFd(const Napi::CallbackInfo& info, size_t i, const char* name = "fd") {
  return static_cast<int>(ArgInteger(info, i, name, 0, INT_MAX));
}

inline uint64_t ArgSize(const Napi::CallbackInfo& info, size_t i, const char* name) {
  return static_cast<uint64_t>(ArgInteger(info, i, name, 0, kMaxSafeInteger));
}

// A string without embedded NULs.
inline std::string ArgString(const Napi::CallbackInfo& info, size_t i, const char* name) {
  Napi::Value v = info[i];
  if (!v.IsString()) ThrowTypeError(info.Env(), std::string(name) + " must be a string");
  std::string s = v.As<Napi::String>().Utf8Value();
  if (s.find('\0') != std::string::npos) {
    ThrowTypeError(info.Env(), std::string(name) + " must not contain NUL characters");
  }
  return s;
}

// A Uint8Array (Buffer included); no other views.
inline Napi::Uint8Array ArgBytes(const Napi::CallbackInfo& info, size_t i, const char* name) {
  Napi::Value v = info[i];
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    ThrowTypeError(info.Env(), std::string(name) + " must be a Uint8Array");
  }
  return v.As<Napi::Uint8Array>();
}

inline Napi::Function ArgFunction(const Napi::CallbackInfo& info, size_t i, const char* name) {
  Napi::Value v = info[i];
  if (!v.IsFunction()) ThrowTypeError(info.Env(), std::string(name) + " must be a function");
  return v.As<Napi::Function>();
}

}  // namespace vun
