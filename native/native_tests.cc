// Unit tests of the Node-free helpers in sys.cc (built by CMakeLists.txt as
// `native_tests`; not part of the addon). Run with the sanitizers:
//   npx cmake-js compile -O build-cmake --CDVUN_SANITIZE=ON && ./build-cmake/native_tests
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <vector>

#include "host_io.h"
#include "sys.h"

namespace {

int failures = 0;

#define CHECK(cond)                                                      \
  do {                                                                   \
    if (!(cond)) {                                                       \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      failures++;                                                        \
    }                                                                    \
  } while (0)

using namespace vun::sys;

void TestErrnoName() {
  CHECK(std::strcmp(ErrnoName(EAGAIN), "EAGAIN") == 0);
  CHECK(std::strcmp(ErrnoName(ENOENT), "ENOENT") == 0);
  CHECK(std::strcmp(ErrnoName(EACCES), "EACCES") == 0);
  CHECK(std::strcmp(ErrnoName(ECONNREFUSED), "ECONNREFUSED") == 0);
  CHECK(std::strcmp(ErrnoName(-12345), "UNKNOWN") == 0);
}

void TestEvents() {
  CHECK(ParseEvents("") == 0);
  CHECK(ParseEvents("r") == kRead);
  CHECK(ParseEvents("w") == kWrite);
  CHECK(ParseEvents("rw") == (kRead | kWrite));
  CHECK(ParseEvents("wr") == -1);
  CHECK(ParseEvents("x") == -1);
  CHECK(std::strcmp(EventsName(kRead | kWrite), "rw") == 0);
}

void TestAlign() {
  MapSpan s;
  CHECK(AlignForMmap(0, 4096, 4096, &s) && s.aligned_offset == 0 && s.slack == 0 && s.map_len == 4096);
  CHECK(AlignForMmap(4097, 10, 4096, &s) && s.aligned_offset == 4096 && s.slack == 1 && s.map_len == 11);
  CHECK(AlignForMmap(3 * 4096 - 1, 1, 4096, &s) && s.aligned_offset == 2 * 4096 && s.slack == 4095);
  CHECK(!AlignForMmap(0, 0, 4096, &s));
  CHECK(!AlignForMmap(0, 1, 3000, &s));
  CHECK(!AlignForMmap(100, UINT64_MAX - 10, 4096, &s));
}

void TestRecvTruncation() {
  int before_err = 0;
  int before = CountOpenFds(&before_err);
  CHECK(before > 0);
  int sv[2];
  CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
  std::vector<int> fds;
  for (int i = 0; i < 5; i++) fds.push_back(eventfd(0, EFD_CLOEXEC));
  int err = 0;
  const char byte = 'x';
  CHECK(SendMsg(sv[0], &byte, 1, fds.data(), fds.size(), &err) == 1);
  for (int fd : fds) close(fd);

  char buf[16];
  RecvResult r = RecvMsg(sv[1], buf, sizeof buf, 2);
  CHECK(r.bytes == 1);
  CHECK(r.fds.size() == 2);
  CHECK(r.fds_truncated);
  for (int fd : r.fds) {
    CHECK(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    close(fd);
  }
  // Nothing pending: EAGAIN.
  r = RecvMsg(sv[1], buf, sizeof buf, 2);
  CHECK(r.bytes < 0 && r.err == EAGAIN);
  // Peer closed: 0 bytes.
  close(sv[0]);
  r = RecvMsg(sv[1], buf, sizeof buf, 2);
  CHECK(r.bytes == 0);
  close(sv[1]);
  CHECK(CountOpenFds(&err) == before);  // the three extras were closed
}

void TestDrain() {
  int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  uint64_t one = 1;
  for (int i = 0; i < 3; i++) CHECK(write(fd, &one, sizeof one) == sizeof one);
  uint64_t total = 0;
  int err = 0;
  CHECK(DrainEventfd(fd, &total, &err) == DrainStatus::kDrained);
  CHECK(total == 3);
  CHECK(!FdHungUp(fd));
  close(fd);

  int p[2];
  CHECK(pipe2(p, O_NONBLOCK | O_CLOEXEC) == 0);
  close(p[1]);
  total = 0;
  CHECK(DrainEventfd(p[0], &total, &err) == DrainStatus::kEof);
  CHECK(FdHungUp(p[0]));
  close(p[0]);
}

void TestSeals() {
  int err = 0;
  // Unsealed (no MFD_ALLOW_SEALING): F_SEAL_SEAL only, and it can shrink.
  int plain = MemfdCreate("plain", 8192, 0, &err);
  CHECK(plain >= 0);
  CHECK(GetSeals(plain, &err) == F_SEAL_SEAL);
  CHECK(ftruncate(plain, 4096) == 0);
  close(plain);
  // Sealed as QEMU's memory-backend-memfd: cannot shrink or grow.
  const unsigned int qemu = F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL;
  int sealed = MemfdCreate("sealed", 8192, qemu, &err);
  CHECK(sealed >= 0);
  CHECK(GetSeals(sealed, &err) == static_cast<int>(qemu));
  CHECK(ftruncate(sealed, 4096) < 0 && errno == EPERM);
  struct stat st;
  CHECK(fstat(sealed, &st) == 0 && st.st_size == 8192);
  close(sealed);
  // A pipe cannot carry seals: EINVAL.
  int p[2];
  CHECK(pipe2(p, O_CLOEXEC) == 0);
  err = 0;
  CHECK(GetSeals(p[0], &err) < 0 && err == EINVAL);
  close(p[0]);
  close(p[1]);
  // Bad seals fail without leaking the fd.
  int before = CountOpenFds(&err);
  CHECK(MemfdCreate("bad", 4096, 0x8000, &err) < 0 && err == EINVAL);
  CHECK(CountOpenFds(&err) == before);
}

void TestFdLimit() {
  FdLimit original;
  int err = 0;
  CHECK(GetFdLimit(&original, &err));
  CHECK(original.soft <= original.hard);
  FdLimit lower = {original.soft - 1, original.hard};
  CHECK(SetFdLimit(lower, &err));
  FdLimit now;
  CHECK(GetFdLimit(&now, &err) && now.soft == original.soft - 1 && now.hard == original.hard);
  // The soft limit may not pass the hard one.
  FdLimit above = {original.hard + 1, original.hard};
  CHECK(!SetFdLimit(above, &err) && err == EINVAL);
  CHECK(SetFdLimit(original, &err));
}

int HighestOpenFd() {
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return -1;
  int own = dirfd(dir);
  int highest = -1;
  while (struct dirent* entry = readdir(dir)) {
    if (entry->d_name[0] == '.') continue;
    int fd = std::atoi(entry->d_name);
    if (fd != own && fd > highest) highest = fd;
  }
  closedir(dir);
  return highest;
}

// The kernel cannot install received fds when RLIMIT_NOFILE is reached: it
// sets MSG_CTRUNC, and RecvMsg says why (EMFILE), closing nothing it holds.
void TestRecvOutOfFds() {
  int err = 0;
  int sv[2];
  CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
  int efd = eventfd(0, EFD_CLOEXEC);
  const char byte = 'x';
  CHECK(SendMsg(sv[0], &byte, 1, &efd, 1, &err) == 1);
  close(efd);
  FdLimit original;
  CHECK(GetFdLimit(&original, &err));
  // A soft limit just above the highest open fd, with every hole below it
  // filled: no slot is free.
  int highest = HighestOpenFd();
  CHECK(highest >= 0);
  FdLimit tight = {static_cast<uint64_t>(highest + 1), original.hard};
  std::vector<int> fillers;
  for (;;) {
    int f = dup(sv[0]);
    if (f < 0) break;
    if (f > highest) {
      close(f);
      break;
    }
    fillers.push_back(f);
  }
  CHECK(SetFdLimit(tight, &err));
  char buf[4];
  RecvResult r = RecvMsg(sv[1], buf, sizeof buf, 8);
  CHECK(SetFdLimit(original, &err));
  CHECK(r.bytes == 1);
  CHECK(r.fds.empty());
  CHECK(r.fds_truncated);
  CHECK(r.fds_error == EMFILE);
  for (int f : fillers) close(f);
  close(sv[0]);
  close(sv[1]);

  // More fds than max_fds (closed by RecvMsg) is not "out of fds".
  CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
  efd = eventfd(0, EFD_CLOEXEC);
  CHECK(SendMsg(sv[0], &byte, 1, &efd, 1, &err) == 1);
  close(efd);
  r = RecvMsg(sv[1], buf, sizeof buf, 0);
  CHECK(r.bytes == 1 && r.fds.empty() && r.fds_truncated && r.fds_error == 0);
  close(sv[0]);
  close(sv[1]);
}

void TestPollNow() {
  int s[2];
  CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, s) == 0);
  const short want = POLLIN | POLLRDHUP;
  CHECK(PollNow(s[0], want) == 0);
  CHECK(write(s[1], "x", 1) == 1);
  CHECK(PollNow(s[0], want) == POLLIN);
  // The peer shuts down its sending side: RDHUP, not yet HUP.
  CHECK(shutdown(s[1], SHUT_WR) == 0);
  int r = PollNow(s[0], want);
  CHECK((r & POLLRDHUP) != 0 && (r & POLLHUP) == 0);
  // The peer closes: HUP as well.
  close(s[1]);
  CHECK((PollNow(s[0], want) & POLLHUP) != 0);
  close(s[0]);
  CHECK(PollNow(s[0], want) == POLLNVAL);
}


// ---- host_io: raw host sockets ------------------------------------------------
namespace hio = vun::hostio;

// A listener on 127.0.0.1 (port in *port).
int Listener(uint16_t* port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  CHECK(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  CHECK(listen(fd, 16) == 0);
  socklen_t len = sizeof a;
  CHECK(getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0);
  *port = ntohs(a.sin_port);
  return fd;
}

sockaddr_in Loopback(uint16_t port) {
  struct sockaddr_in a = {};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  return a;
}

// Waits (poll, 2 s) for `events` on fd.
bool WaitFor(int fd, short events) {
  struct pollfd p = {fd, events, 0};
  return poll(&p, 1, 2000) == 1 && (p.revents & events) != 0;
}

// A connected TCP pair over loopback: *client (non-blocking) and *server.
void TcpPair(int* client, int* server) {
  uint16_t port = 0;
  int listener = Listener(&port);
  *client = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  sockaddr_in a = Loopback(port);
  int r = hio::Connect(*client, reinterpret_cast<sockaddr*>(&a), sizeof a);
  CHECK(r == 0 || r == -EINPROGRESS);
  CHECK(WaitFor(listener, POLLIN));
  hio::PackedAddress peer;
  *server = hio::Accept(listener, &peer);
  CHECK(*server >= 0);
  CHECK(peer.family == 4 && peer.bytes[0] == 127 && peer.bytes[3] == 1 && peer.port != 0);
  CHECK(WaitFor(*client, POLLOUT));
  CHECK(hio::SocketError(*client) == 0);
  CHECK(hio::Accept(listener, &peer) == -EAGAIN);
  close(listener);
}

void TestAddresses() {
  struct sockaddr_storage s;
  hio::PackedAddress four;
  four.family = 4;
  four.bytes[0] = 10;
  four.bytes[3] = 7;
  four.port = 53;
  // IPv4 on an IPv6 socket: the mapped address, and back to family 4.
  socklen_t len = hio::UnpackAddress(AF_INET6, four, &s);
  CHECK(len == sizeof(sockaddr_in6));
  const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(&s);
  CHECK(sin6->sin6_addr.s6_addr[10] == 0xff && sin6->sin6_addr.s6_addr[12] == 10 && ntohs(sin6->sin6_port) == 53);
  hio::PackedAddress back = hio::PackAddress(s, len);
  CHECK(back.family == 4 && back.bytes[0] == 10 && back.bytes[3] == 7 && back.bytes[4] == 0 && back.port == 53);
  // IPv6 on an IPv4 socket does not fit; nor does an unknown family.
  hio::PackedAddress six;
  six.family = 6;
  six.bytes[15] = 1;
  CHECK(hio::UnpackAddress(AF_INET, six, &s) == 0);
  six.family = 5;
  CHECK(hio::UnpackAddress(AF_INET6, six, &s) == 0);
  six.family = 6;
  len = hio::UnpackAddress(AF_INET6, six, &s);
  back = hio::PackAddress(s, len);
  CHECK(back.family == 6 && back.bytes[15] == 1);
  // Too short a length, or no address at all: family 0.
  CHECK(hio::PackAddress(s, 4).family == 0);
}

void TestConnectRefused() {
  uint16_t port = 0;
  int listener = Listener(&port);
  close(listener);  // nothing listens there now
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  sockaddr_in a = Loopback(port);
  int r = hio::Connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  if (r == -EINPROGRESS) {
    CHECK(WaitFor(fd, POLLOUT));
    CHECK(hio::SocketError(fd) == -ECONNREFUSED);
    CHECK(hio::SocketError(fd) == 0);  // reading it cleared it
  } else {
    CHECK(r == -ECONNREFUSED);
  }
  close(fd);
}

void TestPartialWriteAndPeek() {
  int client, server;
  TcpPair(&client, &server);
  int small = 4096;
  CHECK(setsockopt(client, SOL_SOCKET, SO_SNDBUF, &small, sizeof small) == 0);
  CHECK(setsockopt(server, SOL_SOCKET, SO_RCVBUF, &small, sizeof small) == 0);
  std::vector<uint8_t> block(1 << 20);
  for (size_t i = 0; i < block.size(); i++) block[i] = static_cast<uint8_t>(i * 7);
  // The server does not read: writes fall short, then EAGAIN.
  size_t total = 0;
  bool saw_short = false;
  ssize_t n = 0;
  for (int i = 0; i < 1000; i++) {
    struct iovec iov[2] = {{block.data(), 100}, {block.data() + 100, block.size() - 100}};
    n = hio::WriteV(client, iov, 2);
    if (n < 0) break;
    if (static_cast<size_t>(n) < block.size()) saw_short = true;
    total += static_cast<size_t>(n);
  }
  CHECK(n == -EAGAIN);
  CHECK(saw_short);
  CHECK(total > 0 && total < block.size());
  uint32_t info[hio::kTcpInfoFieldCount];
  CHECK(hio::TcpInfo(client, info) == 0);
  CHECK(info[hio::kTcpState] == 1);  // TCP_ESTABLISHED
  CHECK(info[hio::kTcpOutq] > 0 && info[hio::kTcpOutq] <= total);
  CHECK(info[hio::kTcpOutqNotSent] <= info[hio::kTcpOutq]);

  // Peek with SO_PEEK_OFF: each peek moves on, discard moves it back.
  int zero = 0;
  bool peek_off = setsockopt(server, SOL_SOCKET, SO_PEEK_OFF, &zero, sizeof zero) == 0;
  if (!peek_off) std::fprintf(stderr, "native_tests: SO_PEEK_OFF not supported on TCP here, peek offsets skipped\n");
  uint8_t got[64];
  struct iovec one = {got, 10};
  CHECK(hio::ReadV(server, &one, 1, MSG_PEEK) == 10);
  CHECK(std::memcmp(got, block.data(), 10) == 0);
  if (peek_off) {
    CHECK(hio::ReadV(server, &one, 1, MSG_PEEK) == 10);
    CHECK(std::memcmp(got, block.data() + 10, 10) == 0);
    int off = -1;
    socklen_t ol = sizeof off;
    CHECK(getsockopt(server, SOL_SOCKET, SO_PEEK_OFF, &off, &ol) == 0 && off == 20);
    CHECK(hio::Discard(server, 15) == 15);
    CHECK(getsockopt(server, SOL_SOCKET, SO_PEEK_OFF, &off, &ol) == 0 && off == 5);
    CHECK(hio::ReadV(server, &one, 1, MSG_PEEK) == 10);
    CHECK(std::memcmp(got, block.data() + 20, 10) == 0);
  }
  close(client);
  close(server);
}

void TestEofAndReset() {
  int client, server;
  TcpPair(&client, &server);
  uint8_t buf[16];
  struct iovec iov = {buf, sizeof buf};
  CHECK(hio::ReadV(server, &iov, 1, 0) == -EAGAIN);
  CHECK(hio::Discard(server, 16) == -EAGAIN);
  CHECK(shutdown(client, SHUT_WR) == 0);
  CHECK(WaitFor(server, POLLIN));
  CHECK(hio::ReadV(server, &iov, 1, 0) == 0);  // EOF
  // The server resets (SO_LINGER 0): the client's write fails.
  struct linger l = {1, 0};
  CHECK(setsockopt(server, SOL_SOCKET, SO_LINGER, &l, sizeof l) == 0);
  close(server);
  CHECK(WaitFor(client, POLLERR | POLLHUP));
  struct iovec out = {buf, 4};
  ssize_t n = hio::WriteV(client, &out, 1);
  CHECK(n == -ECONNRESET || n == -EPIPE);
  CHECK(hio::WriteV(client, &out, 1) == -EPIPE);
  close(client);
}

void TestDatagramBatch() {
  int a = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int b = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  sockaddr_in la = Loopback(0);
  CHECK(bind(a, reinterpret_cast<sockaddr*>(&la), sizeof la) == 0);
  CHECK(bind(b, reinterpret_cast<sockaddr*>(&la), sizeof la) == 0);
  socklen_t len = sizeof la;
  sockaddr_in lb;
  CHECK(getsockname(b, reinterpret_cast<sockaddr*>(&lb), &len) == 0);
  len = sizeof la;
  CHECK(getsockname(a, reinterpret_cast<sockaddr*>(&la), &len) == 0);
  char p0[] = "first", p1a[] = "sec", p1b[] = "ond";
  struct iovec iov[3] = {{p0, 5}, {p1a, 3}, {p1b, 3}};
  hio::Datagram out[2];
  for (auto& d : out) {
    d.address.family = 4;
    std::memcpy(d.address.bytes, &lb.sin_addr, 4);
    d.address.port = ntohs(lb.sin_port);
  }
  out[0].iov = iov;
  out[0].iov_count = 1;
  out[1].iov = iov + 1;
  out[1].iov_count = 2;
  CHECK(hio::SendMmsg(a, AF_INET, out, 2) == 2);
  CHECK(out[0].length == 5 && out[1].length == 6);
  hio::Datagram bad = out[0];
  bad.address.family = 6;
  CHECK(hio::SendMmsg(a, AF_INET, &bad, 1) == -EAFNOSUPPORT);

  CHECK(WaitFor(b, POLLIN));
  char r0[8], r1[4];  // the second is cut short
  struct iovec riov[2] = {{r0, sizeof r0}, {r1, sizeof r1}};
  hio::Datagram in[3];
  in[0].iov = riov;
  in[0].iov_count = 1;
  in[1].iov = riov + 1;
  in[1].iov_count = 1;
  in[2].iov = nullptr;
  in[2].iov_count = 0;
  int n = hio::RecvMmsg(b, in, 3);
  CHECK(n == 2);
  CHECK(in[0].length == 5 && !in[0].truncated && std::memcmp(r0, "first", 5) == 0);
  CHECK(in[1].truncated && std::memcmp(r1, "seco", 4) == 0);
  CHECK(in[0].address.family == 4 && in[0].address.port == ntohs(la.sin_port));
  CHECK(hio::RecvMmsg(b, in, 3) == -EAGAIN);
  close(a);
  close(b);
}

void TestDrainEpoll() {
  int ep = epoll_create1(EPOLL_CLOEXEC);
  int s[3][2];
  for (int i = 0; i < 3; i++) {
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, s[i]) == 0);
    struct epoll_event e = {};
    e.events = EPOLLIN;
    e.data.u64 = 100 + i;
    CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, s[i][0], &e) == 0);
  }
  uint32_t out[8] = {0};
  CHECK(hio::DrainEpoll(ep, out, 4) == 0);
  CHECK(write(s[0][1], "x", 1) == 1);
  CHECK(write(s[2][1], "x", 1) == 1);
  CHECK(hio::DrainEpoll(ep, out, 4) == 2);
  CHECK(out[0] + out[2] == 202 && out[1] == EPOLLIN && out[3] == EPOLLIN);
  // At most `max` pairs; level-triggered, so the rest come next time.
  CHECK(hio::DrainEpoll(ep, out, 1) == 1);
  CHECK(hio::DrainEpoll(ep, out, 4) == 2);
  for (auto& p : s) {
    close(p[0]);
    close(p[1]);
  }
  close(ep);
}

}  // namespace

int main() {
  TestErrnoName();
  TestEvents();
  TestAlign();
  TestRecvTruncation();
  TestDrain();
  TestSeals();
  TestFdLimit();
  TestRecvOutOfFds();
  TestPollNow();
  TestAddresses();
  TestConnectRefused();
  TestPartialWriteAndPeek();
  TestEofAndReset();
  TestDatagramBatch();
  TestDrainEpoll();
  if (failures != 0) {
    std::fprintf(stderr, "native_tests: %d failure(s)\n", failures);
    return 1;
  }
  std::printf("native_tests: all passed\n");
  return 0;
}
