// AF_UNIX stream sockets: listen/accept/connect/socketpair, a peer-closed
// probe, and the SCM_RIGHTS-carrying recvMsg/sendMsg. Every fd returned is
// O_NONBLOCK|O_CLOEXEC.
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstddef>
#include <string>
#include <vector>

#include "addon.h"
#include "args.h"

namespace vun {
namespace {

constexpr int kSockFlags = SOCK_NONBLOCK | SOCK_CLOEXEC;
// Listening socket files: owner read/write only (connect needs write).
constexpr mode_t kSocketFileMode = 0600;

struct sockaddr_un MakeAddress(Napi::Env env, const std::string& path, const char* syscall,
                               socklen_t* len) {
  struct sockaddr_un addr;
  memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  if (path.empty()) ThrowTypeError(env, "path must be a non-empty string");
  if (path.size() >= sizeof addr.sun_path) ThrowErrno(env, ENAMETOOLONG, syscall, path);
  memcpy(addr.sun_path, path.data(), path.size());
  *len = static_cast<socklen_t>(offsetof(struct sockaddr_un, sun_path) + path.size() + 1);
  return addr;
}

// Throws after closing fd (keeps errno of the failed call).
[[noreturn]] void CloseAndThrow(Napi::Env env, int fd, const char* syscall, const std::string& detail) {
  int err = errno;
  close(fd);
  ThrowErrno(env, err, syscall, detail);
}

// socket + bind + listen on a path where nothing exists yet (bind fails with
// EADDRINUSE otherwise: whether an existing file may be replaced is for the
// caller to decide, see src/vhost-user/listen-socket.ts). The socket file is
// created with mode 0600: the socket's inode is fchmod-ed before bind, which
// Linux copies (less the umask) to the file bind creates; should the file
// still come out with more bits, it is chmod-ed before listen(), until which
// every connect() to it is refused anyway. No umask() juggling: the umask is
// process-wide and libuv's threads create files concurrently.
// Returns { fd, dev, ino }: the identity of the file created, so that the
// caller removes that file and never a later one at the same path.
Napi::Value UnixListen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = ArgString(info, 0, "path");
  int backlog = static_cast<int>(ArgInteger(info, 1, "backlog", 0, INT_MAX));
  socklen_t len;
  struct sockaddr_un addr = MakeAddress(env, path, "bind", &len);

  int fd = socket(AF_UNIX, SOCK_STREAM | kSockFlags, 0);
  if (fd < 0) ThrowErrno(env, errno, "socket");
  if (fchmod(fd, kSocketFileMode) < 0) CloseAndThrow(env, fd, "fchmod", path);
  if (bind(fd, reinterpret_cast<struct sockaddr*>(&addr), len) < 0) CloseAndThrow(env, fd, "bind", path);
  // From here on the file is ours: remove it again if we fail.
  auto fail = [&](const char* syscall) {
    int err = errno;
    unlink(path.c_str());
    close(fd);
    ThrowErrno(env, err, syscall, path);
  };
  struct stat st;
  if (lstat(path.c_str(), &st) < 0) fail("lstat");
  if ((st.st_mode & 07777 & ~kSocketFileMode) != 0 && chmod(path.c_str(), kSocketFileMode) < 0) fail("chmod");
  if (listen(fd, backlog) < 0) fail("listen");
  Napi::Object result = Napi::Object::New(env);
  result.Set("fd", Napi::Number::New(env, fd));
  result.Set("dev", Napi::BigInt::New(env, static_cast<uint64_t>(st.st_dev)));
  result.Set("ino", Napi::BigInt::New(env, static_cast<uint64_t>(st.st_ino)));
  return result;
}

Napi::Value UnixAccept(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int listen_fd = ArgFd(info, 0, "listenFd");
  for (;;) {
    int fd = accept4(listen_fd, nullptr, nullptr, kSockFlags);
    if (fd >= 0) return Napi::Number::New(env, fd);
    // ECONNABORTED: a connection that died in the queue; try the next one.
    if (errno == EINTR || errno == ECONNABORTED) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return env.Null();
    ThrowErrno(env, errno, "accept4");
  }
}

// Non-blocking connect: for AF_UNIX it completes at once, or fails with
// ENOENT/ECONNREFUSED, or EAGAIN when the listener's backlog is full (a
// blocking connect would then hang the loop, possibly on a listener in this
// very process).
Napi::Value UnixConnect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = ArgString(info, 0, "path");
  socklen_t len;
  struct sockaddr_un addr = MakeAddress(env, path, "connect", &len);
  int fd = socket(AF_UNIX, SOCK_STREAM | kSockFlags, 0);
  if (fd < 0) ThrowErrno(env, errno, "socket");
  int r;
  do {
    r = connect(fd, reinterpret_cast<struct sockaddr*>(&addr), len);
  } while (r < 0 && errno == EINTR);
  if (r < 0) {
    if (errno == EWOULDBLOCK) errno = EAGAIN;
    CloseAndThrow(env, fd, "connect", path);
  }
  return Napi::Number::New(env, fd);
}

Napi::Value UnixSocketPair(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | kSockFlags, 0, fds) < 0) ThrowErrno(env, errno, "socketpair");
  Napi::Array result = Napi::Array::New(env, 2);
  result.Set(0u, Napi::Number::New(env, fds[0]));
  result.Set(1u, Napi::Number::New(env, fds[1]));
  return result;
}

// Whether the peer of a connected stream socket has closed its end (POLLHUP,
// or POLLERR: it closed with our data unread), asked with a zero-timeout
// poll: nothing is read. A peer that only shut down its sending side
// (POLLRDHUP alone) may still read, so it does not count. EBADF for an fd
// that is not open.
Napi::Value SocketPeerClosed(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  int revents = sys::PollNow(fd, POLLIN);
  if (revents < 0) ThrowErrno(env, -revents, "poll");
  if ((revents & POLLNVAL) != 0) ThrowErrno(env, EBADF, "poll");
  return Napi::Boolean::New(env, (revents & (POLLHUP | POLLERR)) != 0);
}

Napi::Value RecvMsg(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  Napi::Uint8Array into = ArgBytes(info, 1, "into");
  size_t max_fds = static_cast<size_t>(ArgInteger(info, 2, "maxFds", 0, sys::kScmMaxFd));
  // A zero-length read would be indistinguishable from end-of-stream.
  if (into.ByteLength() == 0) ThrowRangeError(env, "into must not be empty (or detached)");

  sys::RecvResult r = sys::RecvMsg(fd, into.Data(), into.ByteLength(), max_fds);
  if (r.bytes < 0) {
    if (r.err == EAGAIN) return env.Null();
    ThrowErrno(env, r.err, "recvmsg");
  }
  // Build the result; if that throws (out of memory), do not leak the fds.
  try {
    Napi::Array fds = Napi::Array::New(env, r.fds.size());
    for (size_t i = 0; i < r.fds.size(); i++) fds.Set(static_cast<uint32_t>(i), Napi::Number::New(env, r.fds[i]));
    Napi::Object result = Napi::Object::New(env);
    result.Set("bytes", Napi::Number::New(env, static_cast<double>(r.bytes)));
    result.Set("fds", fds);
    result.Set("fdsTruncated", Napi::Boolean::New(env, r.fds_truncated));
    if (r.fds_error != 0) {
      result.Set("fdsError", Napi::String::New(env, sys::ErrnoName(r.fds_error)));
    } else {
      result.Set("fdsError", env.Null());
    }
    return result;
  } catch (...) {
    for (int received : r.fds) close(received);
    throw;
  }
}

Napi::Value SendMsg(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  ArgBytes(info, 1, "data");  // type check first; fetched again below
  if (!info[2].IsArray()) ThrowTypeError(env, "fds must be an array of fds");
  Napi::Array array = info[2].As<Napi::Array>();
  uint32_t nfds = array.Length();
  if (nfds > sys::kScmMaxFd) ThrowRangeError(env, "at most 253 fds fit in one message");
  std::vector<int> fds(nfds);
  for (uint32_t i = 0; i < nfds; i++) {
    Napi::Value v = array.Get(i);
    if (!v.IsNumber()) ThrowTypeError(env, "fds must be an array of fds");
    double d = v.As<Napi::Number>().DoubleValue();
    if (!std::isfinite(d) || std::trunc(d) != d || d < 0 || d > INT_MAX) {
      ThrowRangeError(env, "fds must be integers in [0, 2147483647]");
    }
    fds[i] = static_cast<int>(d);
  }
  // Reading the array may have run JS (getters): look at the bytes only now.
  Napi::Uint8Array data = ArgBytes(info, 1, "data");
  // The kernel attaches fds to the bytes; with no bytes nothing is sent.
  if (nfds > 0 && data.ByteLength() == 0) ThrowRangeError(env, "fds need at least one byte of data");

  int err = 0;
  ssize_t n = sys::SendMsg(fd, data.Data(), data.ByteLength(), fds.data(), nfds, &err);
  if (n < 0) {
    if (err == EAGAIN) return env.Null();
    ThrowErrno(env, err, "sendmsg");
  }
  return Napi::Number::New(env, static_cast<double>(n));
}

}  // namespace

void InitUnixSocket(Napi::Env env, Napi::Object exports) {
  exports.Set("unixListen", Napi::Function::New<UnixListen>(env, "unixListen"));
  exports.Set("unixAccept", Napi::Function::New<UnixAccept>(env, "unixAccept"));
  exports.Set("unixConnect", Napi::Function::New<UnixConnect>(env, "unixConnect"));
  exports.Set("unixSocketPair", Napi::Function::New<UnixSocketPair>(env, "unixSocketPair"));
  exports.Set("socketPeerClosed", Napi::Function::New<SocketPeerClosed>(env, "socketPeerClosed"));
  exports.Set("recvMsg", Napi::Function::New<RecvMsg>(env, "recvMsg"));
  exports.Set("sendMsg", Napi::Function::New<SendMsg>(env, "sendMsg"));
}

}  // namespace vun
