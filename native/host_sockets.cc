// Raw host sockets owned through the addon, and the data movers over caller
// memory (issue 8's groundwork; the NAT's flows still use node:net/dgram).
//
// The system calls are in host_io.cc (Node-free, unit tested); this file is
// the N-API glue: strict argument checks (TypeError/RangeError), and the
// conversion of Uint8Array views into iovecs. A view is used exactly as JS
// sees it: its data pointer already includes byteOffset and only
// byteLength bytes from there are handed to the kernel, so the addon never
// touches memory outside a view (a detached view has length 0). Every
// argument that says how many views or records to use is checked against
// the arrays it indexes before any system call.
//
// Return conventions (see src/native/index.ts): calls that create something
// (tcpSocket) or set a socket up (bind, listen, options) throw on failure;
// the calls of the per-event path (connect, readv, writev, discard, the mmsg
// batches, shutdown, tcpInfo, socketError) return a negative errno instead,
// so EAGAIN, ECONNRESET or EPIPE never become exceptions.
#include <errno.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <string>

#include "addon.h"
#include "args.h"
#include "host_io.h"
#include "inet_address.h"

namespace vun {
namespace {

// Record layout of a datagram batch (DatagramRecord in src/native/index.ts).
constexpr size_t kRecordSegments = 0;  // in: how many of the views make this datagram
constexpr size_t kRecordLength = 1;    // out: bytes received / sent
constexpr size_t kRecordFlags = 2;     // out (recv): kDatagramTruncated
constexpr size_t kRecordFamily = 3;    // in (send) / out (recv): 4, 6 (0: none)
constexpr size_t kRecordPort = 4;      // in (send) / out (recv)
constexpr size_t kRecordAddress = 5;   // 16 address bytes (4 words) as in memory
constexpr size_t kRecordStride = 9;
constexpr uint32_t kDatagramTruncated = 1;

// The socket options setSocketOption/getSocketOption take, by the index
// SocketOption gives them in src/native/index.ts.
struct OptionName {
  int level;
  int name;
  const char* text;
};
const OptionName kOptions[] = {
    {IPPROTO_TCP, TCP_NODELAY, "TCP_NODELAY"},   {SOL_SOCKET, SO_PEEK_OFF, "SO_PEEK_OFF"},
    {SOL_SOCKET, SO_RCVBUF, "SO_RCVBUF"},         {SOL_SOCKET, SO_SNDBUF, "SO_SNDBUF"},
    {IPPROTO_IPV6, IPV6_V6ONLY, "IPV6_V6ONLY"},   {SOL_SOCKET, SO_REUSEADDR, "SO_REUSEADDR"},
    {SOL_SOCKET, SO_KEEPALIVE, "SO_KEEPALIVE"},   {IPPROTO_TCP, TCP_NOTSENT_LOWAT, "TCP_NOTSENT_LOWAT"},
};
constexpr double kOptionCount = sizeof kOptions / sizeof kOptions[0];

int ArgFamily(const Napi::CallbackInfo& info, size_t i) {
  if (!info[i].IsNumber()) ThrowTypeError(info.Env(), "family must be 4 or 6");
  double family = info[i].As<Napi::Number>().DoubleValue();
  if (family != 4 && family != 6) ThrowRangeError(info.Env(), "family must be 4 or 6");
  return family == 4 ? AF_INET : AF_INET6;
}

// A Uint32Array (no other views).
Napi::Uint32Array ArgUint32s(const Napi::CallbackInfo& info, size_t i, const char* name) {
  Napi::Value v = info[i];
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array) {
    ThrowTypeError(info.Env(), std::string(name) + " must be a Uint32Array");
  }
  return v.As<Napi::Uint32Array>();
}

// The array of views `info[i]` (a JS Array of Uint8Array).
napi_value ArgViews(const Napi::CallbackInfo& info, size_t i, uint32_t* length) {
  Napi::Value v = info[i];
  if (!v.IsArray()) ThrowTypeError(info.Env(), "views must be an array of Uint8Array");
  *length = v.As<Napi::Array>().Length();
  return v;
}

// iov[k] = views[start + k] for k < count (all checked to exist beforehand).
void GatherViews(napi_env env, napi_value views, uint32_t start, size_t count, struct iovec* iov) {
  for (size_t k = 0; k < count; k++) {
    napi_value element;
    NAPI_THROW_IF_FAILED_VOID(env, napi_get_element(env, views, start + static_cast<uint32_t>(k), &element));
    bool is_typed = false;
    NAPI_THROW_IF_FAILED_VOID(env, napi_is_typedarray(env, element, &is_typed));
    napi_typedarray_type type = napi_int8_array;
    size_t length = 0;
    void* data = nullptr;
    if (is_typed) {
      NAPI_THROW_IF_FAILED_VOID(env, napi_get_typedarray_info(env, element, &type, &length, &data, nullptr, nullptr));
    }
    if (!is_typed || type != napi_uint8_array) {
      ThrowTypeError(env, "views[" + std::to_string(start + k) + "] must be a Uint8Array");
    }
    iov[k].iov_base = length == 0 ? nullptr : data;
    iov[k].iov_len = length;
  }
}

// The (views, count) pair of readv/writev as iovecs; returns how many.
size_t ViewsToIov(const Napi::CallbackInfo& info, size_t views_arg, size_t count_arg, struct iovec* iov) {
  uint32_t available = 0;
  napi_value views = ArgViews(info, views_arg, &available);
  size_t count = static_cast<size_t>(ArgInteger(info, count_arg, "count", 0, hostio::kMaxIov));
  if (count > available) ThrowRangeError(info.Env(), "count exceeds views.length");
  GatherViews(info.Env(), views, 0, count, iov);
  return count;
}

Napi::Value TcpSocket(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int domain = ArgFamily(info, 0);
  int fd = socket(domain, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
  if (fd < 0) ThrowErrno(env, errno, "socket", domain == AF_INET ? "TCP" : "TCPv6");
  return Napi::Number::New(env, fd);
}

Napi::Value SocketBind(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  std::string address = ArgString(info, 1, "address");
  uint16_t port = static_cast<uint16_t>(ArgInteger(info, 2, "port", 0, 65535));
  return Napi::Number::New(info.Env(), BindInet(info.Env(), fd, address, port));
}

void SocketListen(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  int backlog = static_cast<int>(ArgInteger(info, 1, "backlog", 1, 65535));
  if (listen(fd, backlog) < 0) ThrowErrno(info.Env(), errno, "listen");
}

Napi::Value SocketConnect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  std::string address = ArgString(info, 1, "address");
  uint16_t port = static_cast<uint16_t>(ArgInteger(info, 2, "port", 0, 65535));
  struct sockaddr_storage remote;
  socklen_t remote_len = ParseInetAddress(env, InetSocketDomain(env, fd, "connect"), address, port, &remote);
  return Napi::Number::New(env, hostio::Connect(fd, reinterpret_cast<struct sockaddr*>(&remote), remote_len));
}

Napi::Value SocketError(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), hostio::SocketError(ArgFd(info, 0)));
}

Napi::Value SocketAccept(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  uint32_t max = static_cast<uint32_t>(ArgInteger(info, 1, "max", 1, 1024));
  Napi::Array result = Napi::Array::New(env);
  uint32_t count = 0;
  while (count < max) {
    hostio::PackedAddress peer;
    int accepted = hostio::Accept(fd, &peer);
    if (accepted == -EAGAIN) break;
    if (accepted == -ECONNABORTED) continue;  // gone before we took it
    if (accepted < 0) {
      if (count > 0) break;  // hand over what was accepted; the error comes back on the next call
      ThrowErrno(env, -accepted, "accept4");
    }
    struct sockaddr_storage address;
    socklen_t length = hostio::UnpackAddress(peer.family == 6 ? AF_INET6 : AF_INET, peer, &address);
    Napi::Object o = Napi::Object::New(env);
    o.Set("fd", Napi::Number::New(env, accepted));
    o.Set("address", Napi::String::New(env, length == 0 ? std::string() : FormatInetAddress(address)));
    o.Set("port", Napi::Number::New(env, peer.port));
    result.Set(count++, o);
  }
  return result;
}

Napi::Value SocketShutdown(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  int how = static_cast<int>(ArgInteger(info, 1, "how", SHUT_RD, SHUT_RDWR));
  return Napi::Number::New(info.Env(), shutdown(fd, how) < 0 ? -errno : 0);
}

void SetSocketOption(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  const OptionName& option = kOptions[static_cast<size_t>(ArgInteger(info, 1, "option", 0, kOptionCount - 1))];
  int value = static_cast<int>(ArgInteger(info, 2, "value", INT32_MIN, INT32_MAX));
  if (setsockopt(fd, option.level, option.name, &value, sizeof value) < 0) {
    ThrowErrno(info.Env(), errno, "setsockopt", option.text);
  }
}

Napi::Value GetSocketOption(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  const OptionName& option = kOptions[static_cast<size_t>(ArgInteger(info, 1, "option", 0, kOptionCount - 1))];
  int value = 0;
  socklen_t length = sizeof value;
  if (getsockopt(fd, option.level, option.name, &value, &length) < 0) {
    ThrowErrno(info.Env(), errno, "getsockopt", option.text);
  }
  return Napi::Number::New(info.Env(), value);
}

Napi::Value TcpInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  Napi::Uint32Array out = ArgUint32s(info, 1, "into");
  if (out.ElementLength() < hostio::kTcpInfoFieldCount) {
    ThrowRangeError(env, "into must have at least " + std::to_string(hostio::kTcpInfoFieldCount) + " elements");
  }
  return Napi::Number::New(env, hostio::TcpInfo(fd, out.Data()));
}

Napi::Value Readv(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  struct iovec iov[hostio::kMaxIov];
  size_t count = ViewsToIov(info, 1, 2, iov);
  double flags = ArgInteger(info, 3, "flags", 0, MSG_PEEK);
  if (flags != 0 && flags != MSG_PEEK) ThrowRangeError(env, "flags must be 0 or MSG_PEEK");
  return Napi::Number::New(env, static_cast<double>(hostio::ReadV(fd, iov, count, static_cast<int>(flags))));
}

Napi::Value Writev(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  struct iovec iov[hostio::kMaxIov];
  size_t count = ViewsToIov(info, 1, 2, iov);
  return Napi::Number::New(info.Env(), static_cast<double>(hostio::WriteV(fd, iov, count)));
}

Napi::Value Discard(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  size_t length = static_cast<size_t>(ArgInteger(info, 1, "length", 0, INT32_MAX));
  return Napi::Number::New(info.Env(), static_cast<double>(hostio::Discard(fd, length)));
}

// The common part of recvmmsg/sendmmsg(fd, views, count, records): checks
// the records and the views they claim, and builds the batch.
struct Batch {
  hostio::Datagram datagrams[hostio::kMaxDatagrams];
  struct iovec iov[hostio::kMaxIov];
  size_t count = 0;
  uint32_t* records = nullptr;
};
void BuildBatch(const Napi::CallbackInfo& info, bool sending, Batch* batch) {
  Napi::Env env = info.Env();
  uint32_t available = 0;
  napi_value views = ArgViews(info, 1, &available);
  batch->count = static_cast<size_t>(ArgInteger(info, 2, "count", 0, hostio::kMaxDatagrams));
  Napi::Uint32Array records = ArgUint32s(info, 3, "records");
  if (records.ElementLength() / kRecordStride < batch->count) {
    ThrowRangeError(env, "records holds fewer than count records");
  }
  batch->records = records.Data();
  size_t used = 0;
  for (size_t i = 0; i < batch->count; i++) {
    const uint32_t* record = batch->records + i * kRecordStride;
    size_t segments = record[kRecordSegments];
    if (segments > available - used || segments > hostio::kMaxIov - used) {
      ThrowRangeError(env, "the records' segments exceed views.length (or " + std::to_string(hostio::kMaxIov) +
                               " views in all)");
    }
    hostio::Datagram& d = batch->datagrams[i];
    d = hostio::Datagram();
    d.iov = batch->iov + used;
    d.iov_count = segments;
    GatherViews(env, views, static_cast<uint32_t>(used), segments, d.iov);
    used += segments;
    if (sending) {
      d.address.family = record[kRecordFamily];
      d.address.port = record[kRecordPort];
      if ((d.address.family != 0 && d.address.family != 4 && d.address.family != 6) || d.address.port > 65535) {
        ThrowRangeError(env, "record " + std::to_string(i) + ": family must be 0, 4 or 6 and port at most 65535");
      }
      memcpy(d.address.bytes, record + kRecordAddress, sizeof d.address.bytes);
    }
  }
}

Napi::Value Recvmmsg(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  Batch batch_on_stack;  // ~28 KiB
  Batch* batch = &batch_on_stack;
  BuildBatch(info, false, batch);
  int n = hostio::RecvMmsg(fd, batch->datagrams, batch->count);
  for (int i = 0; i < n; i++) {
    const hostio::Datagram& d = batch->datagrams[i];
    uint32_t* record = batch->records + static_cast<size_t>(i) * kRecordStride;
    record[kRecordLength] = d.length;
    record[kRecordFlags] = d.truncated ? kDatagramTruncated : 0;
    record[kRecordFamily] = d.address.family;
    record[kRecordPort] = d.address.port;
    memcpy(record + kRecordAddress, d.address.bytes, sizeof d.address.bytes);
  }
  return Napi::Number::New(info.Env(), n);
}

Napi::Value Sendmmsg(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  Batch batch_on_stack;
  Batch* batch = &batch_on_stack;
  BuildBatch(info, true, batch);
  int domain = batch->count > 0 ? InetSocketDomain(env, fd, "sendmmsg") : AF_INET;
  int n = hostio::SendMmsg(fd, domain, batch->datagrams, batch->count);
  for (int i = 0; i < n; i++) {
    batch->records[static_cast<size_t>(i) * kRecordStride + kRecordLength] = batch->datagrams[i].length;
  }
  return Napi::Number::New(env, n);
}

}  // namespace

void InitHostSockets(Napi::Env env, Napi::Object exports) {
  exports.Set("tcpSocket", Napi::Function::New<TcpSocket>(env, "tcpSocket"));
  exports.Set("socketBind", Napi::Function::New<SocketBind>(env, "socketBind"));
  exports.Set("socketListen", Napi::Function::New<SocketListen>(env, "socketListen"));
  exports.Set("socketConnect", Napi::Function::New<SocketConnect>(env, "socketConnect"));
  exports.Set("socketError", Napi::Function::New<SocketError>(env, "socketError"));
  exports.Set("socketAccept", Napi::Function::New<SocketAccept>(env, "socketAccept"));
  exports.Set("socketShutdown", Napi::Function::New<SocketShutdown>(env, "socketShutdown"));
  exports.Set("setSocketOption", Napi::Function::New<SetSocketOption>(env, "setSocketOption"));
  exports.Set("getSocketOption", Napi::Function::New<GetSocketOption>(env, "getSocketOption"));
  exports.Set("tcpInfo", Napi::Function::New<TcpInfo>(env, "tcpInfo"));
  exports.Set("readv", Napi::Function::New<Readv>(env, "readv"));
  exports.Set("writev", Napi::Function::New<Writev>(env, "writev"));
  exports.Set("discard", Napi::Function::New<Discard>(env, "discard"));
  exports.Set("recvmmsg", Napi::Function::New<Recvmmsg>(env, "recvmmsg"));
  exports.Set("sendmmsg", Napi::Function::New<Sendmmsg>(env, "sendmmsg"));
}

}  // namespace vun
