/**
 * Tests of the raw host sockets of the addon (issue 8's groundwork; the
 * contract is in src/native/index.ts): non-blocking TCP sockets, the epoll
 * readiness set behind one uv_poll, and the data movers over Uint8Array
 * views. Real sockets on 127.0.0.1 and ::1 only; Node's net module plays the
 * peer where a peer must reset or close. The last case is a TCP echo made of
 * these calls alone.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import {
  native, MSG_PEEK, Poll, Shutdown, SocketOption, TcpInfoField, TCP_INFO_FIELDS, DatagramField, DATAGRAM_RECORD,
  DATAGRAM_TRUNCATED, MAX_VIEWS, type PollSet,
} from '../src/native/index.js';
import { settle, waitFor } from './helpers/wait.js';

const E = os.constants.errno;
const O_NONBLOCK = 0o4000;
const O_CLOEXEC = 0o2000000;

function fdFlags(fd: number): number {
  const m = /^flags:\s*([0-7]+)$/m.exec(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
  if (!m) throw new Error(`no flags in fdinfo of ${fd}`);
  return parseInt(m[1]!, 8);
}

/** Resolves with the events once `fd` is ready for any of `events` (a one-member poll set, closed after). */
function whenReady(fd: number, events: number): Promise<number> {
  return new Promise((resolve) => {
    const ready = new Uint32Array(2);
    const set = native.pollSet(ready, () => {
      set.remove(fd);
      set.close();
      resolve(ready[1]!);
    });
    set.add(fd, events, 0);
  });
}

function rawListener(host: '127.0.0.1' | '::1'): { fd: number; port: number } {
  const fd = native.tcpSocket(host === '::1' ? 6 : 4);
  const port = native.socketBind(fd, host, 0);
  native.socketListen(fd, 64);
  return { fd, port };
}

/** A connected pair of raw TCP sockets over loopback. */
async function rawPair(host: '127.0.0.1' | '::1' = '127.0.0.1'): Promise<{ client: number; server: number }> {
  const listener = rawListener(host);
  const client = native.tcpSocket(host === '::1' ? 6 : 4);
  const r = native.socketConnect(client, host, listener.port);
  expect([0, -E.EINPROGRESS]).toContain(r);
  await whenReady(listener.fd, Poll.IN);
  const accepted = native.socketAccept(listener.fd, 4);
  expect(accepted).toHaveLength(1);
  expect(accepted[0]!.address).toBe(host);
  native.close(listener.fd);
  await whenReady(client, Poll.OUT);
  expect(native.socketError(client)).toBe(0);
  return { client, server: accepted[0]!.fd };
}

/** A raw client connected to a Node server; resolves with both ends. */
async function rawToNode(): Promise<{ fd: number; peer: net.Socket; server: net.Server }> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const peerP = new Promise<net.Socket>((r) => server.once('connection', r));
  const fd = native.tcpSocket(4);
  native.socketConnect(fd, '127.0.0.1', (server.address() as net.AddressInfo).port);
  const peer = await peerP;
  await whenReady(fd, Poll.OUT);
  expect(native.socketError(fd)).toBe(0);
  return { fd, peer, server };
}

const bytes = (text: string) => new TextEncoder().encode(text);
const text = (b: Uint8Array) => new TextDecoder().decode(b);

let fdsAtStart = 0;
beforeAll(() => {
  fdsAtStart = native.openFdCount();
});
afterAll(async () => {
  // Every socket, listener and epoll fd the tests made is closed again (a
  // closed set's epoll fd goes with libuv's close callback, a loop turn later).
  await waitFor(() => native.openFdCount() <= fdsAtStart, 3000, 'the fds to be closed').catch(() => {});
  expect(native.openFdCount()).toBe(fdsAtStart);
});

describe('raw TCP sockets', () => {
  it('are non-blocking and close-on-exec, and check their arguments', () => {
    for (const family of [4, 6] as const) {
      const fd = native.tcpSocket(family);
      expect(fdFlags(fd) & O_NONBLOCK).toBe(O_NONBLOCK);
      expect(fdFlags(fd) & O_CLOEXEC).toBe(O_CLOEXEC);
      native.close(fd);
    }
    expect(() => native.tcpSocket(5 as 4)).toThrow(RangeError);
    const fd = native.tcpSocket(4);
    expect(() => native.socketBind(fd, '::1', 0)).toThrow(TypeError); // not an IPv4 address
    expect(() => native.socketConnect(fd, '127.0.0.1', 65536)).toThrow(RangeError);
    expect(() => native.setSocketOption(fd, 99 as SocketOption, 1)).toThrow(RangeError);
    expect(() => native.tcpInfo(fd, new Uint32Array(TCP_INFO_FIELDS - 1))).toThrow(RangeError);
    expect(() => native.readv(fd, [new Uint8Array(1)], 1, 1)).toThrow(RangeError); // only 0 or MSG_PEEK
    native.close(fd);
  });

  it('a non-blocking connect to a closed port reports ECONNREFUSED through SO_ERROR', async () => {
    const { fd: listener, port } = rawListener('127.0.0.1');
    native.close(listener); // nothing listens on `port` now
    const fd = native.tcpSocket(4);
    const r = native.socketConnect(fd, '127.0.0.1', port);
    expect(r).toBe(-E.EINPROGRESS);
    const events = await whenReady(fd, Poll.OUT);
    expect(events & (Poll.ERR | Poll.HUP)).not.toBe(0);
    expect(native.socketError(fd)).toBe(-E.ECONNREFUSED);
    expect(native.socketError(fd)).toBe(0); // reading SO_ERROR cleared it
    native.close(fd);
  });

  it('accepts in batches, IPv6 included, with the peer addresses', async () => {
    const listener = rawListener('::1');
    const clients = [0, 1, 2].map(() => native.tcpSocket(6));
    for (const c of clients) expect(native.socketConnect(c, '::1', listener.port)).toBe(-E.EINPROGRESS);
    // On a listener, TCP_INFO's unacked is the accept queue's length: wait until all three wait there.
    const info = new Uint32Array(TCP_INFO_FIELDS);
    await waitFor(() => native.tcpInfo(listener.fd, info) === 0 && info[TcpInfoField.unackedSegments] === 3);
    expect(info[TcpInfoField.state]).toBe(10); // LISTEN
    const first = native.socketAccept(listener.fd, 2); // at most `max`
    const rest = native.socketAccept(listener.fd, 8);
    expect(first).toHaveLength(2);
    expect(rest).toHaveLength(1);
    expect(native.socketAccept(listener.fd, 8)).toEqual([]); // none pending
    for (const a of [...first, ...rest]) {
      expect(a.address).toBe('::1');
      expect(a.port).toBeGreaterThan(0);
      expect(fdFlags(a.fd) & (O_NONBLOCK | O_CLOEXEC)).toBe(O_NONBLOCK | O_CLOEXEC);
      native.close(a.fd);
    }
    for (const c of clients) native.close(c);
    native.close(listener.fd);
  });

  it('socket options round-trip (TCP_NODELAY, SO_SNDBUF, IPV6_V6ONLY, SO_PEEK_OFF)', () => {
    const fd = native.tcpSocket(6);
    native.setSocketOption(fd, SocketOption.TCP_NODELAY, 1);
    expect(native.getSocketOption(fd, SocketOption.TCP_NODELAY)).toBe(1);
    native.setSocketOption(fd, SocketOption.SO_SNDBUF, 8192);
    expect(native.getSocketOption(fd, SocketOption.SO_SNDBUF)).toBe(16384); // the kernel doubles it
    native.setSocketOption(fd, SocketOption.IPV6_V6ONLY, 1);
    expect(native.getSocketOption(fd, SocketOption.IPV6_V6ONLY)).toBe(1);
    native.setSocketOption(fd, SocketOption.SO_PEEK_OFF, 0);
    expect(native.getSocketOption(fd, SocketOption.SO_PEEK_OFF)).toBe(0);
    native.close(fd);
  });
});

describe('data movers over views', () => {
  it('a peer that does not read: short writes, then -EAGAIN, and TCP_INFO/SIOCOUTQ count what waits', async () => {
    const { client, server } = await rawPair();
    native.setSocketOption(client, SocketOption.SO_SNDBUF, 4096);
    native.setSocketOption(server, SocketOption.SO_RCVBUF, 4096);
    const block = new Uint8Array(1 << 20);
    const views = [block.subarray(0, 1000), block.subarray(1000)];
    let total = 0;
    let short = 0;
    let r = 0;
    for (let i = 0; i < 1000; i++) {
      r = native.writev(client, views, 2);
      if (r < 0) break;
      if (r < block.length) short++;
      total += r;
    }
    expect(r).toBe(-E.EAGAIN);
    expect(short).toBeGreaterThan(0);
    expect(total).toBeGreaterThan(0);
    expect(total).toBeLessThan(block.length);
    const info = new Uint32Array(TCP_INFO_FIELDS);
    expect(native.tcpInfo(client, info)).toBe(0);
    expect(info[TcpInfoField.state]).toBe(1); // ESTABLISHED
    expect(info[TcpInfoField.outq]).toBeGreaterThan(0);
    expect(info[TcpInfoField.outq]).toBeLessThanOrEqual(total);
    expect(info[TcpInfoField.outqNotSent]).toBeLessThanOrEqual(info[TcpInfoField.outq]!);
    expect(info[TcpInfoField.sndMss]).toBeGreaterThan(0);
    const serverInfo = new Uint32Array(TCP_INFO_FIELDS);
    expect(native.tcpInfo(server, serverInfo)).toBe(0);
    expect(serverInfo[TcpInfoField.inq]).toBe(total - info[TcpInfoField.outq]!);
    native.close(client);
    native.close(server);
  });

  it('reading with nothing queued is -EAGAIN (not an exception), EOF is 0', async () => {
    const { client, server } = await rawPair();
    const into = new Uint8Array(16);
    expect(native.readv(server, [into], 1, 0)).toBe(-E.EAGAIN);
    expect(native.readv(server, [into], 1, MSG_PEEK)).toBe(-E.EAGAIN);
    expect(native.discard(server, 16)).toBe(-E.EAGAIN);
    expect(native.writev(client, [bytes('bye')], 1)).toBe(3);
    expect(native.socketShutdown(client, Shutdown.WRITE)).toBe(0);
    await whenReady(server, Poll.RDHUP);
    expect(native.readv(server, [into], 1, 0)).toBe(3);
    expect(text(into.subarray(0, 3))).toBe('bye');
    expect(native.readv(server, [into], 1, 0)).toBe(0); // EOF
    native.close(client);
    native.close(server);
  });

  it('MSG_PEEK with SO_PEEK_OFF moves on with each peek; discard drops acknowledged bytes and moves the offset back', async () => {
    const { client, server } = await rawPair();
    const payload = new Uint8Array(100).map((_, i) => i);
    expect(native.writev(client, [payload], 1)).toBe(100);
    await whenReady(server, Poll.IN);
    native.setSocketOption(server, SocketOption.SO_PEEK_OFF, 0);
    const a = new Uint8Array(10);
    const b = new Uint8Array(20);
    expect(native.readv(server, [a, b], 2, MSG_PEEK)).toBe(30);
    expect([...a]).toEqual([...payload.subarray(0, 10)]);
    expect([...b]).toEqual([...payload.subarray(10, 30)]);
    expect(native.readv(server, [a], 1, MSG_PEEK)).toBe(10); // from the offset on: bytes 30..39
    expect([...a]).toEqual([...payload.subarray(30, 40)]);
    expect(native.getSocketOption(server, SocketOption.SO_PEEK_OFF)).toBe(40);
    // The "guest" acknowledged 25 bytes: dropped from the kernel's queue, offset 40 -> 15.
    expect(native.discard(server, 25)).toBe(25);
    expect(native.getSocketOption(server, SocketOption.SO_PEEK_OFF)).toBe(15);
    expect(native.readv(server, [a], 1, MSG_PEEK)).toBe(10); // bytes 40..49 still
    expect([...a]).toEqual([...payload.subarray(40, 50)]);
    // A "retransmission" re-reads unacknowledged data from the kernel: offset back to 0.
    native.setSocketOption(server, SocketOption.SO_PEEK_OFF, 0);
    expect(native.readv(server, [a], 1, MSG_PEEK)).toBe(10);
    expect([...a]).toEqual([...payload.subarray(25, 35)]);
    const info = new Uint32Array(TCP_INFO_FIELDS);
    native.tcpInfo(server, info);
    expect(info[TcpInfoField.inq]).toBe(75); // peeking consumed nothing
    native.close(client);
    native.close(server);
  });

  it('a reset peer: -ECONNRESET on read, then -EPIPE on write, never an exception or SIGPIPE', async () => {
    const { fd, peer, server } = await rawToNode();
    peer.resetAndDestroy();
    await whenReady(fd, Poll.IN | Poll.RDHUP);
    expect(native.readv(fd, [new Uint8Array(8)], 1, 0)).toBe(-E.ECONNRESET);
    expect(native.writev(fd, [bytes('late')], 1)).toBe(-E.EPIPE);
    native.close(fd);
    server.close();
  });

  it('a peer that closed: its data, then EOF; writes fail once the kernel learns the peer is gone', async () => {
    const { fd, peer, server } = await rawToNode();
    peer.end('last words');
    await whenReady(fd, Poll.RDHUP);
    const into = new Uint8Array(32);
    expect(native.readv(fd, [into], 1, 0)).toBe(10);
    expect(native.readv(fd, [into], 1, 0)).toBe(0);
    peer.destroy(); // closes its fd: the kernel now answers data with a reset
    await new Promise((r) => peer.once('close', r));
    // The first write after the peer's close is answered with a reset.
    expect(native.writev(fd, [bytes('x')], 1)).toBe(1);
    await whenReady(fd, Poll.ERR | Poll.HUP);
    const r = native.writev(fd, [bytes('y')], 1);
    expect([-E.ECONNRESET, -E.EPIPE]).toContain(r);
    expect(native.writev(fd, [bytes('z')], 1)).toBe(-E.EPIPE);
    native.close(fd);
    server.close();
  });

  it('views into the middle of a larger buffer: offsets honoured, nothing outside them touched', async () => {
    const { client, server } = await rawPair();
    const big = new Uint8Array(64).fill(0xee);
    for (let i = 0; i < 64; i++) if (i >= 8 && i < 24) big[i] = i; // the bytes to send: 8..23
    expect(native.writev(client, [big.subarray(8, 16), big.subarray(16, 24)], 2)).toBe(16);
    await whenReady(server, Poll.IN);
    // Receive into [20, 30) and [40, 46) of another buffer: 16 bytes land exactly there.
    const land = new Uint8Array(new ArrayBuffer(128), 32, 64).fill(0xaa); // itself a view with an offset
    expect(native.readv(server, [land.subarray(20, 30), land.subarray(40, 46)], 2, 0)).toBe(16);
    expect([...land.subarray(20, 30)]).toEqual([8, 9, 10, 11, 12, 13, 14, 15, 16, 17]);
    expect([...land.subarray(40, 46)]).toEqual([18, 19, 20, 21, 22, 23]);
    const outside = [...land.subarray(0, 20), ...land.subarray(30, 40), ...land.subarray(46)];
    expect(outside.every((b) => b === 0xaa)).toBe(true);
    expect(new Uint8Array(land.buffer, 0, 32).every((b) => b === 0)).toBe(true); // before the view: untouched
    native.close(client);
    native.close(server);
  });

  it('refuses what it would have to guess: counts beyond the arrays, non-Uint8Array views', () => {
    const [a, b] = native.unixSocketPair();
    const v = new Uint8Array(4);
    expect(() => native.writev(a, [v], 2)).toThrow(RangeError); // count > views.length
    expect(() => native.readv(a, [v], MAX_VIEWS + 1, 0)).toThrow(RangeError);
    expect(() => native.writev(a, [new Uint16Array(2) as unknown as Uint8Array], 1)).toThrow(TypeError);
    expect(() => native.writev(a, [v, 'x' as unknown as Uint8Array], 2)).toThrow(TypeError);
    expect(() => native.writev(a, v as unknown as Uint8Array[], 1)).toThrow(TypeError);
    const records = new Uint32Array(DATAGRAM_RECORD);
    expect(() => native.sendmmsg(a, [v], 2, records)).toThrow(RangeError); // room for 1 record
    records[DatagramField.segments] = 2;
    expect(() => native.sendmmsg(a, [v], 1, records)).toThrow(RangeError); // claims 2 views of 1
    records[DatagramField.segments] = 1;
    records[DatagramField.family] = 5;
    expect(() => native.sendmmsg(a, [v], 1, records)).toThrow(RangeError);
    expect(() => native.recvmmsg(a, [v], 1, new Uint8Array(64) as unknown as Uint32Array)).toThrow(TypeError);
    // Nothing was sent by any refused call.
    expect(native.readv(b, [v], 1, 0)).toBe(-E.EAGAIN);
    // A Buffer is a Uint8Array too; a view counts only its own bytes.
    expect(native.writev(a, [Buffer.from('abcdef').subarray(2, 4)], 1)).toBe(2);
    expect(native.readv(b, [v], 1, 0)).toBe(2);
    expect(text(v.subarray(0, 2))).toBe('cd');
    native.close(a);
    native.close(b);
  });
});

describe('datagram batches (recvmmsg/sendmmsg)', () => {
  for (const host of ['127.0.0.1', '::1'] as const) {
    it(`moves several datagrams per call with per-datagram addresses and lengths (${host})`, async () => {
      const family = host === '::1' ? 6 : 4;
      const sender = native.udpSocket(family);
      const receiver = native.udpSocket(family);
      const senderPort = native.udpBind(sender, host, 0);
      const receiverPort = native.udpBind(receiver, host, 0);
      const addressBytes = host === '::1' ? [...new Uint8Array(15), 1] : [127, 0, 0, 1];

      // Three datagrams, the second gathered from two views of one buffer.
      const records = new Uint32Array(3 * DATAGRAM_RECORD);
      const recordBytes = new Uint8Array(records.buffer);
      const payload = bytes('onetwo+twothree');
      const views = [payload.subarray(0, 3), payload.subarray(3, 6), payload.subarray(6, 10), payload.subarray(10)];
      [1, 2, 1].forEach((segments, i) => {
        const at = i * DATAGRAM_RECORD;
        records[at + DatagramField.segments] = segments;
        records[at + DatagramField.family] = family;
        records[at + DatagramField.port] = receiverPort;
        recordBytes.set(addressBytes, (at + DatagramField.address) * 4);
      });
      expect(native.sendmmsg(sender, views, 3, records)).toBe(3);
      expect([0, 1, 2].map((i) => records[i * DATAGRAM_RECORD + DatagramField.length])).toEqual([3, 7, 5]);

      await whenReady(receiver, Poll.IN);
      // Receive into slices of one buffer; the third slot is too small (truncated).
      const rx = new Uint8Array(64);
      const rxViews = [rx.subarray(0, 16), rx.subarray(16, 32), rx.subarray(32, 34)];
      const rxRecords = new Uint32Array(4 * DATAGRAM_RECORD);
      const rxRecordBytes = new Uint8Array(rxRecords.buffer);
      for (let i = 0; i < 3; i++) rxRecords[i * DATAGRAM_RECORD + DatagramField.segments] = 1;
      let got = 0;
      await waitFor(() => {
        const n = native.recvmmsg(receiver, rxViews.slice(got), 3 - got, rxRecords.subarray(got * DATAGRAM_RECORD));
        if (n > 0) got += n;
        return got === 3;
      });
      const field = (i: number, f: number) => rxRecords[i * DATAGRAM_RECORD + f];
      expect([0, 1, 2].map((i) => field(i, DatagramField.length))).toEqual([3, 7, 5]);
      expect([0, 1, 2].map((i) => field(i, DatagramField.flags))).toEqual([0, 0, DATAGRAM_TRUNCATED]);
      expect(text(rx.subarray(0, 3))).toBe('one');
      expect(text(rx.subarray(16, 23))).toBe('two+two');
      expect(text(rx.subarray(32, 34))).toBe('th');
      for (let i = 0; i < 3; i++) {
        expect(field(i, DatagramField.family)).toBe(family);
        expect(field(i, DatagramField.port)).toBe(senderPort);
        const at = (i * DATAGRAM_RECORD + DatagramField.address) * 4;
        expect([...rxRecordBytes.subarray(at, at + addressBytes.length)]).toEqual(addressBytes);
      }
      expect(native.recvmmsg(receiver, rxViews, 3, rxRecords)).toBe(-E.EAGAIN);
      native.close(sender);
      native.close(receiver);
    });
  }

  it('an IPv6 destination on an IPv4 socket fails the batch before anything is sent', () => {
    const fd = native.udpSocket(4);
    native.udpBind(fd, '127.0.0.1', 0);
    const records = new Uint32Array(DATAGRAM_RECORD);
    records[DatagramField.segments] = 1;
    records[DatagramField.family] = 6;
    records[DatagramField.port] = 9;
    expect(native.sendmmsg(fd, [bytes('x')], 1, records)).toBe(-E.EAFNOSUPPORT);
    native.close(fd);
  });
});

describe('the readiness set (one epoll fd behind one uv_poll)', () => {
  it('many sockets ready at once: one callback with every token; removed members stop being reported', async () => {
    await settle(1); // earlier sets' epoll fds are closed by now (libuv's close callbacks ran)
    const fdsBefore = native.openFdCount();
    const pairs = await Promise.all(Array.from({ length: 20 }, () => rawPair()));
    for (const p of pairs) expect(native.writev(p.client, [bytes('ping')], 1)).toBe(4);
    await waitFor(() => pairs.every((p) => { const i = new Uint32Array(TCP_INFO_FIELDS); native.tcpInfo(p.server, i); return i[TcpInfoField.inq] === 4; }));

    const ready = new Uint32Array(2 * 64);
    const batches: Array<Array<[number, number]>> = [];
    const set: PollSet = native.pollSet(ready, (count) => {
      const batch: Array<[number, number]> = [];
      for (let i = 0; i < count; i++) batch.push([ready[2 * i]!, ready[2 * i + 1]!]);
      batches.push(batch);
    });
    pairs.forEach((p, i) => set.add(p.server, Poll.IN | Poll.RDHUP, 1000 + i));
    await waitFor(() => batches.length > 0);
    expect(batches[0]!.map(([t]) => t).sort((a, b) => a - b)).toEqual(pairs.map((_, i) => 1000 + i));
    expect(batches[0]!.every(([, ev]) => ev === Poll.IN)).toBe(true);

    // Level-triggered: unread sockets come again. Remove one, park one (no events), re-token one.
    set.remove(pairs[0]!.server);
    set.modify(pairs[1]!.server, 0, 1001);
    set.modify(pairs[2]!.server, Poll.IN, 7);
    const seen = batches.length;
    await waitFor(() => batches.length > seen);
    const tokens = batches[seen]!.map(([t]) => t).sort((a, b) => a - b);
    expect(tokens).toEqual([7, ...pairs.slice(3).map((_, i) => 1003 + i)]);

    // Errors of the set itself throw (not the per-event path).
    expect(() => set.add(pairs[3]!.server, Poll.IN, 1)).toThrow(expect.objectContaining({ code: 'EEXIST' }));
    expect(() => set.remove(pairs[0]!.server)).toThrow(expect.objectContaining({ code: 'ENOENT' }));
    expect(() => set.add(pairs[0]!.server, Poll.IN | 0x80000000, 1)).toThrow(RangeError); // EPOLLET refused
    expect(() => set.add(pairs[0]!.server, Poll.IN, 2 ** 32)).toThrow(RangeError);

    // Close order: members out of the set, the set, then the sockets.
    for (const p of pairs.slice(1)) set.remove(p.server);
    set.close();
    set.close(); // idempotent
    expect(() => set.add(pairs[0]!.server, Poll.IN, 1)).toThrow(expect.objectContaining({ code: 'EBADF' }));
    const callbacks = batches.length;
    for (const p of pairs) {
      native.close(p.client);
      native.close(p.server);
    }
    // The epoll fd goes with libuv's close callback (next loop turn).
    await waitFor(() => native.openFdCount() === fdsBefore);
    expect(batches.length).toBe(callbacks); // a closed set calls nobody
  });

  it('a batch holds at most ready.length / 2 pairs; the rest come on the next turns', async () => {
    const pairs = Array.from({ length: 5 }, () => native.unixSocketPair());
    for (const [, b] of pairs) native.writev(b, [bytes('x')], 1);
    const ready = new Uint32Array(4); // two pairs
    const counts: number[] = [];
    const tokens = new Set<number>();
    const set = native.pollSet(ready, (count) => {
      counts.push(count);
      for (let i = 0; i < count; i++) tokens.add(ready[2 * i]!);
    });
    pairs.forEach(([a], i) => set.add(a, Poll.IN, i));
    await waitFor(() => tokens.size === 5);
    expect(Math.max(...counts)).toBe(2);
    expect(counts.length).toBeGreaterThanOrEqual(3);
    set.close();
    for (const [a, b] of pairs) {
      native.close(a);
      native.close(b);
    }
  });

  it('checks its arguments', () => {
    expect(() => native.pollSet(new Uint32Array(1), () => {})).toThrow(RangeError);
    expect(() => native.pollSet(new Int32Array(2) as unknown as Uint32Array, () => {})).toThrow(TypeError);
    expect(() => native.pollSet(new Uint32Array(2), null as unknown as () => void)).toThrow(TypeError);
  });
});

describe('demo: a TCP echo made of these calls alone', () => {
  it('connect, epoll readiness, accept, writev and readv compose', async () => {
    await settle(1); // earlier sets' epoll fds are closed by now (libuv's close callbacks ran)
    const fdsBefore = native.openFdCount();
    const LISTENER = 0;
    const CLIENT = 1;
    const SERVER = 2;
    const listener = rawListener('127.0.0.1');
    const client = native.tcpSocket(4);
    let server = -1;
    const message = bytes('hello through epoll, writev and readv');
    // The message sits in the middle of a larger "guest memory" buffer.
    const memory = new Uint8Array(4096);
    memory.set(message, 1000);
    const echoScratch = new Uint8Array(256);
    const replyArea = memory.subarray(2000, 2000 + message.length);
    let replied = 0;
    let clientConnected = false;

    const ready = new Uint32Array(2 * 16);
    const done = new Promise<void>((resolve, reject) => {
      const set = native.pollSet(ready, (count) => {
        for (let i = 0; i < count; i++) {
          const token = ready[2 * i]!;
          const events = ready[2 * i + 1]!;
          if (token === LISTENER) {
            const [conn] = native.socketAccept(listener.fd, 1);
            if (!conn) continue;
            server = conn.fd;
            set.add(server, Poll.IN | Poll.RDHUP, SERVER);
          } else if (token === CLIENT && !clientConnected && events & Poll.OUT) {
            if (native.socketError(client) !== 0) return reject(new Error('connect failed'));
            clientConnected = true;
            set.modify(client, Poll.IN, CLIENT);
            const r = native.writev(client, [memory.subarray(1000, 1010), memory.subarray(1010, 1000 + message.length)], 2);
            if (r !== message.length) return reject(new Error(`short write ${r}`));
          } else if (token === SERVER) {
            const n = native.readv(server, [echoScratch], 1, 0);
            if (n > 0 && native.writev(server, [echoScratch.subarray(0, n)], 1) !== n) return reject(new Error('echo'));
          } else if (token === CLIENT) {
            const n = native.readv(client, [replyArea.subarray(replied)], 1, 0);
            if (n > 0) replied += n;
            if (replied === message.length) {
              for (const fd of [listener.fd, client, server]) set.remove(fd);
              set.close();
              resolve();
            }
          }
        }
      });
      set.add(listener.fd, Poll.IN, LISTENER);
      expect(native.socketConnect(client, '127.0.0.1', listener.port)).toBe(-E.EINPROGRESS);
      set.add(client, Poll.OUT, CLIENT);
    });
    await done;
    expect(text(replyArea)).toBe(text(message));
    for (const fd of [listener.fd, client, server]) native.close(fd);
    await waitFor(() => native.openFdCount() === fdsBefore);
  });
});
