// Plain fd helpers: close(2) and the open-fd count used by leak tests.
#include <errno.h>
#include <unistd.h>

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

}  // namespace

void InitFds(Napi::Env env, Napi::Object exports) {
  exports.Set("close", Napi::Function::New<Close>(env, "close"));
  exports.Set("openFdCount", Napi::Function::New<OpenFdCount>(env, "openFdCount"));
}

}  // namespace vun
