// Readiness watchers: uv_poll_t on Node's own loop (napi_get_uv_event_loop,
// never uv_default_loop), for plain fds (watch) and for eventfds that are
// drained in C++ before the JS callback runs once (watchEventfd).
//
// Lifetime:
// - WatchState owns the uv_poll_t and lives until libuv's close callback.
// - The JS FdWatcher (an ObjectWrap) points at it. close() stops the poll,
//   uv_close()s the handle and drops the JS callback reference (a
//   LoopCallback, js_callback.h, shared with poll_set.cc). A watcher
//   that is garbage-collected while open is closed by its finalizer (which
//   only calls uv_* and napi_delete_reference/napi_async_destroy: no JS).
// - An open, started watcher keeps the loop alive (an active uv handle); a
//   stopped ('' events or after an error) or closed one does not.
#include <errno.h>
#include <uv.h>

#include <cstdint>
#include <mutex>
#include <set>
#include <string>
#include <utility>

#include "addon.h"
#include "args.h"
#include "js_callback.h"

namespace vun {
namespace {

enum class Kind { kGeneric, kEventfd };

// The fds that have an open (not closed, possibly paused) watcher, per loop
// (main thread and workers each have theirs). libuv cannot have two uv_poll_t
// on one fd of a loop: events would go to one of them only. Never destroyed
// (it may be used while the process exits).
struct Registry {
  std::mutex mutex;
  std::set<std::pair<uv_loop_t*, int>> fds;
};
Registry& TheRegistry() {
  static Registry* registry = new Registry();
  return *registry;
}
bool Register(uv_loop_t* loop, int fd) {
  Registry& r = TheRegistry();
  std::lock_guard<std::mutex> lock(r.mutex);
  return r.fds.emplace(loop, fd).second;
}
void Unregister(uv_loop_t* loop, int fd) {
  Registry& r = TheRegistry();
  std::lock_guard<std::mutex> lock(r.mutex);
  r.fds.erase({loop, fd});
}

// Consecutive failed drains after which an eventfd watcher stops polling
// (a persistent read error would otherwise make the loop spin).
constexpr int kMaxDrainErrors = 3;

struct WatchState {
  uv_poll_t poll;  // poll.data == this
  uv_loop_t* loop = nullptr;
  napi_env env = nullptr;
  int fd = -1;
  Kind kind = Kind::kGeneric;
  int events = 0;  // sys::kRead|sys::kWrite currently polled for
  bool closed = false;
  int drain_errors = 0;
  LoopCallback callback;

  // Starts/changes/stops polling; returns 0 or a libuv error.
  int Apply(int mask) {
    drain_errors = 0;
    if (mask == 0) {
      events = 0;
      return uv_poll_stop(&poll);
    }
    int uv_events = ((mask & sys::kRead) ? UV_READABLE : 0) | ((mask & sys::kWrite) ? UV_WRITABLE : 0);
    int err = uv_poll_start(&poll, uv_events, OnPoll);
    events = err == 0 ? mask : 0;
    return err;
  }

  // Idempotent. After this no callback runs; the memory goes with uv_close.
  void Close() {
    if (closed) return;
    closed = true;
    events = 0;
    Unregister(loop, fd);
    uv_poll_stop(&poll);
    uv_close(reinterpret_cast<uv_handle_t*>(&poll),
             [](uv_handle_t* handle) { delete static_cast<WatchState*>(handle->data); });
    // Inside the callback the references are released when it returns.
    if (!callback.running()) callback.Release();
  }

  // Calls the JS callback, with `what` as its argument if non-null.
  void Invoke(const char* what) {
    callback.Invoke([what](napi_env env, napi_value* argv, size_t* argc) {
      if (what == nullptr) return true;
      *argc = 1;
      return napi_create_string_utf8(env, what, NAPI_AUTO_LENGTH, &argv[0]) == napi_ok;
    });
    if (closed && !callback.running()) callback.Release();
  }

  static void OnPoll(uv_poll_t* handle, int status, int uv_events) {
    auto* self = static_cast<WatchState*>(handle->data);
    if (self->closed) return;
    if (self->kind == Kind::kEventfd) {
      // status < 0: POLLERR, and libuv has already stopped the handle.
      bool stop = status < 0;
      if (!stop) {
        uint64_t total = 0;
        int err = 0;
        switch (sys::DrainEventfd(self->fd, &total, &err)) {
          case sys::DrainStatus::kDrained:
            self->drain_errors = 0;
            break;
          case sys::DrainStatus::kEof:  // writer gone (a pipe): would spin
            stop = true;
            break;
          case sys::DrainStatus::kError:
            stop = sys::FdHungUp(self->fd) || ++self->drain_errors >= kMaxDrainErrors;
            break;
        }
      }
      if (stop) {
        uv_poll_stop(&self->poll);
        self->events = 0;
      }
      self->Invoke(nullptr);
      return;
    }
    const char* what;
    if (status < 0) {
      what = "error";
      self->events = 0;  // libuv stopped the handle
    } else {
      int mask = ((uv_events & UV_READABLE) ? sys::kRead : 0) | ((uv_events & UV_WRITABLE) ? sys::kWrite : 0);
      mask &= self->events;
      if (mask == 0) return;
      what = sys::EventsName(mask);
    }
    self->Invoke(what);
  }
};

class FdWatcher : public Napi::ObjectWrap<FdWatcher> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "FdWatcher",
                       {InstanceMethod<&FdWatcher::SetEvents>("setEvents"),
                        InstanceMethod<&FdWatcher::Close>("close")});
  }

  explicit FdWatcher(const Napi::CallbackInfo& info) : Napi::ObjectWrap<FdWatcher>(info) {
    if (info.Length() != 1 || !info[0].IsExternal()) {
      ThrowTypeError(info.Env(), "FdWatcher is created by watch() / watchEventfd()");
    }
    state_ = info[0].As<Napi::External<WatchState>>().Data();
  }

  // Runs from the GC finalizer (or at env teardown): no JS here.
  ~FdWatcher() override { CloseState(); }

 private:
  void SetEvents(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!info[0].IsString()) ThrowTypeError(env, "events must be '', 'r', 'w' or 'rw'");
    int mask = sys::ParseEvents(info[0].As<Napi::String>().Utf8Value());
    if (mask < 0) ThrowTypeError(env, "events must be '', 'r', 'w' or 'rw'");
    if (state_ == nullptr) return;  // closed: a no-op
    if (state_->kind == Kind::kEventfd && (mask & sys::kWrite)) {
      ThrowTypeError(env, "an eventfd watcher only takes '' or 'r'");
    }
    int err = state_->Apply(mask);
    if (err != 0) ThrowErrno(env, -err, "uv_poll_start");
  }

  void Close(const Napi::CallbackInfo&) { CloseState(); }

  void CloseState() {
    if (state_ == nullptr) return;
    state_->Close();
    state_ = nullptr;  // freed by libuv's close callback
  }

  WatchState* state_ = nullptr;
};

Napi::Value CreateWatcher(Napi::Env env, int fd, Kind kind, int mask, Napi::Function callback) {
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) {
    throw Napi::Error::New(env, "cannot get the event loop");
  }
  // One watcher per fd: use 'rw' on one watcher rather than two watchers.
  if (!Register(loop, fd)) ThrowErrno(env, EEXIST, "watch", "this fd already has a watcher");
  auto* state = new WatchState();
  state->loop = loop;
  state->env = env;
  state->fd = fd;
  state->kind = kind;
  // Fails e.g. with EEXIST if libuv already polls the fd (another handle on
  // this loop), EPERM for a regular file, EBADF for a closed fd. Also makes
  // the fd O_NONBLOCK.
  int err = uv_poll_init(loop, &state->poll, fd);
  if (err != 0) {
    Unregister(loop, fd);
    delete state;
    ThrowErrno(env, -err, "uv_poll_init");
  }
  state->poll.data = state;
  // From here on `state` is freed only through Close() -> uv_close.
  try {
    NAPI_THROW_IF_FAILED(env,
                         state->callback.Init(env, callback, kind == Kind::kEventfd ? "vhost-user-net:EventfdWatcher"
                                                                                    : "vhost-user-net:FdWatcher"),
                         Napi::Value());
    err = state->Apply(mask);
    if (err != 0) ThrowErrno(env, -err, "uv_poll_start");
    return GetEnvData(env)->watcher_constructor.New({Napi::External<WatchState>::New(env, state)});
  } catch (...) {
    state->Close();
    throw;
  }
}

Napi::Value Watch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  if (!info[1].IsString()) ThrowTypeError(env, "events must be 'r', 'w' or 'rw'");
  int mask = sys::ParseEvents(info[1].As<Napi::String>().Utf8Value());
  if (mask <= 0) ThrowTypeError(env, "events must be 'r', 'w' or 'rw'");
  Napi::Function callback = ArgFunction(info, 2, "onReady");
  return CreateWatcher(env, fd, Kind::kGeneric, mask, callback);
}

Napi::Value WatchEventfd(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  Napi::Function callback = ArgFunction(info, 1, "onSignal");
  return CreateWatcher(info.Env(), fd, Kind::kEventfd, sys::kRead, callback);
}

}  // namespace

void InitFdWatch(Napi::Env env, Napi::Object exports) {
  GetEnvData(env)->watcher_constructor = Napi::Persistent(FdWatcher::Define(env));
  exports.Set("watch", Napi::Function::New<Watch>(env, "watch"));
  exports.Set("watchEventfd", Napi::Function::New<WatchEventfd>(env, "watchEventfd"));
}

}  // namespace vun
