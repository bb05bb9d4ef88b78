/**
 * Conformance of the whole backend side — VhostUserServer, VhostUserSession
 * and the real virtio-net device — driven by our real frontend over real
 * Unix sockets: every request we handle, both frontends' message orders,
 * malformed input answered without a crash, corrupt rings, disconnect and
 * reconnect in listen and connect mode, and no fd or mapping left behind.
 */
import { describe, it, expect } from 'vitest';
import { existsSync } from 'node:fs';
import { native } from '../src/native/index.js';
import { VhostUserServer, type DeviceFactory } from '../src/vhost-user/server.js';
import type { VhostUserSession } from '../src/vhost-user/session.js';
import { STATUS_NEEDS_RESET } from '../src/vhost-user/session.js';
import { VhostUserFrontend, Status, type FrontendOptions } from '../src/frontend/frontend.js';
import { NetDriver } from '../src/frontend/net-driver.js';
import { VirtioNetDevice } from '../src/virtio/net-device.js';
import {
  MAX_PAYLOAD_SIZE,
  Req,
  decodeReplyU64,
  encodeConfig,
  encodeHeader,
  encodeMemRegion,
  encodeMemTable,
  encodeMessage,
  encodeU64,
  encodeVringAddr,
  encodeVringFd,
  encodeVringState,
  requestFlags,
} from '../src/vhost-user/messages.js';
import { VIRTQ_DESC_F_NEXT } from '../src/virtio/features.js';
import { CollectSink, recordingLogger, socketScratch, startNetDriver } from './helpers/vhost-user.js';
import { waitFor } from './helpers/wait.js';

const MAC = Uint8Array.from([0x52, 0x54, 0x00, 0xab, 0xcd, 0xef]);

const { cleanups, socketPath } = socketScratch('vu-conf-', 'vhost.sock');

function frame(n: number, len = 100): Uint8Array {
  const f = new Uint8Array(len);
  f.set(MAC, 0);
  f.set([0x02, 0, 0, 0, 0, 1, 0x08, 0x00], 6);
  new DataView(f.buffer).setUint32(14, n, false);
  return f;
}

function frameNo(f: Uint8Array): number {
  return new DataView(f.buffer, f.byteOffset).getUint32(14, false);
}

interface Backend {
  server: VhostUserServer;
  path: string;
  sinks: CollectSink[];
  devices: VirtioNetDevice[];
  logs: string[];
  sessions: VhostUserSession[];
}

/** A server whose factory makes a fresh real virtio-net device per session. */
function backend(mode: 'listen' | 'connect', extra: { oneOff?: boolean; retryMs?: number; path?: string } = {}): Backend {
  const p = extra.path ?? socketPath();
  const sinks: CollectSink[] = [];
  const devices: VirtioNetDevice[] = [];
  const logs: string[] = [];
  const logger = recordingLogger(logs);
  const factory: DeviceFactory = (onBroken) => {
    const sink = new CollectSink();
    const d = new VirtioNetDevice({ mac: MAC, mtu: 1500, sink });
    d.onBroken = onBroken;
    sinks.push(sink);
    devices.push(d);
    return d;
  };
  const server = new VhostUserServer({ mode, path: p, device: factory, logger, ...extra });
  const sessions: VhostUserSession[] = [];
  server.on('session', (s: VhostUserSession) => sessions.push(s));
  cleanups.push(() => server.close());
  server.start();
  return { server, path: p, sinks, devices, logs, sessions };
}

async function frontend(p: string, options: FrontendOptions = {}): Promise<VhostUserFrontend> {
  const fe = VhostUserFrontend.connect(p, { timeoutMs: 2000, ...options });
  cleanups.push(async () => {
    if (fe.isOpen) await fe.close();
  });
  return fe;
}

async function ack(fe: VhostUserFrontend, code: number, payload: Uint8Array, fds: number[] = []): Promise<bigint> {
  const r = await fe.request(code, payload, fds, { needReply: true });
  const v = decodeReplyU64(r!.payload);
  if (!v.ok) throw new Error(v.reason);
  return v.value;
}

/** Start a frontend fully and a net driver on it; returns both. */
async function running(p: string, options: FrontendOptions = {}) {
  const fe = await frontend(p, options);
  const driver = await startNetDriver(fe, cleanups);
  return { fe, driver };
}

/** Send `n` frames numbered from `from` and wait until the sink has them all. */
async function pump(driver: NetDriver, sink: CollectSink, from: number, n: number): Promise<void> {
  const start = sink.frames.length;
  driver.send(Array.from({ length: n }, (_, i) => frame(from + i)));
  await waitFor(() => sink.frames.length === start + n);
  for (let i = 0; i < n; i++) expect(frameNo(sink.frames[start + i]!)).toBe(from + i);
}

describe('every request through the socket, both message orders', () => {
  for (const style of ['qemu', 'cloud-hypervisor'] as const) {
    it(`${style}: negotiate, move frames both ways, stop with GET_VRING_BASE, resume at the base`, async () => {
      const b = backend('listen');
      const { fe, driver } = await running(b.path, { style, splitRegions: style === 'qemu', guestBase: 0x8000_0000 });
      const session = b.server.session!;
      const device = b.devices[0]!;
      const sink = b.sinks[0]!;
      expect(session.state.owner).toBe(true);
      expect(device.ackedFeatures).not.toBe(0n);

      await pump(driver, sink, 0, 20);
      for (let i = 0; i < 5; i++) expect(device.send(frame(100 + i))).toBe(true);
      device.flush();
      for (let i = 0; i < 5; i++) expect(frameNo(await driver.receive())).toBe(100 + i);

      // GET_CONFIG (answered whether or not CONFIG was negotiated), GET_STATUS.
      expect(Array.from((await fe.getConfig(0, 6)).data)).toEqual(Array.from(MAC));
      if (style === 'qemu') expect((await fe.getStatus()) & Status.DRIVER_OK).toBe(Status.DRIVER_OK);

      // Stop: the tx ring consumed 20 chains; the rx ring 5.
      await driver.drained();
      const bases = await fe.stop();
      expect(bases).toEqual([5, 20]);
      expect(session.state.rings.every((r) => !r.started)).toBe(true);

      // Frames sent while stopped wait in the ring...
      driver.send([frame(20), frame(21)]);
      await fe.sync();
      expect(sink.frames.length).toBe(20);
      // ...and are consumed once the ring is resumed at its base (no repeats, no loss).
      for (const q of fe.queues) {
        await fe.setVringNum(q.index, q.size);
        await fe.setVringBase(q.index, bases[q.index]!);
        await fe.setVringAddr(q.index, q);
        await fe.setVringKick(q.index, q.kickFd);
        await fe.setVringCall(q.index, q.callFd);
        await fe.setVringEnable(q.index, true);
      }
      await waitFor(() => sink.frames.length === 22);
      expect(sink.frames.slice(20).map(frameNo)).toEqual([20, 21]);
      await pump(driver, sink, 22, 10);
    });
  }

  it('GET_MAX_MEM_SLOTS, ADD_MEM_REG / REM_MEM_REG and a SET_MEM_TABLE swap while rings run', async () => {
    const b = backend('listen');
    const { fe, driver } = await running(b.path, { style: 'qemu', splitRegions: true });
    expect(fe.maxMemSlots).toBe(32);
    const session = b.server.session!;
    expect(session.state.regions).toHaveLength(2); // two ADD_MEM_REG
    const sink = b.sinks[0]!;
    await pump(driver, sink, 0, 5);
    // Swap the whole table for an identical one: the device gets the new
    // mapping before the old one is unmapped, traffic goes on.
    await fe.setMemTable();
    await pump(driver, sink, 5, 5);
    // Remove the upper region and add it back.
    await fe.remMemReg(fe.regions[1]!);
    expect(session.state.regions).toHaveLength(1);
    await fe.addMemReg(fe.regions[1]!);
    expect(session.state.regions).toHaveLength(2);
    await pump(driver, sink, 10, 5);
  });

  it('SET_VRING_ERR, SET_BACKEND_REQ_FD, SET_STATUS/GET_STATUS, RESET_OWNER, GET_QUEUE_NUM', async () => {
    const b = backend('listen');
    const { fe } = await running(b.path, { style: 'qemu' });
    const session = b.server.session!;
    expect(fe.queueNum).toBe(2);
    expect(session.state.backendReqFd).toBeGreaterThanOrEqual(0); // QEMU sent it
    const errFd = native.eventfdCreate();
    await fe.setVringErr(1, errFd);
    await fe.setStatus(Status.ACKNOWLEDGE);
    expect(await fe.getStatus()).toBe(Status.ACKNOWLEDGE);
    await fe.request(Req.RESET_OWNER, new Uint8Array(0));
    await fe.sync();
    expect(session.state.rings.every((r) => !r.enabled)).toBe(true);
    native.close(errFd);
  });
});

describe('malformed input is answered without a crash', () => {
  it('wrong payload sizes, wrong fd counts, unknown codes, bad regions, rings outside memory, refused features', async () => {
    const b = backend('listen');
    const fe = await frontend(b.path, { memorySize: 1 << 20, style: 'cloud-hypervisor' });
    await fe.negotiate(); // REPLY_ACK negotiated: every request is acked
    await fe.setMemTable();
    const fdsBefore = native.openFdCount();
    const session = b.server.session!;
    const r0 = fe.regions[0]!;
    const u = r0.userAddr;

    // Payload sizes.
    expect(await ack(fe, Req.SET_VRING_NUM, new Uint8Array(4))).toBe(1n);
    expect(await ack(fe, Req.SET_FEATURES, new Uint8Array(16))).toBe(1n);
    expect(await ack(fe, Req.SET_MEM_TABLE, new Uint8Array(7))).toBe(1n);
    expect(await ack(fe, Req.SET_VRING_ADDR, new Uint8Array(41))).toBe(1n);
    const r = await fe.request(Req.GET_FEATURES, new Uint8Array(8), [], { needReply: true });
    expect(r!.payload.byteLength).toBe(0); // GET_* refused: empty reply
    // Fd counts (the fds are closed by the backend either way).
    const e = native.eventfdCreate();
    expect(await ack(fe, Req.SET_VRING_KICK, encodeVringFd(0, false), [])).toBe(1n);
    expect(await ack(fe, Req.SET_VRING_KICK, encodeVringFd(0, false), [e, e])).toBe(1n);
    expect(await ack(fe, Req.SET_VRING_NUM, encodeVringState(0, 256), [e])).toBe(1n);
    expect(await ack(fe, Req.SET_MEM_TABLE, encodeMemTable([r0]), [])).toBe(1n);
    expect(await ack(fe, Req.ADD_MEM_REG, encodeMemRegion({ ...r0, guestAddr: 1 << 30, userAddr: u + (1 << 30) }), [e, e])).toBe(1n);
    // Unknown request codes.
    expect(await ack(fe, 77, new Uint8Array(3), [e])).toBe(1n);
    await fe.request(0xfffffff0, new Uint8Array(0));
    // Regions: overlapping, overflowing, beyond the file, too many.
    const table = (...rs: Parameters<typeof encodeMemTable>[0]) => encodeMemTable(rs);
    expect(await ack(fe, Req.SET_MEM_TABLE, table(r0, { ...r0, userAddr: u + (8 << 20) }), [e, e])).toBe(1n);
    expect(await ack(fe, Req.SET_MEM_TABLE, table({ ...r0, guestAddr: 2 ** 53 - 4096, size: 8192 }), [e])).toBe(1n);
    const wrap = encodeMemRegion(r0);
    new DataView(wrap.buffer).setBigUint64(8, 0xffff_ffff_ffff_f000n, true);
    new DataView(wrap.buffer).setBigUint64(16, 0x2000n, true);
    expect(await ack(fe, Req.ADD_MEM_REG, wrap, [e])).toBe(1n);
    const memfd = native.memfdCreate('small', 4096);
    expect(await ack(fe, Req.SET_MEM_TABLE, table({ ...r0, size: 1 << 20 }), [memfd])).toBe(1n);
    native.close(memfd);
    const tooMany = new Uint8Array(8);
    new DataView(tooMany.buffer).setUint32(0, 1000, true);
    expect(await ack(fe, Req.SET_MEM_TABLE, tooMany)).toBe(1n);
    // Ring addresses outside guest memory.
    expect(await ack(fe, Req.SET_VRING_NUM, encodeVringState(0, 256))).toBe(0n);
    const addr = (d: number, a: number, us: number) => encodeVringAddr({ index: 0, flags: 0, descUser: d, availUser: a, usedUser: us, logAddr: 0 });
    expect(await ack(fe, Req.SET_VRING_ADDR, addr(u + (1 << 20), u, u + 0x2000))).toBe(1n);
    expect(await ack(fe, Req.SET_VRING_ADDR, addr(u, u + (1 << 20) - 4, u + 0x2000))).toBe(1n);
    expect(await ack(fe, Req.SET_VRING_ADDR, addr(u, u + 0x1000, 12))).toBe(1n);
    // Things we do not offer.
    expect(await ack(fe, Req.SET_LOG_BASE, new Uint8Array(16), [e])).toBe(1n);
    expect(await ack(fe, Req.SET_LOG_FD, new Uint8Array(0), [e])).toBe(1n);
    expect(await ack(fe, Req.GET_INFLIGHT_FD, new Uint8Array(24))).toBe(1n);
    expect(await ack(fe, Req.SET_FEATURES, encodeU64(1n << 26n))).toBe(1n); // VHOST_F_LOG_ALL
    expect(await ack(fe, Req.SET_CONFIG, encodeConfig(0, 0, MAC))).toBe(1n);
    native.close(e);

    expect(session.closed).toBe(false);
    expect(session.stats.errors).toBeGreaterThanOrEqual(25);
    expect(native.openFdCount()).toBe(fdsBefore);
    // The session still works.
    expect(await fe.getQueueNum()).toBe(2);
  });

  it('framing errors close the connection; the server serves the next frontend; nothing leaks', async () => {
    const fdsBefore = native.openFdCount();
    const b = backend('listen');
    const bad: Array<{ bytes: Uint8Array; fds: number; reason: RegExp }> = [
      { bytes: encodeHeader(Req.SET_OWNER, requestFlags(false), MAX_PAYLOAD_SIZE + 1), fds: 0, reason: /above maximum/ },
      { bytes: encodeHeader(Req.SET_OWNER, 0x0, 0), fds: 0, reason: /version 0/ },
      { bytes: encodeHeader(Req.SET_OWNER, 0x41, 0), fds: 1, reason: /reserved flag/ },
      { bytes: encodeHeader(Req.SET_OWNER, 0x5, 0), fds: 0, reason: /REPLY flag set/ },
      // More fds than any message may carry: the kernel truncates, we close.
      { bytes: encodeMessage(Req.SET_MEM_TABLE, 1, encodeMemTable([])), fds: 40, reason: /too many file descriptors/ },
    ];
    for (const [i, c] of bad.entries()) {
      const fe = await frontend(b.path);
      await fe.sync();
      const fds = Array.from({ length: c.fds }, () => native.eventfdCreate());
      const disconnected = new Promise<string | null>((r) => b.server.once('disconnect', r));
      await fe.sendRaw(c.bytes, fds);
      expect(await disconnected).toMatch(c.reason);
      await fe.closed;
      for (const fd of fds) native.close(fd);
      expect(b.server.sessionCount).toBe(i + 1);
    }
    // A short message (half a header, then the frontend goes away).
    {
      const fe = await frontend(b.path);
      await fe.sync();
      const disconnected = new Promise<string | null>((r) => b.server.once('disconnect', r));
      await fe.sendRaw(encodeHeader(Req.SET_VRING_NUM, 1, 8).subarray(0, 6));
      await fe.close();
      expect(await disconnected).toMatch(/middle of a message/);
    }
    // Still serving.
    const { driver } = await running(b.path);
    await pump(driver, b.sinks.at(-1)!, 0, 3);
    for (const c of cleanups.splice(0).reverse()) await c();
    expect(existsSync(b.path)).toBe(false);
    expect(native.openFdCount()).toBe(fdsBefore);
  });
});

describe('corrupt rings end to end (through the socket)', () => {
  async function txRing(b: Backend) {
    const { fe, driver } = await running(b.path, { style: 'qemu', memorySize: 1 << 22 });
    const errFd = native.eventfdCreate();
    await fe.setVringErr(1, errFd);
    await fe.sync();
    cleanups.push(() => native.close(errFd));
    return { fe, driver, errFd, q: fe.queues[1]!.driver };
  }

  it('a descriptor loop breaks that ring only: NEEDS_RESET, err fd signalled, rx still works', async () => {
    const b = backend('listen');
    const { fe, driver, errFd, q } = await txRing(b);
    const buf = fe.alloc.alloc(256);
    q.writeDescriptor(0, buf, 64, VIRTQ_DESC_F_NEXT, 1);
    q.writeDescriptor(1, buf, 64, VIRTQ_DESC_F_NEXT, 0);
    q.pushAvail(0);
    q.publish();
    fe.kick(1, true);
    await waitFor(() => ((b.logs.find((l) => l.includes('broken')) ?? '') !== ''));
    expect(await fe.getStatus()).toBe(Status.ACKNOWLEDGE | Status.DRIVER | Status.DRIVER_OK | Status.FEATURES_OK | STATUS_NEEDS_RESET);
    expect(native.eventfdDrain(errFd)).toBe(1);
    expect(b.sinks[0]!.frames).toHaveLength(0);
    // The receive ring of the same device is unaffected.
    expect(b.devices[0]!.send(frame(5))).toBe(true);
    b.devices[0]!.flush();
    expect(frameNo(await driver.receive())).toBe(5);
  });

  it('a descriptor pointing outside guest memory breaks the ring; a new session works', async () => {
    const b = backend('listen');
    const { fe } = await txRing(b);
    const q = fe.queues[1]!.driver;
    q.writeDescriptor(0, fe.guestBase + fe.memorySize + 0x1000, 100, 0, 0);
    q.pushAvail(0);
    q.publish();
    fe.kick(1, true);
    await waitFor(() => b.logs.some((l) => l.includes('outside guest memory')));
    expect((await fe.getStatus()) & STATUS_NEEDS_RESET).toBe(STATUS_NEEDS_RESET);
    await fe.close();
    await waitFor(() => b.server.session === null);
    const { driver } = await running(b.path);
    await pump(driver, b.sinks[1]!, 0, 3);
  });

  it('an oversized chain is handed back unused and the ring goes on', async () => {
    const b = backend('listen');
    const { fe, driver } = await txRing(b);
    const q = fe.queues[1]!.driver;
    const big = fe.alloc.alloc(100_000);
    // Two readable descriptors of 60000 bytes: 120000 bytes, above any frame.
    const head = q.add(
      [
        [big, 60_000],
        [big + 40_000, 60_000],
      ],
      [],
    );
    expect(head).not.toBeNull();
    q.publish();
    fe.kick(1, true);
    await waitFor(() => (b.devices[0]!.queue(1)?.droppedChains ?? 0) === 1);
    expect(b.sinks[0]!.frames).toHaveLength(0);
    expect((await fe.getStatus()) & STATUS_NEEDS_RESET).toBe(0);
    await pump(driver, b.sinks[0]!, 0, 3);
  });
});

describe('disconnect and reconnect', () => {
  it('listen mode: one frontend at a time, the next after it leaves, socket removed on close', async () => {
    const fdsBefore = native.openFdCount();
    const b = backend('listen');
    const first = await running(b.path);
    await pump(first.driver, b.sinks[0]!, 0, 5);
    // A second concurrent frontend is refused politely (its socket closed).
    const intruder = VhostUserFrontend.connect(b.path);
    expect(await intruder.closed).toBeNull();
    expect(b.logs.some((l) => l.includes('refusing a second frontend'))).toBe(true);
    expect(b.server.sessionCount).toBe(1);
    // The first one goes on; then leaves.
    await pump(first.driver, b.sinks[0]!, 5, 5);
    first.driver.stop();
    await first.fe.close();
    await waitFor(() => b.server.session === null);
    // The next frontend is served, by a fresh device.
    const second = await running(b.path, { style: 'cloud-hypervisor' });
    await pump(second.driver, b.sinks[1]!, 0, 5);
    expect(b.server.sessionCount).toBe(2);
    second.driver.stop();
    await second.fe.close();
    await waitFor(() => b.server.session === null);
    b.server.close();
    expect(existsSync(b.path)).toBe(false);
    for (const c of cleanups.splice(0).reverse()) await c();
    expect(native.openFdCount()).toBe(fdsBefore);
  });

  it('connect mode: retries until the frontend listens, reconnects after it leaves', async () => {
    const fdsBefore = native.openFdCount();
    const p = socketPath();
    const b = backend('connect', { path: p, retryMs: 20 });
    await new Promise((r) => setTimeout(r, 60)); // a few failed attempts
    expect(b.server.sessionCount).toBe(0);
    expect(b.logs.some((l) => l.includes('retrying'))).toBe(true);
    const listener = VhostUserFrontend.listen(p, { style: 'qemu' });
    cleanups.push(() => listener.close());
    for (let round = 0; round < 2; round++) {
      const fe = await listener.accept();
      await fe.connectAndStart();
      await fe.sync();
      const driver = new NetDriver(fe);
      driver.start();
      await pump(driver, b.sinks[round]!, 0, 5);
      await fe.close();
      // The server notices and connects again at once.
      await waitFor(() => b.server.sessionCount === round + 2);
    }
    // The third connection waits, unclaimed, in the listener: close() closes it.
    listener.close();
    b.server.close();
    for (const c of cleanups.splice(0).reverse()) await c();
    await waitFor(() => native.openFdCount() === fdsBefore);
  });

  it('connect mode, one-off: after the frontend leaves the server closes', async () => {
    const fdsBefore = native.openFdCount();
    const p = socketPath();
    const listener = VhostUserFrontend.listen(p, { style: 'cloud-hypervisor' });
    const b = backend('connect', { path: p, oneOff: true, retryMs: 20 });
    const closed = new Promise<void>((r) => b.server.once('close', r));
    const fe = await listener.accept();
    await fe.connectAndStart();
    await fe.sync();
    const driver = new NetDriver(fe);
    driver.start();
    await pump(driver, b.sinks[0]!, 0, 3);
    driver.stop();
    await fe.close();
    await closed;
    expect(b.server.closed).toBe(true);
    listener.close();
    expect(native.openFdCount()).toBe(fdsBefore);
  });
});
