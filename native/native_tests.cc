// Unit tests of the Node-free helpers in sys.cc (built by CMakeLists.txt as
// `native_tests`; not part of the addon). Run with the sanitizers:
//   npx cmake-js compile -O build-cmake --CDVUN_SANITIZE=ON && ./build-cmake/native_tests
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

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

}  // namespace

int main() {
  TestErrnoName();
  TestEvents();
  TestAlign();
  TestRecvTruncation();
  TestDrain();
  TestPollNow();
  if (failures != 0) {
    std::fprintf(stderr, "native_tests: %d failure(s)\n", failures);
    return 1;
  }
  std::printf("native_tests: all passed\n");
  return 0;
}
