// Plain fd helpers: close(2), the open-fd count used by leak tests, and
// RLIMIT_NOFILE (Node has no setrlimit).
#include <errno.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cmath>

#include "addon.h"
#include "args.h"

namespace vun {
namespace {

// close(2). Only EBADF is an error worth reporting: on Linux the fd is gone
// after close() whatever it returns (EINTR/EIO included).
void Close(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  if (close(fd) < 0 && errno == EBADF) ThrowErrno(info.Env(), EBADF, "close");
}

Napi::Value OpenFdCount(const Napi::CallbackInfo& info) {
  int err = 0;
  int count = sys::CountOpenFds(&err);
  if (count < 0) ThrowErrno(info.Env(), err, "opendir", "/proc/self/fd");
  return Napi::Number::New(info.Env(), count);
}

// An rlim_t as a JS number: RLIM_INFINITY is Infinity.
Napi::Value LimitValue(Napi::Env env, uint64_t v) {
  if (v == static_cast<uint64_t>(RLIM_INFINITY)) return Napi::Number::New(env, INFINITY);
  return Napi::Number::New(env, static_cast<double>(v));
}

// A JS number as an rlim_t: an integer in [0, 2^53 - 1], or Infinity.
uint64_t ArgLimit(const Napi::CallbackInfo& info, size_t i, const char* name) {
  Napi::Value v = info[i];
  if (v.IsNumber() && v.As<Napi::Number>().DoubleValue() == INFINITY) {
    return static_cast<uint64_t>(RLIM_INFINITY);
  }
  return ArgSize(info, i, name);
}

Napi::Value GetFdLimit(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  sys::FdLimit limit;
  int err = 0;
  if (!sys::GetFdLimit(&limit, &err)) ThrowErrno(env, err, "getrlimit", "RLIMIT_NOFILE");
  Napi::Object result = Napi::Object::New(env);
  result.Set("soft", LimitValue(env, limit.soft));
  result.Set("hard", LimitValue(env, limit.hard));
  return result;
}

void SetFdLimit(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  sys::FdLimit limit;
  limit.soft = ArgLimit(info, 0, "soft");
  limit.hard = ArgLimit(info, 1, "hard");
  int err = 0;
  if (!sys::SetFdLimit(limit, &err)) ThrowErrno(env, err, "setrlimit", "RLIMIT_NOFILE");
}

}  // namespace

void InitFds(Napi::Env env, Napi::Object exports) {
  exports.Set("close", Napi::Function::New<Close>(env, "close"));
  exports.Set("openFdCount", Napi::Function::New<OpenFdCount>(env, "openFdCount"));
  exports.Set("getFdLimit", Napi::Function::New<GetFdLimit>(env, "getFdLimit"));
  exports.Set("setFdLimit", Napi::Function::New<SetFdLimit>(env, "setFdLimit"));
}

}  // namespace vun
