// See host_io.h.
#include "host_io.h"

#include <errno.h>
#include <linux/sockios.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>

namespace vun::hostio {

namespace {

int NegErrno() { return errno == EWOULDBLOCK ? -EAGAIN : -errno; }

const uint8_t kMappedPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

}  // namespace

PackedAddress PackAddress(const struct sockaddr_storage& address, socklen_t length) {
  PackedAddress packed;
  if (address.ss_family == AF_INET && length >= sizeof(struct sockaddr_in)) {
    const auto* sin = reinterpret_cast<const struct sockaddr_in*>(&address);
    packed.family = 4;
    memcpy(packed.bytes, &sin->sin_addr, 4);
    packed.port = ntohs(sin->sin_port);
  } else if (address.ss_family == AF_INET6 && length >= sizeof(struct sockaddr_in6)) {
    const auto* sin6 = reinterpret_cast<const struct sockaddr_in6*>(&address);
    packed.port = ntohs(sin6->sin6_port);
    const uint8_t* a = sin6->sin6_addr.s6_addr;
    if (memcmp(a, kMappedPrefix, sizeof kMappedPrefix) == 0) {
      packed.family = 4;
      memcpy(packed.bytes, a + 12, 4);
    } else {
      packed.family = 6;
      memcpy(packed.bytes, a, 16);
    }
  }
  return packed;
}

socklen_t UnpackAddress(int domain, const PackedAddress& packed, struct sockaddr_storage* out) {
  memset(out, 0, sizeof *out);
  if (domain == AF_INET) {
    if (packed.family != 4) return 0;
    auto* sin = reinterpret_cast<struct sockaddr_in*>(out);
    sin->sin_family = AF_INET;
    sin->sin_port = htons(static_cast<uint16_t>(packed.port));
    memcpy(&sin->sin_addr, packed.bytes, 4);
    return sizeof *sin;
  }
  if (domain != AF_INET6 || (packed.family != 4 && packed.family != 6)) return 0;
  auto* sin6 = reinterpret_cast<struct sockaddr_in6*>(out);
  sin6->sin6_family = AF_INET6;
  sin6->sin6_port = htons(static_cast<uint16_t>(packed.port));
  if (packed.family == 4) {
    memcpy(sin6->sin6_addr.s6_addr, kMappedPrefix, sizeof kMappedPrefix);
    memcpy(sin6->sin6_addr.s6_addr + 12, packed.bytes, 4);
  } else {
    memcpy(sin6->sin6_addr.s6_addr, packed.bytes, 16);
  }
  return sizeof *sin6;
}

int Connect(int fd, const struct sockaddr* address, socklen_t length) {
  if (connect(fd, address, length) == 0) return 0;
  // EINTR on a non-blocking connect: the attempt goes on in the background,
  // as with EINPROGRESS (retrying would give EALREADY).
  if (errno == EINTR) return -EINPROGRESS;
  return NegErrno();
}

int SocketError(int fd) {
  int value = 0;
  socklen_t length = sizeof value;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &value, &length) < 0) return -errno;
  return -value;
}

int Accept(int fd, PackedAddress* peer) {
  struct sockaddr_storage address;
  socklen_t length;
  int accepted;
  do {
    length = sizeof address;
    memset(&address, 0, sizeof address);
    accepted = accept4(fd, reinterpret_cast<struct sockaddr*>(&address), &length, SOCK_NONBLOCK | SOCK_CLOEXEC);
  } while (accepted < 0 && errno == EINTR);
  if (accepted < 0) return NegErrno();
  *peer = PackAddress(address, length);
  return accepted;
}

ssize_t ReadV(int fd, struct iovec* iov, size_t count, int flags) {
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = iov;
  msg.msg_iovlen = count;
  ssize_t n;
  do {
    n = recvmsg(fd, &msg, flags | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  return n < 0 ? NegErrno() : n;
}

ssize_t WriteV(int fd, const struct iovec* iov, size_t count) {
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = const_cast<struct iovec*>(iov);
  msg.msg_iovlen = count;
  ssize_t n;
  do {
    n = sendmsg(fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  return n < 0 ? NegErrno() : n;
}

ssize_t Discard(int fd, size_t length) {
  ssize_t n;
  do {
    n = recv(fd, nullptr, length, MSG_TRUNC | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  return n < 0 ? NegErrno() : n;
}

int RecvMmsg(int fd, Datagram* datagrams, size_t count) {
  if (count > kMaxDatagrams) return -EINVAL;
  if (count == 0) return 0;
  struct mmsghdr headers[kMaxDatagrams];
  struct sockaddr_storage names[kMaxDatagrams];
  memset(headers, 0, count * sizeof headers[0]);
  for (size_t i = 0; i < count; i++) {
    headers[i].msg_hdr.msg_name = &names[i];
    headers[i].msg_hdr.msg_namelen = sizeof names[i];
    headers[i].msg_hdr.msg_iov = datagrams[i].iov;
    headers[i].msg_hdr.msg_iovlen = datagrams[i].iov_count;
  }
  int n;
  do {
    // MSG_TRUNC: msg_len is the datagram's real length, even when cut short.
    n = recvmmsg(fd, headers, static_cast<unsigned>(count), MSG_DONTWAIT | MSG_TRUNC, nullptr);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return NegErrno();
  for (int i = 0; i < n; i++) {
    const struct msghdr& h = headers[i].msg_hdr;
    datagrams[i].address = PackAddress(names[i], h.msg_namelen);
    datagrams[i].length = headers[i].msg_len;
    datagrams[i].truncated = (h.msg_flags & MSG_TRUNC) != 0;
  }
  return n;
}

int SendMmsg(int fd, int domain, Datagram* datagrams, size_t count) {
  if (count > kMaxDatagrams) return -EINVAL;
  if (count == 0) return 0;
  struct mmsghdr headers[kMaxDatagrams];
  struct sockaddr_storage names[kMaxDatagrams];
  memset(headers, 0, count * sizeof headers[0]);
  for (size_t i = 0; i < count; i++) {
    if (datagrams[i].address.family != 0) {
      socklen_t length = UnpackAddress(domain, datagrams[i].address, &names[i]);
      if (length == 0) return -EAFNOSUPPORT;
      headers[i].msg_hdr.msg_name = &names[i];
      headers[i].msg_hdr.msg_namelen = length;
    }
    headers[i].msg_hdr.msg_iov = datagrams[i].iov;
    headers[i].msg_hdr.msg_iovlen = datagrams[i].iov_count;
  }
  int n;
  do {
    n = sendmmsg(fd, headers, static_cast<unsigned>(count), MSG_DONTWAIT | MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return NegErrno();
  for (int i = 0; i < n; i++) datagrams[i].length = headers[i].msg_len;
  return n;
}

int TcpInfo(int fd, uint32_t* out) {
  struct tcp_info info;
  memset(&info, 0, sizeof info);
  socklen_t length = sizeof info;
  if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &length) < 0) return -errno;
  int outq = 0;
  int outq_not_sent = 0;
  int inq = 0;
  // A listener has no queues of data (the ioctls fail with EINVAL there).
  constexpr uint8_t kTcpListen = 10;  // TCP_LISTEN (include/net/tcp_states.h)
  if (info.tcpi_state != kTcpListen &&
      (ioctl(fd, SIOCOUTQ, &outq) < 0 || ioctl(fd, SIOCOUTQNSD, &outq_not_sent) < 0 ||
       ioctl(fd, SIOCINQ, &inq) < 0)) {
    return -errno;
  }
  out[kTcpState] = info.tcpi_state;
  out[kTcpSndMss] = info.tcpi_snd_mss;
  out[kTcpRcvMss] = info.tcpi_rcv_mss;
  out[kTcpUnackedSegments] = info.tcpi_unacked;
  out[kTcpRttMicros] = info.tcpi_rtt;
  out[kTcpSndCwnd] = info.tcpi_snd_cwnd;
  out[kTcpRcvSpace] = info.tcpi_rcv_space;
  out[kTcpSndWnd] = info.tcpi_snd_wnd;  // zeroed above if the kernel's struct is shorter
  out[kTcpNotSentBytes] = info.tcpi_notsent_bytes;
  out[kTcpOutq] = static_cast<uint32_t>(outq);
  out[kTcpOutqNotSent] = static_cast<uint32_t>(outq_not_sent);
  out[kTcpInq] = static_cast<uint32_t>(inq);
  out[kTcpInfoLength] = length;
  return 0;
}

int DrainEpoll(int epfd, uint32_t* out, size_t max) {
  if (max > kMaxReadyPerBatch) max = kMaxReadyPerBatch;
  if (max == 0) return 0;
  struct epoll_event events[kMaxReadyPerBatch];
  int n;
  do {
    n = epoll_wait(epfd, events, static_cast<int>(max), 0);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return -errno;
  for (int i = 0; i < n; i++) {
    out[2 * i] = static_cast<uint32_t>(events[i].data.u64);
    out[2 * i + 1] = events[i].events;
  }
  return n;
}

}  // namespace vun::hostio
