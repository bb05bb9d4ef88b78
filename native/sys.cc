#include "sys.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

namespace vun::sys {

namespace {

#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
#define VUN_HAVE_STRERRORNAME_NP 1
#endif

#ifndef VUN_HAVE_STRERRORNAME_NP
struct ErrnoEntry {
  int value;
  const char* name;
};
#define E(x) {x, #x}
const ErrnoEntry kErrnoTable[] = {
    E(EPERM),       E(ENOENT),       E(ESRCH),        E(EINTR),         E(EIO),
    E(ENXIO),       E(E2BIG),        E(ENOEXEC),      E(EBADF),         E(ECHILD),
    E(EAGAIN),      E(ENOMEM),       E(EACCES),       E(EFAULT),        E(EBUSY),
    E(EEXIST),      E(EXDEV),        E(ENODEV),       E(ENOTDIR),       E(EISDIR),
    E(EINVAL),      E(ENFILE),       E(EMFILE),       E(ENOTTY),        E(ETXTBSY),
    E(EFBIG),       E(ENOSPC),       E(ESPIPE),       E(EROFS),         E(EMLINK),
    E(EPIPE),       E(EDOM),         E(ERANGE),       E(EDEADLK),       E(ENAMETOOLONG),
    E(ENOLCK),      E(ENOSYS),       E(ENOTEMPTY),    E(ELOOP),         E(ENOMSG),
    E(EOVERFLOW),   E(ENOTSOCK),     E(EDESTADDRREQ), E(EMSGSIZE),      E(EPROTOTYPE),
    E(ENOPROTOOPT), E(EPROTONOSUPPORT), E(EOPNOTSUPP), E(EAFNOSUPPORT), E(EADDRINUSE),
    E(EADDRNOTAVAIL), E(ENETDOWN),   E(ENETUNREACH),  E(ENETRESET),     E(ECONNABORTED),
    E(ECONNRESET),  E(ENOBUFS),      E(EISCONN),      E(ENOTCONN),      E(ETIMEDOUT),
    E(ECONNREFUSED), E(EHOSTDOWN),   E(EHOSTUNREACH), E(EALREADY),      E(EINPROGRESS),
    E(ESTALE),      E(ECANCELED),
};
#undef E
#endif

}  // namespace

const char* ErrnoName(int err) {
#ifdef VUN_HAVE_STRERRORNAME_NP
  const char* name = strerrorname_np(err);
  return name != nullptr ? name : "UNKNOWN";
#else
  for (const ErrnoEntry& e : kErrnoTable) {
    if (e.value == err) return e.name;
  }
  return "UNKNOWN";
#endif
}

int ParseEvents(const std::string& events) {
  if (events.empty()) return 0;
  if (events == "r") return kRead;
  if (events == "w") return kWrite;
  if (events == "rw") return kRead | kWrite;
  return -1;
}

const char* EventsName(int mask) {
  switch (mask & (kRead | kWrite)) {
    case kRead: return "r";
    case kWrite: return "w";
    case kRead | kWrite: return "rw";
    default: return "";
  }
}

RecvResult RecvMsg(int fd, void* buf, size_t len, size_t max_fds) {
  RecvResult result;
  // Room for SCM_MAX_FD fds, so the kernel hands us everything that was sent
  // (instead of silently closing what does not fit) and we can close the
  // extras ourselves. Aligned for struct cmsghdr.
  alignas(struct cmsghdr) char control[CMSG_SPACE(kScmMaxFd * sizeof(int))];
  struct iovec iov;
  iov.iov_base = buf;
  iov.iov_len = len;
  struct msghdr msg;
  std::memset(&msg, 0, sizeof msg);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;

  ssize_t n;
  do {
    n = recvmsg(fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    result.err = errno == EWOULDBLOCK ? EAGAIN : errno;
    return result;
  }
  result.bytes = n;
  if (msg.msg_flags & MSG_CTRUNC) {
    result.fds_truncated = true;
    // Before any fd is closed below: is this process out of fds?
    int probe = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (probe < 0) {
      result.fds_error = errno;
    } else {
      close(probe);
    }
  }
  for (struct cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    const unsigned char* data = CMSG_DATA(c);
    for (size_t i = 0; i < count; i++) {
      int received;
      std::memcpy(&received, data + i * sizeof(int), sizeof(int));
      if (result.fds.size() < max_fds) {
        result.fds.push_back(received);
      } else {
        close(received);
        result.fds_truncated = true;
      }
    }
  }
  return result;
}

ssize_t SendMsg(int fd, const void* buf, size_t len, const int* fds, size_t nfds, int* err) {
  if (nfds > kScmMaxFd) {
    *err = EINVAL;
    return -1;
  }
  alignas(struct cmsghdr) char control[CMSG_SPACE(kScmMaxFd * sizeof(int))];
  struct iovec iov;
  iov.iov_base = const_cast<void*>(buf);
  iov.iov_len = len;
  struct msghdr msg;
  std::memset(&msg, 0, sizeof msg);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (nfds > 0) {
    std::memset(control, 0, CMSG_SPACE(nfds * sizeof(int)));
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
    struct cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(nfds * sizeof(int));
    std::memcpy(CMSG_DATA(c), fds, nfds * sizeof(int));
  }
  ssize_t n;
  do {
    n = sendmsg(fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  if (n < 0) *err = errno == EWOULDBLOCK ? EAGAIN : errno;
  return n;
}

DrainStatus DrainEventfd(int fd, uint64_t* total, int* err, int max_reads) {
  for (int i = 0; i < max_reads; i++) {
    uint64_t value = 0;
    ssize_t n = read(fd, &value, sizeof value);
    if (n > 0) {
      if (n == static_cast<ssize_t>(sizeof value)) *total += value;
      continue;
    }
    if (n == 0) return DrainStatus::kEof;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return DrainStatus::kDrained;
    *err = errno;
    return DrainStatus::kError;
  }
  // Still readable after max_reads reads: a level-triggered poll will report
  // it again on the next loop iteration.
  return DrainStatus::kDrained;
}

bool FdHungUp(int fd) {
  int revents = PollNow(fd, POLLIN);
  return revents > 0 && (revents & (POLLERR | POLLHUP | POLLNVAL)) != 0;
}

int PollNow(int fd, short events) {
  struct pollfd p;
  p.fd = fd;
  p.events = events;
  p.revents = 0;
  int r;
  do {
    r = poll(&p, 1, 0);
  } while (r < 0 && errno == EINTR);
  if (r < 0) return -errno;
  return r == 0 ? 0 : p.revents;
}

bool AlignForMmap(uint64_t offset, uint64_t size, uint64_t page, MapSpan* out) {
  if (size == 0 || page == 0 || (page & (page - 1)) != 0) return false;
  uint64_t aligned = offset & ~(page - 1);
  uint64_t slack = offset - aligned;
  if (size > UINT64_MAX - slack) return false;
  if (aligned > static_cast<uint64_t>(INT64_MAX)) return false;  // off_t
  uint64_t map_len = size + slack;
  if (map_len > SIZE_MAX) return false;
  out->aligned_offset = aligned;
  out->slack = slack;
  out->map_len = map_len;
  return true;
}

int MemfdCreate(const char* name, uint64_t size, unsigned int seals, int* err) {
  if (size > static_cast<uint64_t>(INT64_MAX)) {
    *err = EFBIG;
    return -1;
  }
  int fd = memfd_create(name, MFD_CLOEXEC | (seals != 0 ? MFD_ALLOW_SEALING : 0));
  if (fd < 0) {
    *err = errno;
    return -1;
  }
  if (ftruncate(fd, static_cast<off_t>(size)) < 0 ||
      (seals != 0 && fcntl(fd, F_ADD_SEALS, seals) < 0)) {
    *err = errno;
    close(fd);
    return -1;
  }
  return fd;
}

int GetSeals(int fd, int* err) {
  int seals = fcntl(fd, F_GET_SEALS);
  if (seals < 0) *err = errno;
  return seals;
}

bool GetFdLimit(FdLimit* out, int* err) {
  struct rlimit r;
  if (getrlimit(RLIMIT_NOFILE, &r) < 0) {
    *err = errno;
    return false;
  }
  out->soft = r.rlim_cur;
  out->hard = r.rlim_max;
  return true;
}

bool SetFdLimit(const FdLimit& limit, int* err) {
  struct rlimit r;
  r.rlim_cur = static_cast<rlim_t>(limit.soft);
  r.rlim_max = static_cast<rlim_t>(limit.hard);
  if (setrlimit(RLIMIT_NOFILE, &r) < 0) {
    *err = errno;
    return false;
  }
  return true;
}

int CountOpenFds(int* err) {
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) {
    *err = errno;
    return -1;
  }
  int count = 0;
  while (struct dirent* entry = readdir(dir)) {
    if (entry->d_name[0] == '.') continue;  // "." and ".."
    count++;
  }
  closedir(dir);
  return count - 1;  // the directory's own fd
}

}  // namespace vun::sys
