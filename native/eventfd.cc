// eventfds: create, signal (add 1), drain (read and reset).
#include <errno.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdint>

#include "addon.h"
#include "args.h"

namespace vun {
namespace {

Napi::Value EventfdCreate(const Napi::CallbackInfo& info) {
  int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) ThrowErrno(info.Env(), errno, "eventfd");
  return Napi::Number::New(info.Env(), fd);
}

Napi::Value EventfdSignal(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  // The fd comes from the frontend, which controls O_NONBLOCK on it: a
  // blocking eventfd whose counter is saturated would block write() and the
  // whole event loop. Ask first; only the frontend can race us to saturation.
  struct pollfd writable = {fd, POLLOUT, 0};
  int ready;
  do {
    ready = poll(&writable, 1, 0);
  } while (ready < 0 && errno == EINTR);
  if (ready < 0) ThrowErrno(env, errno, "poll");
  if (ready == 0 || !(writable.revents & POLLOUT)) return Napi::Boolean::New(env, false);
  uint64_t one = 1;
  ssize_t n;
  do {
    n = write(fd, &one, sizeof one);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Napi::Boolean::New(env, false);
    ThrowErrno(env, errno, "write");
  }
  if (n != static_cast<ssize_t>(sizeof one)) ThrowErrno(env, EIO, "write", "short write to eventfd");
  return Napi::Boolean::New(env, true);
}

Napi::Value EventfdDrain(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  uint64_t value = 0;
  ssize_t n;
  do {
    n = read(fd, &value, sizeof value);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Napi::Number::New(env, 0);
    ThrowErrno(env, errno, "read");
  }
  if (n != static_cast<ssize_t>(sizeof value)) ThrowErrno(env, EINVAL, "read", "not an eventfd");
  return Napi::Number::New(env, static_cast<double>(value));
}

}  // namespace

void InitEventfd(Napi::Env env, Napi::Object exports) {
  exports.Set("eventfdCreate", Napi::Function::New<EventfdCreate>(env, "eventfdCreate"));
  exports.Set("eventfdSignal", Napi::Function::New<EventfdSignal>(env, "eventfdSignal"));
  exports.Set("eventfdDrain", Napi::Function::New<EventfdDrain>(env, "eventfdDrain"));
}

}  // namespace vun
