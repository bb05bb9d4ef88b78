// Unit tests of the Node-free helpers in sys.cc (built by CMakeLists.txt as
// `native_tests`; not part of the addon). Run with the sanitizers:
//   npx cmake-js compile -O build-cmake --CDVUN_SANITIZE=ON && ./build-cmake/native_tests
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
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
  if (failures != 0) {
    std::fprintf(stderr, "native_tests: %d failure(s)\n", failures);
    return 1;
  }
  std::printf("native_tests: all passed\n");
  return 0;
}
