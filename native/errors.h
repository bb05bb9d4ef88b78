// Throwing JS errors from the addon (built with C++ exceptions enabled:
// NAPI_CPP_EXCEPTIONS, so a thrown Napi::Error becomes a JS exception when it
// leaves a binding).
//
// System errors: Error with .code = errno name ('EAGAIN'), .errno = the
// negated errno number (as in Node's own system errors, so
// util.getSystemErrorName(err.errno) works) and .syscall.
#pragma once

#include <napi.h>
#include <string.h>

#include <string>

#include "sys.h"

namespace vun {

[[noreturn]] inline void ThrowErrno(Napi::Env env, int err, const char* syscall,
                                    const std::string& detail = std::string()) {
  const char* name = sys::ErrnoName(err);
  std::string message = std::string(syscall) + " " + name + ": " + strerror(err);
  if (!detail.empty()) message += " (" + detail + ")";
  Napi::Error error = Napi::Error::New(env, message);
  error.Set("code", Napi::String::New(env, name));
  error.Set("errno", Napi::Number::New(env, -err));
  error.Set("syscall", Napi::String::New(env, syscall));
  throw error;
}

[[noreturn]] inline void ThrowTypeError(Napi::Env env, const std::string& message) {
  throw Napi::TypeError::New(env, message);
}

[[noreturn]] inline void ThrowRangeError(Napi::Env env, const std::string& message) {
  throw Napi::RangeError::New(env, message);
}

}  // namespace vun
