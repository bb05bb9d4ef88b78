/**
 * A hostile vhost-user frontend against the real backend session, over real
 * sockets: what it sends must never crash us, grow our memory or fds without
 * bound, map what should not be mapped, or starve the event loop.
 *
 * Each case writes raw bytes and fds on its end of a socketpair (or connects
 * to a listening server) and then checks what the backend holds: open fds
 * (native.openFdCount), mappings (/proc/self/maps), queued reply bytes,
 * event-loop latency.
 */
import { describe, it, expect, afterEach } from 'vitest';
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, openSync, closeSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { native } from '../src/native/index.js';
import { VhostUserSession, OFFERED_PROTOCOL_FEATURES, MAX_LOGGED_REFUSALS, type Logger } from '../src/vhost-user/session.js';
import { VhostUserServer, type ServerOptions } from '../src/vhost-user/server.js';
import { MAX_QUEUED_BYTES } from '../src/vhost-user/connection.js';
import { RecordingDevice } from '../src/frontend/fake-device.js';
import { VhostUserFrontend } from '../src/frontend/frontend.js';
import { NetDriver } from '../src/frontend/net-driver.js';
import { VirtioNetDevice } from '../src/virtio/net-device.js';
import {
  HEADER_SIZE,
  Req,
  decodeReplyU64,
  encodeMemRegion,
  encodeMemTable,
  encodeMessage,
  encodeU64,
  encodeVringFd,
  requestFlags,
  type MemoryRegionDesc,
} from '../src/vhost-user/messages.js';
import { waitFor } from './helpers/wait.js';

const USER = 0x7f00_0000_0000;

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Mappings of memfds whose name contains `name` in this process. */
function mappingsOf(name: string): number {
  return readFileSync('/proc/self/maps', 'latin1')
    .split('\n')
    .filter((l) => l.includes(`/memfd:${name}`)).length;
}

const cleanups: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanups.splice(0).reverse()) {
    try {
      c();
    } catch {
      /* best effort */
    }
  }
});

interface Raw {
  session: VhostUserSession;
  fd: number;
  dev: RecordingDevice;
  ended: Promise<string | null>;
}

/** A session on one end of a socketpair; the test writes raw bytes on the other. */
function raw(dev = new RecordingDevice(), logger?: Logger): Raw {
  const [a, b] = native.unixSocketPair();
  let endResolve!: (r: string | null) => void;
  const ended = new Promise<string | null>((r) => (endResolve = r));
  const session = new VhostUserSession(a, dev, { onClose: endResolve, ...(logger ? { logger } : {}) });
  cleanups.push(() => {
    session.close();
    try {
      native.close(b);
    } catch {
      /* closed by the test */
    }
  });
  return { session, fd: b, dev, ended };
}

/** Write all of `bytes` (fds with the first byte), pumping the loop while the socket is full. */
async function writeAll(fd: number, bytes: Uint8Array, fds: number[] = []): Promise<void> {
  let off = 0;
  let first = true;
  while (off < bytes.length) {
    const n = native.sendMsg(fd, bytes.subarray(off), first ? fds : []);
    if (n === null) {
      await sleep(1);
      continue;
    }
    first = false;
    off += n;
  }
}

/** Read one whole reply (header + payload) from a raw socket, pumping the loop. */
async function readReply(fd: number, ms = 2000): Promise<{ request: number; payload: Uint8Array }> {
  const head = new Uint8Array(HEADER_SIZE);
  let got = 0;
  const end = Date.now() + ms;
  const fill = async (buf: Uint8Array): Promise<void> => {
    got = 0;
    while (got < buf.length) {
      const r = native.recvMsg(fd, buf.subarray(got), 0);
      if (r === null) {
        if (Date.now() > end) throw new Error('no reply');
        await sleep(1);
        continue;
      }
      if (r.bytes === 0) throw new Error('EOF');
      got += r.bytes;
    }
  };
  await fill(head);
  const dv = new DataView(head.buffer);
  const size = dv.getUint32(8, true);
  const payload = new Uint8Array(size);
  if (size > 0) await fill(payload);
  return { request: dv.getUint32(0, true), payload };
}

async function ackOf(fd: number, code: number, payload: Uint8Array, fds: number[] = []): Promise<bigint> {
  await writeAll(fd, encodeMessage(code, requestFlags(true), payload), fds);
  const r = await readReply(fd);
  expect(r.request).toBe(code);
  const v = decodeReplyU64(r.payload);
  if (!v.ok) throw new Error(v.reason);
  return v.value;
}

/** Turn on REPLY_ACK so every request gets an ack. */
async function enableAcks(fd: number): Promise<void> {
  await writeAll(fd, encodeMessage(Req.SET_PROTOCOL_FEATURES, requestFlags(false), encodeU64(OFFERED_PROTOCOL_FEATURES)));
}

describe('file descriptors a frontend sends', () => {
  it('fds trickled over the bytes of one message never pile up: more than one message may carry closes the connection', async () => {
    const r = raw();
    const efd = native.eventfdCreate();
    cleanups.push(() => native.close(efd));
    await tick();
    const before = native.openFdCount();
    let peak = 0;
    // A 0-payload GET_FEATURES header sent one byte at a time, each byte with 32 fds.
    const header = encodeMessage(Req.GET_FEATURES, requestFlags(false));
    const many = Array.from({ length: 32 }, () => efd);
    for (let i = 0; i < HEADER_SIZE; i++) {
      try {
        if (native.sendMsg(r.fd, header.subarray(i, i + 1), many) === null) break;
      } catch {
        break; // the backend closed its end
      }
      await tick();
      await tick();
      peak = Math.max(peak, native.openFdCount() - before);
      if (r.session.closed) break;
    }
    await waitFor(() => r.session.closed, 1000, 'the session to close');
    expect(await r.ended).toMatch(/too many file descriptors/);
    // What we held at any moment stayed within two messages' worth.
    expect(peak).toBeLessThanOrEqual(64);
    expect(native.openFdCount()).toBeLessThanOrEqual(before);
  });

  it('a region fd that is not a regular file (/dev/zero, a socket, an eventfd) is refused and closed', async () => {
    const r = raw();
    await enableAcks(r.fd);
    const region: MemoryRegionDesc = { guestAddr: 0, size: 1 << 20, userAddr: USER, mmapOffset: 0 };
    const zero = openSync('/dev/zero', 'r+');
    const [s1, s2] = native.unixSocketPair();
    const efd = native.eventfdCreate();
    cleanups.push(() => [zero, s1, s2, efd].forEach((fd) => closeSync(fd)));
    await tick();
    const before = native.openFdCount();
    for (const fd of [zero, s1, efd]) {
      expect(await ackOf(r.fd, Req.SET_MEM_TABLE, encodeMemTable([region]), [fd])).toBe(1n);
      expect(await ackOf(r.fd, Req.ADD_MEM_REG, encodeMemRegion(region), [fd])).toBe(1n);
    }
    expect(r.session.state.regions).toEqual([]);
    expect(r.dev.memory).toBeNull();
    expect(native.openFdCount()).toBe(before);
    expect(r.session.stats.lastError).toMatch(/not a regular file/);
  });

  it('regions beyond the file are refused: offset+size past the end, a 0-byte memfd, a size Node cannot map', async () => {
    const r = raw();
    await enableAcks(r.fd);
    const small = native.memfdCreate('hostile-small', 1 << 20);
    const empty = native.memfdCreate('hostile-empty', 0);
    const huge = native.memfdCreate('hostile-huge', 5 * 2 ** 30); // sparse: costs nothing
    cleanups.push(() => [small, empty, huge].forEach((fd) => native.close(fd)));
    await tick();
    const before = native.openFdCount();
    const cases: Array<[number, MemoryRegionDesc]> = [
      [small, { guestAddr: 0, size: 1 << 20, userAddr: USER, mmapOffset: 4096 }],
      [small, { guestAddr: 0, size: (1 << 20) + 1, userAddr: USER, mmapOffset: 0 }],
      [small, { guestAddr: 0, size: 4096, userAddr: USER, mmapOffset: 2 ** 52 }],
      [empty, { guestAddr: 0, size: 1 << 30, userAddr: USER, mmapOffset: 0 }],
      [huge, { guestAddr: 0, size: 5 * 2 ** 30, userAddr: USER, mmapOffset: 0 }],
    ];
    for (const [fd, region] of cases) {
      expect(await ackOf(r.fd, Req.SET_MEM_TABLE, encodeMemTable([region]), [fd])).toBe(1n);
    }
    expect(r.session.state.regions).toEqual([]);
    expect(mappingsOf('hostile-')).toBe(0);
    expect(native.openFdCount()).toBe(before);
  });

  it('kick, call and err fds must be eventfds: a FIFO, a regular file or a socket is refused and closed', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'vun-hostile-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const fifo = path.join(dir, 'fifo');
    execFileSync('mkfifo', [fifo]);
    // O_RDWR on a FIFO does not block on Linux; the fd is a *blocking* pipe:
    // as a call fd, the 8193rd interrupt would block our process for good.
    const pipeFd = openSync(fifo, 'r+');
    writeFileSync(path.join(dir, 'file'), 'x');
    const fileFd = openSync(path.join(dir, 'file'), 'r+');
    const [s1, s2] = native.unixSocketPair();
    cleanups.push(() => [pipeFd, fileFd, s1, s2].forEach((fd) => closeSync(fd)));
    const r = raw();
    await enableAcks(r.fd);
    await tick();
    const before = native.openFdCount();
    for (const code of [Req.SET_VRING_KICK, Req.SET_VRING_CALL, Req.SET_VRING_ERR]) {
      for (const fd of [pipeFd, fileFd, s1]) {
        expect(await ackOf(r.fd, code, encodeVringFd(0, false), [fd])).toBe(1n);
      }
    }
    expect(r.session.stats.lastError).toMatch(/not an eventfd/);
    const ring = r.session.state.rings[0]!;
    expect([ring.kickFd, ring.callFd, ring.errFd]).toEqual([-1, -1, -1]);
    expect(native.openFdCount()).toBe(before);
    // A real eventfd is still accepted (and kept: one more fd).
    const efd = native.eventfdCreate();
    cleanups.push(() => native.close(efd));
    expect(await ackOf(r.fd, Req.SET_VRING_CALL, encodeVringFd(0, false), [efd])).toBe(0n);
    expect(r.session.state.rings[0]!.callFd).toBeGreaterThanOrEqual(0);
  });
});

describe('memory a frontend can make us hold', () => {
  it('a frontend that never reads replies cannot make us queue without bound; nothing is lost once it reads', async () => {
    const r = raw();
    // 4096 GET_FEATURES requests per write (48 KiB), as fast as the socket takes them.
    const one = encodeMessage(Req.GET_FEATURES, requestFlags(false));
    const burst = new Uint8Array(one.length * 4096);
    for (let i = 0; i < 4096; i++) burst.set(one, i * one.length);
    let sentBytes = 0;
    let pending: Uint8Array = burst;
    let maxQueued = 0;
    let fullRounds = 0;
    for (let round = 0; round < 400 && fullRounds < 20; round++) {
      for (;;) {
        const n = native.sendMsg(r.fd, pending, []);
        if (n === null) {
          fullRounds++;
          break;
        }
        sentBytes += n;
        pending = n === pending.length ? burst : pending.subarray(n);
      }
      await tick();
      maxQueued = Math.max(maxQueued, r.session.pendingReplyBytes);
      if (r.session.closed) break;
    }
    expect(r.session.closed).toBe(false);
    // Bounded by the cap plus one read budget of replies (64 messages of 20 bytes).
    expect(maxQueued).toBeLessThanOrEqual(MAX_QUEUED_BYTES + 64 * 20);
    // Finish the last partial request so the count is whole, then read every reply.
    const partial = sentBytes % one.length;
    if (partial !== 0) await writeAll(r.fd, one.subarray(partial));
    const requests = Math.ceil(sentBytes / one.length);
    const buf = new Uint8Array(64 * 1024);
    let replyBytes = 0;
    const want = requests * (HEADER_SIZE + 8);
    const end = Date.now() + 20_000;
    while (replyBytes < want && Date.now() < end) {
      const got = native.recvMsg(r.fd, buf, 0);
      if (got === null) {
        await tick();
        continue;
      }
      if (got.bytes === 0) break;
      replyBytes += got.bytes;
    }
    expect(replyBytes).toBe(want);
    expect(r.session.stats.messages).toBe(requests);
    expect(r.session.pendingReplyBytes).toBe(0);
  }, 60_000);

  it('repeated SET_MEM_TABLE and ADD_MEM_REG without REM: mappings stay bounded and are all released at the end', async () => {
    const dev = new RecordingDevice();
    const r = raw(dev);
    await enableAcks(r.fd);
    const memfd = native.memfdCreate('hostile-table', 64 << 20);
    cleanups.push(() => native.close(memfd));
    await tick();
    const fdsBefore = native.openFdCount();
    for (let i = 0; i < 300; i++) {
      const size = 1 << 20;
      const table = [0, 1, 2].map((k) => ({ guestAddr: k * size, size, userAddr: USER + k * size, mmapOffset: k * size }));
      await writeAll(r.fd, encodeMessage(Req.SET_MEM_TABLE, requestFlags(false), encodeMemTable(table)), [memfd, memfd, memfd]);
    }
    expect(await ackOf(r.fd, Req.SET_OWNER, new Uint8Array(0))).toBe(0n);
    expect(mappingsOf('hostile-table')).toBe(3);
    // Fill every slot, then keep adding: refused, nothing more mapped.
    let accepted = 0;
    for (let k = 3; k < 100; k++) {
      const region = { guestAddr: k << 20, size: 1 << 20, userAddr: USER + (k << 20), mmapOffset: (k % 64) << 20 };
      if ((await ackOf(r.fd, Req.ADD_MEM_REG, encodeMemRegion(region), [memfd])) === 0n) accepted++;
    }
    expect(accepted).toBe(32 - 3);
    expect(mappingsOf('hostile-table')).toBe(32);
    expect(native.openFdCount()).toBe(fdsBefore);
    native.close(r.fd);
    await r.ended;
    expect(mappingsOf('hostile-table')).toBe(0);
  });
});

describe('the log', () => {
  it('a flood of refused requests is counted in full but logged only MAX_LOGGED_REFUSALS times', async () => {
    const warnings: string[] = [];
    const logger: Logger = { debug() {}, info() {}, warn: (m) => warnings.push(m), error: (m) => warnings.push(m) };
    const r = raw(new RecordingDevice(), logger);
    const bad = encodeMessage(9999, requestFlags(false));
    const burst = new Uint8Array(bad.length * 1000);
    for (let i = 0; i < 1000; i++) burst.set(bad, i * bad.length);
    await writeAll(r.fd, burst);
    await waitFor(() => r.session.stats.messages === 1000, 5000, 'all requests');
    expect(r.session.stats.errors).toBe(1000);
    expect(warnings.length).toBe(MAX_LOGGED_REFUSALS + 1);
    expect(warnings.at(-1)).toMatch(/counted, not logged/);
  });
});

describe('queue size edges end to end', () => {
  for (const queueSize of [1, 32768]) {
    it(`queue size ${queueSize}: frames move both ways through the real device`, async () => {
      const dir = mkdtempSync(path.join(tmpdir(), 'vun-qs-'));
      cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
      const sock = path.join(dir, 'vu.sock');
      const got: Uint8Array[] = [];
      const device = new VirtioNetDevice({ mac: Uint8Array.from([2, 0, 0, 0, 0, 7]), mtu: 1500, sink: { receive: (f) => void got.push(f.slice()) } });
      const server = new VhostUserServer({ mode: 'listen', path: sock, device }).start();
      cleanups.push(() => server.close());
      const fe = VhostUserFrontend.connect(sock, { timeoutMs: 3000, queueSize, memorySize: 16 << 20 });
      cleanups.push(() => void fe.close());
      await fe.connectAndStart();
      await fe.sync();
      expect(device.queue(0)!.size).toBe(queueSize);
      const driver = new NetDriver(fe, { rxBuffers: Math.min(queueSize, 64), txBuffers: Math.min(queueSize, 64) });
      driver.start();
      cleanups.push(() => driver.stop());
      const frames = Array.from({ length: 40 }, (_, i) => Uint8Array.from({ length: 60 + i * 30 }, (_, k) => (k + i) & 0xff));
      driver.send(frames);
      await driver.drained();
      await waitFor(() => got.length === frames.length, 3000, 'frames at the device');
      got.forEach((f, i) => expect(Buffer.compare(f, frames[i]!)).toBe(0));
      for (const f of frames) {
        await waitFor(() => device.send(f), 3000, 'a receive buffer');
        device.flush();
        expect(Buffer.compare(await driver.receive(), f)).toBe(0);
      }
    });
  }
});

describe('the event loop', () => {
  it('a frontend that floods requests (and reads the replies) cannot starve timers', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'vun-flood-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const sock = path.join(dir, 'vu.sock');
    const server = new VhostUserServer({ mode: 'listen', path: sock, device: new RecordingDevice() }).start();
    cleanups.push(() => server.close());
    // The flooder: plain Node in a child process, writing GET_FEATURES as fast
    // as the socket takes them and discarding replies, for 1.5 s.
    const script = `
      const net = require('node:net');
      const one = Buffer.alloc(12); one.writeUInt32LE(1, 0); one.writeUInt32LE(1, 4);
      const burst = Buffer.concat(Array(8192).fill(one));
      const s = net.connect(${JSON.stringify(sock)});
      s.on('data', () => {});
      s.on('error', () => process.exit(0));
      const stopAt = Date.now() + 1500;
      const pump = () => { while (Date.now() < stopAt) { if (!s.write(burst)) return; } s.end(); setTimeout(() => process.exit(0), 50); };
      s.on('connect', pump);
      s.on('drain', pump);
    `;
    const child = spawn(process.execPath, ['-e', script], { stdio: 'ignore' });
    cleanups.push(() => child.kill('SIGKILL'));
    await waitFor(() => server.session !== null, 5000, 'the flooder to connect');
    const session = server.session!;
    let maxGap = 0;
    let last = Date.now();
    const timer = setInterval(() => {
      const now = Date.now();
      maxGap = Math.max(maxGap, now - last);
      last = now;
    }, 5);
    const exited = new Promise((r) => child.on('exit', r));
    await exited;
    clearInterval(timer);
    expect(session.stats.messages).toBeGreaterThan(1000);
    expect(session.stats.errors).toBe(0);
    // Without a read budget one callback would loop for the whole flood (1.5 s).
    expect(maxGap).toBeLessThan(400);
  }, 20_000);

  it('a session that cannot start (the device throws) is an error event, not a crash; the server keeps accepting', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'vun-start-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const sock = path.join(dir, 'vu.sock');
    const bad = new RecordingDevice();
    Object.defineProperty(bad, 'maxQueues', { get: () => { throw new Error('no queues today'); } });
    const server = new VhostUserServer({ mode: 'listen', path: sock, device: bad }).start();
    cleanups.push(() => server.close());
    const errors: string[] = [];
    server.on('error', (e: Error) => errors.push(e.message));
    const fdsBefore = native.openFdCount();
    for (let i = 0; i < 3; i++) {
      const fd = native.unixConnect(sock);
      await waitFor(() => errors.length === i + 1, 2000, 'the error event');
      native.close(fd);
    }
    expect(errors[0]).toMatch(/session start failed: no queues today/);
    expect(server.session).toBeNull();
    expect(native.openFdCount()).toBe(fdsBefore);
  });

  it('1000 connects and disconnects in a tight loop: no fd, mapping or memory growth; the server keeps serving', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const dir = mkdtempSync(path.join(tmpdir(), 'vun-churn-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const sock = path.join(dir, 'vu.sock');
    const device = new VirtioNetDevice({ mac: Uint8Array.from([2, 0, 0, 0, 0, 9]), mtu: 1500, sink: { receive() {} } });
    const server = new VhostUserServer({ mode: 'listen', path: sock, device }).start();
    cleanups.push(() => server.close());
    const memfd = native.memfdCreate('hostile-churn', 1 << 20);
    cleanups.push(() => native.close(memfd));
    const table = encodeMessage(
      Req.SET_MEM_TABLE,
      requestFlags(false),
      encodeMemTable([{ guestAddr: 0, size: 1 << 20, userAddr: USER, mmapOffset: 0 }]),
    );
    const getFeatures = encodeMessage(Req.GET_FEATURES, requestFlags(false));
    const efd = native.eventfdCreate();
    cleanups.push(() => native.close(efd));
    const kick = encodeMessage(Req.SET_VRING_KICK, requestFlags(false), encodeVringFd(1, false));
    const half = encodeMessage(Req.SET_MEM_TABLE, requestFlags(false), encodeMemTable([{ guestAddr: 0, size: 4096, userAddr: USER, mmapOffset: 0 }])).subarray(0, 20);

    const churn = async (n: number): Promise<void> => {
      for (let i = 0; i < n; i++) {
        const before = server.sessionCount;
        const fd = native.unixConnect(sock);
        switch (i % 4) {
          case 0: // connect and leave
            break;
          case 1: // map memory, set a kick fd, leave
            native.sendMsg(fd, table, [memfd]);
            native.sendMsg(fd, kick, [efd]);
            break;
          case 2: // leave in the middle of a message, fd attached
            native.sendMsg(fd, half, [memfd]);
            break;
          case 3: // ask something and leave without reading the reply
            native.sendMsg(fd, getFeatures, []);
            break;
        }
        await waitFor(() => server.sessionCount > before, 2000, 'accept');
        native.close(fd);
        await waitFor(() => server.session === null, 2000, 'session end');
      }
    };
    await churn(100); // warm up (JIT, pools)
    gc();
    const fds = native.openFdCount();
    const heap = process.memoryUsage().heapUsed;
    await churn(1000);
    gc();
    expect(native.openFdCount()).toBe(fds);
    expect(mappingsOf('hostile-churn')).toBe(0);
    expect(process.memoryUsage().heapUsed - heap).toBeLessThan(8 << 20);
    expect(server.sessionCount).toBe(1100);
    // Still serving: a real frontend negotiates and starts its rings.
    const fe = VhostUserFrontend.connect(sock, { timeoutMs: 3000 });
    await fe.connectAndStart();
    expect(device.queue(0)?.isReady).toBe(true);
    await fe.close();
  }, 120_000);
});

describe('one frontend at a time', () => {
  /** A listening server on a fresh path (closed, and the path removed, after the test). */
  function listening(options: Partial<ServerOptions> = {}): { server: VhostUserServer; sock: string } {
    const dir = mkdtempSync(path.join(tmpdir(), 'vun-slot-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const sock = path.join(dir, 'vu.sock');
    const server = new VhostUserServer({ mode: 'listen', path: sock, device: new RecordingDevice(), ...options }).start();
    cleanups.push(() => server.close());
    return { server, sock };
  }
  /** The arguments of the server's next `event`; rejects after 5 s. */
  const next = (server: VhostUserServer, event: string): Promise<unknown[]> => once(server, event, { signal: AbortSignal.timeout(5000) });

  it('a frontend that restarts at once is served, 1,000 times: its predecessor has closed, the server has not seen it yet', async () => {
    const { server, sock } = listening();
    const getFeatures = encodeMessage(Req.GET_FEATURES, requestFlags(false));
    const fdsBefore = native.openFdCount();
    let previous = -1;
    let answered = 0;
    for (let i = 0; i < 1000; i++) {
      // In one turn of the loop, before the server runs: the served frontend
      // quits, a new one connects, asks and dies, and its restart connects and
      // asks. Each connects after its predecessor closed; the last must be served.
      if (previous >= 0) native.close(previous);
      const crashed = native.unixConnect(sock);
      native.sendMsg(crashed, getFeatures, []);
      native.close(crashed);
      const restarted = native.unixConnect(sock);
      native.sendMsg(restarted, getFeatures, []);
      const reply = await readReply(restarted).catch(() => null); // EOF: refused
      if (reply?.request === Req.GET_FEATURES) answered++;
      previous = restarted;
    }
    native.close(previous);
    await waitFor(() => server.session === null, 2000, 'the last session to end');
    expect(answered).toBe(1000);
    const counters = server.counters.snapshot();
    expect(counters['vhost_user.accept.refused_busy'] ?? 0).toBe(0);
    expect(counters['vhost_user.accept.replaced_closed']).toBeGreaterThanOrEqual(1000);
    expect(native.openFdCount()).toBe(fdsBefore);
  }, 60_000);

  it('a frontend that connects while the served one is open is still refused', async () => {
    const { server, sock } = listening();
    const fe = VhostUserFrontend.connect(sock, { timeoutMs: 3000 });
    cleanups.push(() => void fe.close());
    await fe.connectAndStart();
    const second = native.unixConnect(sock);
    cleanups.push(() => native.close(second));
    await expect(readReply(second)).rejects.toThrow('EOF');
    expect(server.counters.snapshot()['vhost_user.accept.refused_busy']).toBe(1);
    await fe.sync(); // the first is still served
  });

  it('a connection that sends nothing, or half a header, is closed at the handshake timeout; a real frontend is then served', async () => {
    const { server, sock } = listening({ handshakeTimeoutMs: 300 });
    for (const opening of [new Uint8Array(0), encodeMessage(Req.GET_FEATURES, requestFlags(false)).subarray(0, 5)]) {
      const ended = next(server, 'disconnect');
      const fd = native.unixConnect(sock);
      cleanups.push(() => native.close(fd));
      if (opening.length > 0) native.sendMsg(fd, opening, []);
      expect(await ended).toEqual(['no request within 300 ms (handshake timeout)']);
      await expect(readReply(fd)).rejects.toThrow('EOF');
    }
    expect(server.counters.snapshot()['vhost_user.handshake_timeout']).toBe(2);
    const fe = VhostUserFrontend.connect(sock, { timeoutMs: 3000 });
    cleanups.push(() => void fe.close());
    await fe.connectAndStart();
    expect(server.session?.state.rings.every((r) => r.started)).toBe(true);
  });

  it('a one-off server is not used up by a connection that leaves without a request (a second backend probing the path)', async () => {
    const { server, sock } = listening({ oneOff: true });
    const probed = next(server, 'disconnect');
    native.close(native.unixConnect(sock));
    await probed;
    expect(server.closed).toBe(false);
    const closed = next(server, 'close');
    const fe = VhostUserFrontend.connect(sock, { timeoutMs: 3000 });
    await fe.connectAndStart();
    await fe.close();
    await closed; // the one session in which a frontend spoke ends the one-off server
    expect(server.sessionCount).toBe(2);
  });
});
