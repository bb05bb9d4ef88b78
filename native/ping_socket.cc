// ICMP "ping" sockets (SOCK_DGRAM + IPPROTO_ICMP/IPPROTO_ICMPV6): unprivileged
// echo requests, allowed for the groups in net.ipv4.ping_group_range (which
// covers IPv6 too). The kernel owns the identifier and the checksum.
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "addon.h"
#include "args.h"
#include "inet_address.h"

namespace vun {
namespace {

Napi::Value PingSocket(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber()) ThrowTypeError(env, "family must be 4 or 6");
  double family = info[0].As<Napi::Number>().DoubleValue();
  if (family != 4 && family != 6) ThrowRangeError(env, "family must be 4 or 6");
  int fd = family == 4 ? socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_ICMP)
                       : socket(AF_INET6, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_ICMPV6);
  if (fd < 0) ThrowErrno(env, errno, "socket", family == 4 ? "ICMP ping socket" : "ICMPv6 ping socket");
  return Napi::Number::New(env, fd);
}

Napi::Value PingSend(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  ArgBytes(info, 1, "message");
  std::string address = ArgString(info, 2, "address");
  struct sockaddr_storage to;
  socklen_t to_len = ParseInetAddress(env, InetSocketDomain(env, fd, "sendto"), address, 0, &to);
  Napi::Uint8Array message = ArgBytes(info, 1, "message");
  ssize_t n;
  do {
    n = sendto(fd, message.Data(), message.ByteLength(), MSG_DONTWAIT | MSG_NOSIGNAL,
               reinterpret_cast<struct sockaddr*>(&to), to_len);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return env.Null();
    ThrowErrno(env, errno, "sendto", address);
  }
  return Napi::Number::New(env, static_cast<double>(n));
}

Napi::Value PingRecv(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  Napi::Uint8Array into = ArgBytes(info, 1, "into");
  struct sockaddr_storage from;
  memset(&from, 0, sizeof from);
  socklen_t from_len;
  ssize_t n;
  do {
    from_len = sizeof from;
    n = recvfrom(fd, into.Data(), into.ByteLength(), MSG_DONTWAIT, reinterpret_cast<struct sockaddr*>(&from),
                 &from_len);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return env.Null();
    ThrowErrno(env, errno, "recvfrom");
  }
  Napi::Object result = Napi::Object::New(env);
  result.Set("bytes", Napi::Number::New(env, static_cast<double>(n)));
  result.Set("address", Napi::String::New(env, FormatInetAddress(from)));
  return result;
}

}  // namespace

void InitPingSocket(Napi::Env env, Napi::Object exports) {
  exports.Set("pingSocket", Napi::Function::New<PingSocket>(env, "pingSocket"));
  exports.Set("pingSend", Napi::Function::New<PingSend>(env, "pingSend"));
  exports.Set("pingRecv", Napi::Function::New<PingRecv>(env, "pingRecv"));
}

}  // namespace vun
