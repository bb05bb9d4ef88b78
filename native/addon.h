// Module-wide declarations: per-environment data and the Init function of
// each concern. Every Init adds its functions to `exports`.
#pragma once

#include <napi.h>

namespace vun {

// Per-env state (the addon is context-aware: main thread and workers each
// get their own). Owned by the env via SetInstanceData.
struct EnvData {
  Napi::FunctionReference watcher_constructor;
  Napi::FunctionReference poll_set_constructor;
};

inline EnvData* GetEnvData(Napi::Env env) { return env.GetInstanceData<EnvData>(); }

void InitUnixSocket(Napi::Env env, Napi::Object exports);  // unix_socket.cc
void InitFds(Napi::Env env, Napi::Object exports);         // fds.cc
void InitEventfd(Napi::Env env, Napi::Object exports);     // eventfd.cc
void InitFdWatch(Napi::Env env, Napi::Object exports);     // fd_watch.cc
void InitGuestMemory(Napi::Env env, Napi::Object exports); // guest_memory.cc
void InitPingSocket(Napi::Env env, Napi::Object exports);  // ping_socket.cc
void InitUdpErrors(Napi::Env env, Napi::Object exports);   // udp_errors.cc
void InitHostSockets(Napi::Env env, Napi::Object exports); // host_sockets.cc
void InitPollSet(Napi::Env env, Napi::Object exports);     // poll_set.cc

}  // namespace vun
