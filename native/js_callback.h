// A JS function called from libuv callbacks (fd_watch.cc, poll_set.cc): a
// persistent reference plus an async context, invoked with its own handle
// scope through napi_make_callback (so async hooks, nextTicks and microtasks
// behave), a JS exception turned into an uncaught exception
// (napi_fatal_exception) instead of being lost or aborting.
//
// Release() drops the references; it must not run while the function is on
// the stack (running() is true): the owner releases after Invoke returns.
// Neither Release() nor the destructor calls into JS, so both may run from
// a GC finalizer.
#pragma once

#include <node_api.h>

namespace vun {

class LoopCallback {
 public:
  // Returns napi_ok or the failing status (nothing to release then but what
  // Release() releases anyway).
  napi_status Init(napi_env env, napi_value fn, const char* resource_name) {
    env_ = env;
    napi_status status = napi_create_reference(env, fn, 1, &fn_);
    if (status != napi_ok) return status;
    napi_value name;
    status = napi_create_string_utf8(env, resource_name, NAPI_AUTO_LENGTH, &name);
    if (status != napi_ok) return status;
    return napi_async_init(env, nullptr, name, &async_);
  }

  bool running() const { return depth_ > 0; }
  bool released() const { return fn_ == nullptr; }

  // Calls the function with the arguments `make_args(env, argv)` returns
  // (at most 2; it runs inside the handle scope; false skips the call).
  template <typename MakeArgs>
  void Invoke(MakeArgs make_args) {
    napi_handle_scope scope;
    if (fn_ == nullptr || napi_open_handle_scope(env_, &scope) != napi_ok) return;
    napi_value fn = nullptr;
    napi_value recv = nullptr;
    napi_value argv[2];
    size_t argc = 0;
    bool ok = napi_get_reference_value(env_, fn_, &fn) == napi_ok && fn != nullptr &&
              napi_get_global(env_, &recv) == napi_ok && make_args(env_, argv, &argc);
    if (ok) {
      depth_++;
      napi_value result;
      napi_status status = napi_make_callback(env_, async_, recv, fn, argc, argv, &result);
      depth_--;
      if (status != napi_ok) {
        bool pending = false;
        if (napi_is_exception_pending(env_, &pending) == napi_ok && pending) {
          napi_value exception;
          if (napi_get_and_clear_last_exception(env_, &exception) == napi_ok) {
            napi_fatal_exception(env_, exception);
          }
        }
      }
    }
    napi_close_handle_scope(env_, scope);
  }

  void Release() {
    if (fn_ != nullptr) {
      napi_delete_reference(env_, fn_);
      fn_ = nullptr;
    }
    if (async_ != nullptr) {
      napi_async_destroy(env_, async_);
      async_ = nullptr;
    }
  }

 private:
  napi_env env_ = nullptr;
  napi_ref fn_ = nullptr;
  napi_async_context async_ = nullptr;
  int depth_ = 0;
};

}  // namespace vun
