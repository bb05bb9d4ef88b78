// See inet_address.h.
#include "inet_address.h"

#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <netinet/in.h>
#include <string.h>

#include <cstdint>
#include <cstdlib>

#include "errors.h"

namespace vun {

int InetSocketDomain(Napi::Env env, int fd, const char* syscall) {
  int domain = 0;
  socklen_t optlen = sizeof domain;
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &optlen) < 0) ThrowErrno(env, errno, "getsockopt");
  if (domain != AF_INET && domain != AF_INET6) ThrowErrno(env, EAFNOSUPPORT, syscall, "not an IPv4/IPv6 socket");
  return domain;
}

socklen_t ParseInetAddress(Napi::Env env, int domain, const std::string& address, uint16_t port,
                           struct sockaddr_storage* out) {
  memset(out, 0, sizeof *out);
  if (domain == AF_INET) {
    auto* sin = reinterpret_cast<struct sockaddr_in*>(out);
    sin->sin_family = AF_INET;
    sin->sin_port = htons(port);
    if (inet_pton(AF_INET, address.c_str(), &sin->sin_addr) != 1) {
      ThrowTypeError(env, "not an IPv4 address: " + address);
    }
    return sizeof *sin;
  }
  auto* sin6 = reinterpret_cast<struct sockaddr_in6*>(out);
  sin6->sin6_family = AF_INET6;
  sin6->sin6_port = htons(port);
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

std::string FormatInetAddress(const struct sockaddr_storage& address) {
  char text[INET6_ADDRSTRLEN + IF_NAMESIZE + 2] = {0};
  if (address.ss_family == AF_INET) {
    const auto* sin = reinterpret_cast<const struct sockaddr_in*>(&address);
    inet_ntop(AF_INET, &sin->sin_addr, text, sizeof text);
    return text;
  }
  if (address.ss_family == AF_INET6) {
    const auto* sin6 = reinterpret_cast<const struct sockaddr_in6*>(&address);
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

uint16_t InetPort(const struct sockaddr_storage& address) {
  if (address.ss_family == AF_INET) return ntohs(reinterpret_cast<const struct sockaddr_in*>(&address)->sin_port);
  if (address.ss_family == AF_INET6) return ntohs(reinterpret_cast<const struct sockaddr_in6*>(&address)->sin6_port);
  return 0;
}

uint16_t BindInet(Napi::Env env, int fd, const std::string& address, uint16_t port) {
  struct sockaddr_storage local;
  socklen_t local_len = ParseInetAddress(env, InetSocketDomain(env, fd, "bind"), address, port, &local);
  if (bind(fd, reinterpret_cast<struct sockaddr*>(&local), local_len) < 0) {
    ThrowErrno(env, errno, "bind", address + ":" + std::to_string(port));
  }
  struct sockaddr_storage bound;
  socklen_t bound_len = sizeof bound;
  memset(&bound, 0, sizeof bound);
  if (getsockname(fd, reinterpret_cast<struct sockaddr*>(&bound), &bound_len) < 0) ThrowErrno(env, errno, "getsockname");
  return InetPort(bound);
}

}  // namespace vun
