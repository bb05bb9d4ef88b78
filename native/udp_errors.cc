// UDP sockets that learn about ICMP errors through their error queue, as
// passt does: with IP_RECVERR (IPV6_RECVERR) on, Linux queues every ICMP
// error for a datagram the socket sent (port/host/net unreachable,
// fragmentation needed, time exceeded...) on the socket, connected or not,
// as a `struct sock_extended_err` read with recvmsg(MSG_ERRQUEUE). Without
// it, an unconnected UDP socket is told nothing.
//
// The socket is created here (node:dgram cannot set IP_RECVERR) and adopted
// by node:dgram with `socket.bind({ fd })`. libuv turns SO_REUSEADDR on for
// a UDP fd it adopts (uv__udp_open -> uv__set_reuse), which would let any
// local process bind the same port and take our datagrams; so the socket is
// handed over unbound, and udpBind turns SO_REUSEADDR/SO_REUSEPORT off
// before it binds: the port is never bound with reuse on.
#include <errno.h>
#include <time.h>  // before linux/errqueue.h, which uses struct timespec
// clang-format off
#include <linux/errqueue.h>
// clang-format on
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <string>

#include "addon.h"
#include "args.h"
#include "inet_address.h"

namespace vun {
namespace {

constexpr double kMaxErrorsPerCall = 1024;

Napi::Value UdpSocket(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber()) ThrowTypeError(env, "family must be 4 or 6");
  double family = info[0].As<Napi::Number>().DoubleValue();
  if (family != 4 && family != 6) ThrowRangeError(env, "family must be 4 or 6");
  int fd = socket(family == 4 ? AF_INET : AF_INET6, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_UDP);
  if (fd < 0) ThrowErrno(env, errno, "socket", family == 4 ? "UDP" : "UDPv6");
  int one = 1;
  // IPv6 sockets also take IP_RECVERR: it covers IPv4-mapped destinations.
  if ((family == 6 && setsockopt(fd, IPPROTO_IPV6, IPV6_RECVERR, &one, sizeof one) < 0) ||
      setsockopt(fd, IPPROTO_IP, IP_RECVERR, &one, sizeof one) < 0) {
    int err = errno;
    close(fd);
    ThrowErrno(env, err, "setsockopt", family == 4 ? "IP_RECVERR" : "IPV6_RECVERR");
  }
  return Napi::Number::New(env, fd);
}

Napi::Value UdpBind(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  std::string address = ArgString(info, 1, "address");
  uint16_t port = static_cast<uint16_t>(ArgInteger(info, 2, "port", 0, 65535));
  int zero = 0;
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &zero, sizeof zero) < 0) {
    ThrowErrno(env, errno, "setsockopt", "SO_REUSEADDR");
  }
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &zero, sizeof zero) < 0) {
    ThrowErrno(env, errno, "setsockopt", "SO_REUSEPORT");
  }
  return Napi::Number::New(env, BindInet(env, fd, address, port));
}

// One entry of the error queue.
struct QueuedError {
  struct sockaddr_storage destination;  // where the offending datagram went
  struct sock_extended_err ee;
  struct sockaddr_storage offender;  // the ICMP message's source
};

// One recvmsg(MSG_ERRQUEUE). Returns 1 with *entry filled, 0 when the queue
// is empty, -1 with *err on failure. An entry without an IP(V6)_RECVERR
// control message (cut short: MSG_CTRUNC) yields origin SO_EE_ORIGIN_NONE.
int ReadOneError(int fd, QueuedError* entry, int* err) {
  memset(entry, 0, sizeof *entry);
  char data[8];  // the quoted payload is not needed: MSG_TRUNC is fine
  struct iovec iov = {data, sizeof data};
  alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(struct sock_extended_err) +
                                                  sizeof(struct sockaddr_storage)) + 64];
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  ssize_t n;
  do {
    msg.msg_name = &entry->destination;
    msg.msg_namelen = sizeof entry->destination;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    msg.msg_flags = 0;
    n = recvmsg(fd, &msg, MSG_ERRQUEUE | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
    *err = errno;
    return -1;
  }
  if (msg.msg_namelen == 0) entry->destination.ss_family = AF_UNSPEC;
  for (struct cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    bool v4 = c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_RECVERR;
    bool v6 = c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_RECVERR;
    if (!v4 && !v6) continue;
    if (c->cmsg_len < CMSG_LEN(sizeof entry->ee)) continue;
    size_t len = c->cmsg_len - CMSG_LEN(0);
    const unsigned char* p = CMSG_DATA(c);
    memcpy(&entry->ee, p, sizeof entry->ee);
    size_t offender_len = len - sizeof entry->ee;
    if (offender_len > sizeof entry->offender) offender_len = sizeof entry->offender;
    memcpy(&entry->offender, p + sizeof entry->ee, offender_len);
    break;
  }
  return 1;
}

Napi::Value UdpReadErrorQueue(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  uint32_t max = static_cast<uint32_t>(ArgInteger(info, 1, "max", 1, kMaxErrorsPerCall));
  Napi::Array result = Napi::Array::New(env);
  uint32_t count = 0;
  while (count < max) {
    QueuedError entry;
    int err = 0;
    int r = ReadOneError(fd, &entry, &err);
    if (r == 0) break;
    if (r < 0) {
      if (count > 0) break;  // hand over what was read; the error comes back on the next call
      ThrowErrno(env, err, "recvmsg", "MSG_ERRQUEUE");
    }
    Napi::Object o = Napi::Object::New(env);
    o.Set("address", Napi::String::New(env, FormatInetAddress(entry.destination)));
    o.Set("port", Napi::Number::New(env, InetPort(entry.destination)));
    o.Set("origin", Napi::Number::New(env, entry.ee.ee_origin));
    o.Set("type", Napi::Number::New(env, entry.ee.ee_type));
    o.Set("code", Napi::Number::New(env, entry.ee.ee_code));
    o.Set("errno", Napi::Number::New(env, entry.ee.ee_errno));
    o.Set("info", Napi::Number::New(env, entry.ee.ee_info));
    o.Set("offender", Napi::String::New(env, FormatInetAddress(entry.offender)));
    result.Set(count++, o);
  }
  return result;
}

}  // namespace

void InitUdpErrors(Napi::Env env, Napi::Object exports) {
  exports.Set("udpSocket", Napi::Function::New<UdpSocket>(env, "udpSocket"));
  exports.Set("udpBind", Napi::Function::New<UdpBind>(env, "udpBind"));
  exports.Set("udpReadErrorQueue", Napi::Function::New<UdpReadErrorQueue>(env, "udpReadErrorQueue"));
}

}  // namespace vun
