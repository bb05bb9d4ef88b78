// Node-free system-call helpers shared by the addon and native_tests.
//
// Everything here is plain POSIX/Linux: no N-API, no libuv. Functions report
// failure through an errno value (never by throwing), so they can be unit
// tested on their own (see native_tests.cc) and wrapped by the N-API glue.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace vun::sys {

// SCM_MAX_FD in the kernel: the most fds one SCM_RIGHTS message can carry.
constexpr size_t kScmMaxFd = 253;

// The errno name ("EAGAIN") for an errno value, or "UNKNOWN" if unknown.
const char* ErrnoName(int err);

// Readiness bits used by the watchers (mapped to UV_* in fd_watch.cc).
constexpr int kRead = 1;
constexpr int kWrite = 2;
// Parses "", "r", "w", "rw" into kRead|kWrite bits; returns -1 otherwise.
int ParseEvents(const std::string& events);
// The inverse for a non-empty mask: "r", "w" or "rw".
const char* EventsName(int mask);

// ---- SCM_RIGHTS messages --------------------------------------------------
struct RecvResult {
  ssize_t bytes = -1;          // >= 0 on success
  int err = 0;                 // errno when bytes < 0 (EAGAIN: would block)
  std::vector<int> fds;        // at most max_fds, owned by the caller
  bool fds_truncated = false;  // extra fds were closed, or MSG_CTRUNC
  // With MSG_CTRUNC: the errno (EMFILE, ENFILE) that keeps this process from
  // opening another fd right now, i.e. why the kernel could not install the
  // fds that were sent; 0 when a new fd can be opened (cause unknown).
  int fds_error = 0;
};
// recvmsg(MSG_DONTWAIT|MSG_CMSG_CLOEXEC) with room for kScmMaxFd fds; fds
// beyond max_fds are closed. Retries EINTR.
//
// The control buffer has room for every fd one message can carry, so
// MSG_CTRUNC means the kernel could not install them all: it installs fds
// until one fails (EMFILE at RLIMIT_NOFILE, ENFILE at the system limit),
// drops the rest and sets MSG_CTRUNC, with no errno. RecvMsg then probes
// (F_DUPFD_CLOEXEC, closed at once) before closing anything, and reports the
// probe's errno in fds_error.
RecvResult RecvMsg(int fd, void* buf, size_t len, size_t max_fds);
// sendmsg(MSG_DONTWAIT|MSG_NOSIGNAL) with the fds as SCM_RIGHTS (nfds may be
// 0). Returns bytes sent, or -1 with *err set. Retries EINTR.
ssize_t SendMsg(int fd, const void* buf, size_t len, const int* fds, size_t nfds, int* err);

// ---- eventfds -------------------------------------------------------------
enum class DrainStatus {
  kDrained,  // read until EAGAIN (counter is zero now)
  kEof,      // read returned 0: not an eventfd, the writer is gone
  kError,    // read failed with *err other than EAGAIN
};
// Reads 8-byte counters until EAGAIN (at most `max_reads` reads, so a pipe
// that is continuously written cannot starve the loop). *total accumulates
// the counter values read.
DrainStatus DrainEventfd(int fd, uint64_t* total, int* err, int max_reads = 64);
// True if poll(2) reports POLLERR, POLLHUP or POLLNVAL on the fd right now.
bool FdHungUp(int fd);

// ---- readiness right now --------------------------------------------------
// poll(2) for `events` on one fd with a zero timeout: the revents (0 when
// nothing is ready), or -errno if poll itself fails. Retries EINTR.
int PollNow(int fd, short events);

// ---- guest memory ---------------------------------------------------------
struct MapSpan {
  uint64_t aligned_offset;  // offset rounded down to the page
  uint64_t slack;           // offset - aligned_offset
  uint64_t map_len;         // size + slack
};
// Computes the page-aligned mmap span for (offset, size). Returns false if it
// overflows (or size is 0, or page is not a power of two).
bool AlignForMmap(uint64_t offset, uint64_t size, uint64_t page, MapSpan* out);

// memfd_create(name, MFD_CLOEXEC) sized to `size`; with seals != 0 also
// MFD_ALLOW_SEALING and F_ADD_SEALS(seals) after the ftruncate (what QEMU's
// memory-backend-memfd does with seal=on: F_SEAL_GROW|F_SEAL_SHRINK|
// F_SEAL_SEAL). Returns the fd, or -1 with *err set (nothing left open).
int MemfdCreate(const char* name, uint64_t size, unsigned int seals, int* err);
// fcntl(F_GET_SEALS): the seal bits (F_SEAL_*), or -1 when the file cannot
// carry seals (EINVAL: not shmem/hugetlbfs) or on another error (*err set).
int GetSeals(int fd, int* err);

// ---- misc -----------------------------------------------------------------
// Entries of /proc/self/fd, minus the one used to read it; -1 with *err set.
int CountOpenFds(int* err);

// RLIMIT_NOFILE. Limits are rlim_t values (RLIM_INFINITY included).
struct FdLimit {
  uint64_t soft;
  uint64_t hard;
};
bool GetFdLimit(FdLimit* out, int* err);
bool SetFdLimit(const FdLimit& limit, int* err);

}  // namespace vun::sys
