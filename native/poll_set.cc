// The readiness multiplexer of the raw host sockets: one epoll set, watched
// by one uv_poll_t on Node's own loop (napi_get_uv_event_loop, never
// uv_default_loop). When the epoll fd is readable the addon drains
// epoll_wait into the caller's Uint32Array as (token, events) pairs and
// calls the JS callback ONCE with the count: no JS call and no allocation
// per ready socket.
//
// Level-triggered, on purpose: TypeScript decides how much of a socket it
// serves per turn (it may have no guest buffers to receive into), and a
// level-triggered set simply reports what is left on the next turn; the
// price is that a socket TypeScript cannot serve must be parked (modify to
// fewer events, or remove), or the loop spins. EPOLLET, EPOLLONESHOT and
// EPOLLEXCLUSIVE are refused. One batch holds at most
// min(ready.length / 2, 1024) pairs; more stay ready in the (level-triggered)
// epoll fd, so the uv_poll fires again on the next loop iteration: the work
// per turn is bounded.
//
// Lifetime (as fd_watch.cc): PollSetState owns the uv_poll_t and the epoll
// fd and lives until libuv's close callback, which closes the epoll fd (the
// poll is closed before its fd). The JS PollSet (an ObjectWrap) points at
// it; close() or its GC finalizer closes it (no JS from the finalizer). The
// sockets in the set belong to the caller: closing the set leaves them open.
// An open set keeps the loop alive.
#include <errno.h>
#include <sys/epoll.h>
#include <unistd.h>
#include <uv.h>

#include <cstdint>

#include "addon.h"
#include "args.h"
#include "host_io.h"
#include "js_callback.h"

namespace vun {
namespace {

constexpr uint32_t kAllowedEvents = EPOLLIN | EPOLLPRI | EPOLLOUT | EPOLLRDHUP | EPOLLERR | EPOLLHUP;

struct PollSetState {
  uv_poll_t poll;  // poll.data == this
  napi_env env = nullptr;
  int epfd = -1;
  bool closed = false;
  napi_ref ready = nullptr;  // the Uint32Array of (token, events) pairs
  LoopCallback callback;

  void Close() {
    if (closed) return;
    closed = true;
    uv_poll_stop(&poll);
    uv_close(reinterpret_cast<uv_handle_t*>(&poll), [](uv_handle_t* handle) {
      auto* self = static_cast<PollSetState*>(handle->data);
      close(self->epfd);
      delete self;
    });
    if (!callback.running()) ReleaseJs();
  }

  void ReleaseJs() {
    callback.Release();
    if (ready != nullptr) {
      napi_delete_reference(env, ready);
      ready = nullptr;
    }
  }

  // Drains one batch into the array and calls back with the count; a
  // negative count (-errno of epoll_wait, or -EINVAL when the array was
  // detached) stops the set.
  static void OnPoll(uv_poll_t* handle, int status, int) {
    auto* self = static_cast<PollSetState*>(handle->data);
    if (self->closed) return;
    self->callback.Invoke([self, status](napi_env env, napi_value* argv, size_t* argc) {
      int count = status < 0 ? -EIO : 0;
      if (count == 0) {
        napi_value array;
        void* data = nullptr;
        size_t length = 0;
        napi_typedarray_type type;
        if (napi_get_reference_value(env, self->ready, &array) != napi_ok || array == nullptr ||
            napi_get_typedarray_info(env, array, &type, &length, &data, nullptr, nullptr) != napi_ok ||
            length < 2 || data == nullptr) {
          count = -EINVAL;
        } else {
          count = hostio::DrainEpoll(self->epfd, static_cast<uint32_t*>(data), length / 2);
        }
      }
      if (count < 0) uv_poll_stop(&self->poll);
      if (count == 0) return false;  // woken with nothing ready: no call
      *argc = 1;
      return napi_create_int32(env, count, &argv[0]) == napi_ok;
    });
    if (self->closed && !self->callback.running()) self->ReleaseJs();
  }
};

class PollSet : public Napi::ObjectWrap<PollSet> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "PollSet",
                       {InstanceMethod<&PollSet::Add>("add"), InstanceMethod<&PollSet::Modify>("modify"),
                        InstanceMethod<&PollSet::Remove>("remove"), InstanceMethod<&PollSet::Close>("close")});
  }

  explicit PollSet(const Napi::CallbackInfo& info) : Napi::ObjectWrap<PollSet>(info) {
    if (info.Length() != 1 || !info[0].IsExternal()) ThrowTypeError(info.Env(), "PollSet is created by pollSet()");
    state_ = info[0].As<Napi::External<PollSetState>>().Data();
  }

  ~PollSet() override { CloseState(); }  // GC finalizer or env teardown: no JS

 private:
  void Control(const Napi::CallbackInfo& info, int op, const char* what) {
    Napi::Env env = info.Env();
    int fd = ArgFd(info, 0);
    struct epoll_event event = {};
    if (op != EPOLL_CTL_DEL) {
      event.events = static_cast<uint32_t>(ArgInteger(info, 1, "events", 0, UINT32_MAX));
      if ((event.events & ~kAllowedEvents) != 0) {
        ThrowRangeError(env, "events may hold only Poll.IN, PRI, OUT, RDHUP, ERR and HUP (level-triggered)");
      }
      event.data.u64 = static_cast<uint64_t>(ArgInteger(info, 2, "token", 0, UINT32_MAX));
    }
    if (state_ == nullptr) ThrowErrno(env, EBADF, what, "the poll set is closed");
    if (epoll_ctl(state_->epfd, op, fd, &event) < 0) ThrowErrno(env, errno, what);
  }
  void Add(const Napi::CallbackInfo& info) { Control(info, EPOLL_CTL_ADD, "epoll_ctl(ADD)"); }
  void Modify(const Napi::CallbackInfo& info) { Control(info, EPOLL_CTL_MOD, "epoll_ctl(MOD)"); }
  void Remove(const Napi::CallbackInfo& info) { Control(info, EPOLL_CTL_DEL, "epoll_ctl(DEL)"); }
  void Close(const Napi::CallbackInfo&) { CloseState(); }

  void CloseState() {
    if (state_ == nullptr) return;
    state_->Close();
    state_ = nullptr;  // freed by libuv's close callback
  }

  PollSetState* state_ = nullptr;
};

Napi::Value CreatePollSet(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Value ready = info[0];
  if (!ready.IsTypedArray() || ready.As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array) {
    ThrowTypeError(env, "ready must be a Uint32Array");
  }
  if (ready.As<Napi::Uint32Array>().ElementLength() < 2) ThrowRangeError(env, "ready must hold at least one pair");
  Napi::Function callback = ArgFunction(info, 1, "onReady");
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) {
    throw Napi::Error::New(env, "cannot get the event loop");
  }
  int epfd = epoll_create1(EPOLL_CLOEXEC);
  if (epfd < 0) ThrowErrno(env, errno, "epoll_create1");
  auto* state = new PollSetState();
  state->env = env;
  state->epfd = epfd;
  int err = uv_poll_init(loop, &state->poll, epfd);
  if (err != 0) {
    close(epfd);
    delete state;
    ThrowErrno(env, -err, "uv_poll_init");
  }
  state->poll.data = state;
  // From here on `state` is freed only through Close() -> uv_close.
  try {
    NAPI_THROW_IF_FAILED(env, state->callback.Init(env, callback, "vhost-user-net:PollSet"), Napi::Value());
    NAPI_THROW_IF_FAILED(env, napi_create_reference(env, ready, 1, &state->ready), Napi::Value());
    err = uv_poll_start(&state->poll, UV_READABLE, PollSetState::OnPoll);
    if (err != 0) ThrowErrno(env, -err, "uv_poll_start");
    return GetEnvData(env)->poll_set_constructor.New({Napi::External<PollSetState>::New(env, state)});
  } catch (...) {
    state->Close();
    throw;
  }
}

}  // namespace

void InitPollSet(Napi::Env env, Napi::Object exports) {
  GetEnvData(env)->poll_set_constructor = Napi::Persistent(PollSet::Define(env));
  exports.Set("pollSet", Napi::Function::New<CreatePollSet>(env, "pollSet"));
}

}  // namespace vun
