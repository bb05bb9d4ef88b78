// Module initialisation. See src/native/index.ts for the surface and its
// semantics; each concern lives in its own file.
#include "addon.h"

namespace vun {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  env.SetInstanceData(new EnvData());
  InitUnixSocket(env, exports);
  InitFds(env, exports);
  InitEventfd(env, exports);
  InitFdWatch(env, exports);
  InitGuestMemory(env, exports);
  InitPingSocket(env, exports);
  InitUdpErrors(env, exports);
  InitHostSockets(env, exports);
  InitPollSet(env, exports);
  return exports;
}

}  // namespace vun

namespace {
Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return vun::Init(env, exports); }
}  // namespace

NODE_API_MODULE(vhost_user_net, InitModule)
