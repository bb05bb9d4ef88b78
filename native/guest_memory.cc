// Guest memory: mmap/munmap exposed as external ArrayBuffers, memfd_create
// (optionally sealed), fdSize and fdSeals.
//
// A Mapping is a plain object { buffer, size } (both read-only) tagged with a
// type tag and wrapping a MappingState. The state has two owners, counted in
// `refs`: the ArrayBuffer's finalizer and the Mapping object's wrap
// finalizer. Only the ArrayBuffer finalizer may unmap on its own (the buffer
// can outlive the Mapping object if JS keeps `mapping.buffer`); munmap()
// detaches the buffer first, so no JS can touch the range afterwards.
// Neither finalizer calls into JS.
#include <errno.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <string>

#include "addon.h"
#include "args.h"

namespace vun {
namespace {

struct MappingState {
  void* base = nullptr;  // what mmap returned (page aligned)
  size_t map_len = 0;    // what was mapped (size + slack)
  bool mapped = false;
  int refs = 0;
};

// Identifies objects made by mmap() (napi_type_tag_object, N-API 8).
const napi_type_tag kMappingTag = {0x7668c5e1a2b44d3fULL, 0x9b3e52c0d1f0a771ULL};

void Release(MappingState* state) {
  if (--state->refs == 0) delete state;
}

void Unmap(MappingState* state) {
  if (!state->mapped) return;
  state->mapped = false;
  munmap(state->base, state->map_len);
}

// ArrayBuffer finalizer: the buffer is unreachable (or detached), so the
// range is no longer visible to JS.
void FinalizeBuffer(napi_env, void*, void* hint) {
  auto* state = static_cast<MappingState*>(hint);
  Unmap(state);
  Release(state);
}

void FinalizeMapping(napi_env, void* data, void*) { Release(static_cast<MappingState*>(data)); }

// Throws a RangeError for a size V8/Node will not expose (Node 20: at most
// buffer.constants.MAX_LENGTH = 4 GiB), keeping the engine's message.
[[noreturn]] void ThrowTooLarge(Napi::Env env, uint64_t size) {
  std::string detail;
  bool pending = false;
  if (napi_is_exception_pending(env, &pending) == napi_ok && pending) {
    napi_value exception;
    napi_get_and_clear_last_exception(env, &exception);
    napi_value message;
    napi_valuetype type = napi_undefined;
    if (napi_get_named_property(env, exception, "message", &message) == napi_ok &&
        napi_typeof(env, message, &type) == napi_ok && type == napi_string) {
      detail = " (" + Napi::String(env, message).Utf8Value() + ")";
    }
  }
  ThrowRangeError(env, "mmap: cannot expose " + std::to_string(size) +
                           " bytes as an ArrayBuffer in this Node.js" + detail);
}

Napi::Value Mmap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  uint64_t size = ArgSize(info, 1, "size");
  uint64_t offset = ArgSize(info, 2, "offset");
  if (size == 0) ThrowRangeError(env, "size must be > 0");
  long page = sysconf(_SC_PAGESIZE);
  sys::MapSpan span;
  if (page <= 0 || !sys::AlignForMmap(offset, size, static_cast<uint64_t>(page), &span)) {
    ThrowRangeError(env, "size/offset out of range");
  }

  void* base = mmap(nullptr, span.map_len, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
                    static_cast<off_t>(span.aligned_offset));
  if (base == MAP_FAILED) ThrowErrno(env, errno, "mmap");

  auto* state = new MappingState();
  state->base = base;
  state->map_len = span.map_len;
  state->mapped = true;
  state->refs = 2;  // the ArrayBuffer finalizer + this function, for now

  napi_value buffer;
  napi_status status = napi_create_external_arraybuffer(env, static_cast<char*>(base) + span.slack,
                                                        static_cast<size_t>(size), FinalizeBuffer,
                                                        state, &buffer);
  if (status != napi_ok) {
    // Node may or may not have run (or will run) the finalizer: unmap here,
    // let whichever comes last free the state (a finalizer that never runs
    // leaks only the small struct).
    Unmap(state);
    Release(state);
    ThrowTooLarge(env, size);
  }

  // This function's reference becomes the Mapping object's.
  napi_value mapping;
  status = napi_create_object(env, &mapping);
  if (status == napi_ok) {
    napi_value size_value = Napi::Number::New(env, static_cast<double>(size));
    napi_property_descriptor props[] = {
        {"buffer", nullptr, nullptr, nullptr, nullptr, buffer, napi_enumerable, nullptr},
        {"size", nullptr, nullptr, nullptr, nullptr, size_value, napi_enumerable, nullptr},
    };
    status = napi_define_properties(env, mapping, 2, props);
  }
  if (status == napi_ok) status = napi_type_tag_object(env, mapping, &kMappingTag);
  if (status == napi_ok) status = napi_wrap(env, mapping, state, FinalizeMapping, nullptr, nullptr);
  if (status != napi_ok) {
    Release(state);  // the buffer's finalizer unmaps
    NAPI_THROW_IF_FAILED(env, status, Napi::Value());
  }
  return Napi::Value(env, mapping);
}

void Munmap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  bool tagged = false;
  if (info[0].IsObject()) {
    NAPI_THROW_IF_FAILED_VOID(env, napi_check_object_type_tag(env, info[0], &kMappingTag, &tagged));
  }
  if (!tagged) ThrowTypeError(env, "mapping must be a Mapping returned by mmap()");
  void* data = nullptr;
  NAPI_THROW_IF_FAILED_VOID(env, napi_unwrap(env, info[0], &data));
  auto* state = static_cast<MappingState*>(data);
  if (!state->mapped) return;  // idempotent

  napi_value buffer;
  NAPI_THROW_IF_FAILED_VOID(env, napi_get_named_property(env, info[0], "buffer", &buffer));
  // Mark first, so a finalizer triggered by the detach cannot unmap as well.
  void* base = state->base;
  size_t len = state->map_len;
  state->mapped = false;
  napi_status status = napi_detach_arraybuffer(env, buffer);
  if (status != napi_ok) {
    state->mapped = true;  // still visible to JS: must stay mapped
    NAPI_THROW_IF_FAILED_VOID(env, status);
  }
  if (munmap(base, len) < 0) ThrowErrno(env, errno, "munmap");
}

// memfdCreate(name, size, seals = 0).
Napi::Value MemfdCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = ArgString(info, 0, "name");
  uint64_t size = ArgSize(info, 1, "size");
  unsigned int seals = 0;
  if (!info[2].IsUndefined()) seals = static_cast<unsigned int>(ArgInteger(info, 2, "seals", 0, 0xffff));
  int err = 0;
  int fd = sys::MemfdCreate(name.c_str(), size, seals, &err);
  if (fd < 0) ThrowErrno(env, err, "memfd_create", name);
  return Napi::Number::New(env, fd);
}

// fdSeals(fd): F_GET_SEALS, or -1 for a file that cannot carry seals.
Napi::Value FdSeals(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  int err = 0;
  int seals = sys::GetSeals(fd, &err);
  if (seals < 0) {
    if (err == EINVAL) return Napi::Number::New(env, -1);
    ThrowErrno(env, err, "fcntl", "F_GET_SEALS");
  }
  return Napi::Number::New(env, seals);
}

Napi::Value FdSize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  struct stat st;
  if (fstat(fd, &st) < 0) ThrowErrno(env, errno, "fstat");
  if (!S_ISREG(st.st_mode)) return Napi::Number::New(env, -1);
  return Napi::Number::New(env, static_cast<double>(st.st_size));
}

}  // namespace

void InitGuestMemory(Napi::Env env, Napi::Object exports) {
  exports.Set("mmap", Napi::Function::New<Mmap>(env, "mmap"));
  exports.Set("munmap", Napi::Function::New<Munmap>(env, "munmap"));
  exports.Set("memfdCreate", Napi::Function::New<MemfdCreate>(env, "memfdCreate"));
  exports.Set("fdSize", Napi::Function::New<FdSize>(env, "fdSize"));
  exports.Set("fdSeals", Napi::Function::New<FdSeals>(env, "fdSeals"));
}

}  // namespace vun
