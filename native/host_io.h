// Node-free helpers for host-socket I/O without Node streams (issue 8's
// groundwork): non-blocking TCP/UDP calls, the data movers over caller
// memory (recvmsg/sendmsg with iovecs, recvmmsg/sendmmsg), TCP_INFO and the
// socket queue ioctls, and draining an epoll set into (token, events) pairs.
//
// Every function reports failure as a negative errno in its return value
// (EWOULDBLOCK folded into EAGAIN, EINTR retried): no exceptions, no N-API,
// so they are unit tested on their own in native_tests.cc and wrapped by
// host_sockets.cc and poll_set.cc.
#pragma once

#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <cstddef>
#include <cstdint>

namespace vun::hostio {

// The most iovecs one recvmsg/sendmsg takes (UIO_MAXIOV), and the most
// datagrams one recvmmsg/sendmmsg call moves here.
constexpr size_t kMaxIov = 1024;
constexpr size_t kMaxDatagrams = 256;

// ---- addresses ------------------------------------------------------------
// A socket address in the form handed to TypeScript: family 4 or 6, 16
// address bytes (an IPv4 address in the first 4, the rest zero; an
// IPv4-mapped IPv6 address is reported as family 4) and the port.
struct PackedAddress {
  uint32_t family = 0;  // 4, 6, or 0 when the kernel gave no address
  uint8_t bytes[16] = {0};
  uint32_t port = 0;
};
// sockaddr -> packed. Anything but AF_INET/AF_INET6 yields family 0.
PackedAddress PackAddress(const struct sockaddr_storage& address, socklen_t length);
// packed -> sockaddr for a socket of `domain` (AF_INET or AF_INET6): family 4
// on an AF_INET6 socket becomes IPv4-mapped. Returns the length, or 0 when
// the family does not fit the socket (6 on AF_INET) or is neither 4 nor 6.
socklen_t UnpackAddress(int domain, const PackedAddress& packed, struct sockaddr_storage* out);

// ---- stream and datagram calls ---------------------------------------------
// connect(2) on a non-blocking socket: 0 (connected), -EINPROGRESS (wait for
// writability, then SocketError), or -errno.
int Connect(int fd, const struct sockaddr* address, socklen_t length);
// getsockopt(SO_ERROR) (which also clears it): 0, or the pending error as
// -errno; -errno of getsockopt itself if that fails.
int SocketError(int fd);
// accept4(SOCK_NONBLOCK|SOCK_CLOEXEC): the new fd with the peer in *peer, or
// -errno (-EAGAIN when none is pending).
int Accept(int fd, PackedAddress* peer);

// recvmsg(flags | MSG_DONTWAIT) scattering into `iov`: bytes (0 at EOF on a
// stream, or with no room) or -errno. `flags` may hold MSG_PEEK/MSG_TRUNC.
ssize_t ReadV(int fd, struct iovec* iov, size_t count, int flags);
// sendmsg(MSG_DONTWAIT|MSG_NOSIGNAL) gathering from `iov`: bytes taken by the
// kernel (possibly fewer than offered) or -errno (-EAGAIN: none fit, -EPIPE
// or -ECONNRESET: the peer is gone).
ssize_t WriteV(int fd, const struct iovec* iov, size_t count);
// Drops up to `length` bytes from the head of a TCP receive queue without
// copying them: recv(NULL, length, MSG_TRUNC|MSG_DONTWAIT) (tcp(7), Linux
// >= 2.4.4; a consumed byte also moves SO_PEEK_OFF back by one). Bytes
// dropped, 0 at EOF, or -errno.
ssize_t Discard(int fd, size_t length);

// One datagram of a recvmmsg/sendmmsg batch.
struct Datagram {
  struct iovec* iov = nullptr;
  size_t iov_count = 0;
  PackedAddress address;  // out for RecvMmsg; in for SendMmsg (family 0: none, a connected socket)
  uint32_t length = 0;    // out: the datagram's real length (even when truncated) / bytes sent
  bool truncated = false; // out for RecvMmsg: the datagram did not fit (MSG_TRUNC in msg_flags)
};
// recvmmsg(MSG_DONTWAIT) of up to `count` (<= kMaxDatagrams) datagrams:
// how many were received (their lengths, addresses and truncation filled
// in) or -errno (-EAGAIN when none is queued).
int RecvMmsg(int fd, Datagram* datagrams, size_t count);
// sendmmsg(MSG_DONTWAIT|MSG_NOSIGNAL): how many datagrams were sent (from
// the first; each one's length filled in), or -errno if the first failed.
// A datagram whose address does not fit the socket's family fails it with
// -EAFNOSUPPORT before anything is sent.
int SendMmsg(int fd, int domain, Datagram* datagrams, size_t count);

// ---- TCP state ---------------------------------------------------------------
// The fields of TCP_INFO and of the queue ioctls the TCP translation needs.
// The order is the order of TcpInfoField in src/native/index.ts.
enum TcpInfoIndex {
  kTcpState = 0,          // tcpi_state (TCP_ESTABLISHED 1, ... TCP_CLOSE 7, TCP_LISTEN 10)
  kTcpSndMss,             // tcpi_snd_mss
  kTcpRcvMss,             // tcpi_rcv_mss
  kTcpUnackedSegments,    // tcpi_unacked
  kTcpRttMicros,          // tcpi_rtt
  kTcpSndCwnd,            // tcpi_snd_cwnd (segments)
  kTcpRcvSpace,           // tcpi_rcv_space
  kTcpSndWnd,             // tcpi_snd_wnd (Linux >= 5.19; 0 before)
  kTcpNotSentBytes,       // tcpi_notsent_bytes
  kTcpOutq,               // SIOCOUTQ: bytes not yet acknowledged (sent or not)
  kTcpOutqNotSent,        // SIOCOUTQNSD: bytes not yet sent
  kTcpInq,                // SIOCINQ: bytes readable now
  kTcpInfoLength,         // bytes of struct tcp_info the kernel filled
  kTcpInfoFieldCount
};
// Fills out[kTcpInfoFieldCount]; returns 0 or -errno.
int TcpInfo(int fd, uint32_t* out);

// ---- readiness ---------------------------------------------------------------
// epoll_wait(epfd, max, timeout 0) once, writing (token, events) pairs into
// out[0..2*max): token is the low 32 bits of epoll_event.data.u64. Returns
// the number of pairs or -errno. max <= kMaxReadyPerBatch.
constexpr size_t kMaxReadyPerBatch = 1024;
int DrainEpoll(int epfd, uint32_t* out, size_t max);

}  // namespace vun::hostio
