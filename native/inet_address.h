// IPv4/IPv6 socket addresses to and from text, shared by the ICMP ping
// sockets (ping_socket.cc), the UDP sockets (udp_errors.cc) and the raw host
// sockets (host_sockets.cc).
#pragma once

#include <napi.h>
#include <sys/socket.h>

#include <string>

namespace vun {

// The socket's domain (SO_DOMAIN): AF_INET or AF_INET6 (throws otherwise,
// with `syscall` naming the call the caller is about to make).
int InetSocketDomain(Napi::Env env, int fd, const char* syscall);

// Parses `address` for `domain` (AF_INET or AF_INET6; IPv6 may carry a
// "%scope", an interface name or number) with `port`, into *out. Returns the
// address length. An unparsable address throws a TypeError.
socklen_t ParseInetAddress(Napi::Env env, int domain, const std::string& address, uint16_t port,
                           struct sockaddr_storage* out);

// The address as text ("" for anything but AF_INET/AF_INET6); IPv6 with a
// scope id gets "%interface".
std::string FormatInetAddress(const struct sockaddr_storage& address);

// The port of an AF_INET/AF_INET6 address (host order), 0 otherwise.
uint16_t InetPort(const struct sockaddr_storage& address);

// Binds inet socket `fd` to `address`:`port` (port 0: the kernel picks) and
// returns the port bound; throws the errno of bind or getsockname.
uint16_t BindInet(Napi::Env env, int fd, const std::string& address, uint16_t port);

}  // namespace vun
