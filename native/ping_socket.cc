// ICMP "ping" sockets (SOCK_DGRAM + IPPROTO_ICMP/IPPROTO_ICMPV6): unprivileged
// echo requests, allowed for the groups in net.ipv4.ping_group_range (which
// covers IPv6 too). The kernel owns the identifier and the checksum.
#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "addon.h"
#include "args.h"

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

// Parses `address` for the socket's family. IPv6 may carry a "%scope"
// (interface name or number).
socklen_t ParseAddress(Napi::Env env, int fd, const std::string& address, struct sockaddr_storage* out) {
  int domain = 0;
  socklen_t optlen = sizeof domain;
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &optlen) < 0) ThrowErrno(env, errno, "getsockopt");
  memset(out, 0, sizeof *out);
  if (domain == AF_INET) {
    auto* sin = reinterpret_cast<struct sockaddr_in*>(out);
    sin->sin_family = AF_INET;
    if (inet_pton(AF_INET, address.c_str(), &sin->sin_addr) != 1) {
      ThrowTypeError(env, "not an IPv4 address: " + address);
    }
    return sizeof *sin;
  }
  if (domain == AF_INET6) {
    auto* sin6 = reinterpret_cast<struct sockaddr_in6*>(out);
    sin6->sin6_family = AF_INET6;
    std::string host = address;
    size_t percent = address.find('%');
    if (percent != std::string::npos) {
      host = address.substr(0, percent);
      std::string scope = address.substr(percent + 1);
      unsigned index = scope.empty() ? 0 : if_nametoindex(scope.c_str());
      if (index == 0 && !scope.empty()) {
        char* end = nullptr;
        unsigned long n = strtoul(scope.c_str(), &end, 10);
        if (*end == '\0' && n > 0 && n <= UINT32_MAX) index = static_cast<unsigned>(n);
      }
      if (index == 0) ThrowTypeError(env, "unknown IPv6 scope: " + address);
      sin6->sin6_scope_id = index;
    }
    if (inet_pton(AF_INET6, host.c_str(), &sin6->sin6_addr) != 1) {
      ThrowTypeError(env, "not an IPv6 address: " + address);
    }
    return sizeof *sin6;
  }
  ThrowErrno(env, EAFNOSUPPORT, "sendto", "not an IPv4/IPv6 socket");
}

std::string FormatAddress(const struct sockaddr_storage& from) {
  char text[INET6_ADDRSTRLEN + IF_NAMESIZE + 2] = {0};
  if (from.ss_family == AF_INET) {
    const auto* sin = reinterpret_cast<const struct sockaddr_in*>(&from);
    inet_ntop(AF_INET, &sin->sin_addr, text, sizeof text);
    return text;
  }
  if (from.ss_family == AF_INET6) {
    const auto* sin6 = reinterpret_cast<const struct sockaddr_in6*>(&from);
    inet_ntop(AF_INET6, &sin6->sin6_addr, text, sizeof text);
    std::string result = text;
    if (sin6->sin6_scope_id != 0) {
      char name[IF_NAMESIZE] = {0};
      result += '%';
      result += if_indextoname(sin6->sin6_scope_id, name) != nullptr ? std::string(name)
                                                                      : std::to_string(sin6->sin6_scope_id);
    }
    return result;
  }
  return std::string();
}

Napi::Value PingSend(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  ArgBytes(info, 1, "message");
  std::string address = ArgString(info, 2, "address");
  struct sockaddr_storage to;
  socklen_t to_len = ParseAddress(env, fd, address, &to);
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
  result.Set("address", Napi::String::New(env, FormatAddress(from)));
  return result;
}

}  // namespace

void InitPingSocket(Napi::Env env, Napi::Object exports) {
  exports.Set("pingSocket", Napi::Function::New<PingSocket>(env, "pingSocket"));
  exports.Set("pingSend", Napi::Function::New<PingSend>(env, "pingSend"));
  exports.Set("pingRecv", Napi::Function::New<PingRecv>(env, "pingRecv"));
}

}  // namespace vun
