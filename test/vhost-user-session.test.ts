/**
 * The backend session driven by our real frontend over a real socketpair,
 * against a recording fake device: message orders of QEMU and
 * cloud-hypervisor, ring start/enable rules, replies and acks, fd ownership
 * and cleanup.
 */
import { describe, it, expect, afterEach, vi } from 'vitest';
import { native } from '../src/native/index.js';
import { VhostUserSession, OFFERED_PROTOCOL_FEATURES, STATUS_NEEDS_RESET, type SessionOptions } from '../src/vhost-user/session.js';
import { VhostUserFrontend, Status, type FrontendOptions } from '../src/frontend/frontend.js';
import { RecordingDevice } from '../src/frontend/fake-device.js';
import {
  FLAG_REPLY,
  ProtocolFeature,
  Req,
  encodeConfig,
  encodeHeader,
  encodeMemTable,
  encodeU64,
  encodeVringAddr,
  encodeVringFd,
  encodeVringState,
  decodeReplyU64,
} from '../src/vhost-user/messages.js';
import { VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX } from '../src/virtio/features.js';
import { recordingLogger } from './helpers/vhost-user.js';

const F_PROTOCOL = 1n << 30n;

interface Rig {
  dev: RecordingDevice;
  session: VhostUserSession;
  fe: VhostUserFrontend;
  logs: string[];
  ended: Promise<string | null>;
}

const rigs: Rig[] = [];

function rig(options: FrontendOptions = {}, dev = new RecordingDevice(), sessionOptions: SessionOptions = {}): Rig {
  const [a, b] = native.unixSocketPair();
  const logs: string[] = [];
  const logger = recordingLogger(logs);
  let endResolve!: (r: string | null) => void;
  const ended = new Promise<string | null>((r) => (endResolve = r));
  const session = new VhostUserSession(a, dev, { logger, onClose: endResolve, ...sessionOptions });
  dev.onBroken = (q, r) => session.deviceBroken(q, r);
  const fe = VhostUserFrontend.fromFd(b, { timeoutMs: 2000, ...options });
  const r = { dev, session, fe, logs, ended };
  rigs.push(r);
  return r;
}

afterEach(async () => {
  for (const r of rigs.splice(0)) {
    if (r.fe.isOpen) await r.fe.close();
    r.session.close();
  }
});

/** Wait until `cond` holds (polling the event loop), at most `ms`. */
async function until(cond: () => boolean, ms = 2000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out waiting for condition');
    await new Promise((r) => setTimeout(r, 2));
  }
}

async function ack(fe: VhostUserFrontend, code: number, payload: Uint8Array, fds: number[] = []): Promise<bigint> {
  const r = await fe.request(code, payload, fds, { needReply: true });
  const v = decodeReplyU64(r!.payload);
  if (!v.ok) throw new Error(v.reason);
  return v.value;
}

describe('QEMU message order', () => {
  it('negotiates, maps memory with ADD_MEM_REG, starts and enables rings, stops them', async () => {
    const fdsBefore = native.openFdCount();
    const { dev, session, fe, ended } = rig({ style: 'qemu', guestBase: 0x1_0000_0000, splitRegions: true });
    await fe.connectAndStart();
    await fe.sync();

    // Negotiated state.
    expect(fe.protocolFeatures).toBe(OFFERED_PROTOCOL_FEATURES & ~(1n << BigInt(ProtocolFeature.CONFIG)));
    expect(fe.queueNum).toBe(2);
    expect(fe.maxMemSlots).toBe(32);
    const st = session.state;
    expect(st.owner).toBe(true);
    expect(st.ackedFeatures & F_PROTOCOL).toBe(F_PROTOCOL);
    expect(st.regions).toHaveLength(2);
    expect(st.backendReqFd).toBeGreaterThanOrEqual(0);
    expect(st.status & (Status.DRIVER_OK | Status.FEATURES_OK)).toBe(Status.DRIVER_OK | Status.FEATURES_OK);

    // Device saw features without bit 30, memory twice (one per ADD_MEM_REG), both rings.
    expect(dev.ackedFeatures & F_PROTOCOL).toBe(0n);
    expect(dev.ackedFeatures & VIRTIO_F_VERSION_1).toBe(VIRTIO_F_VERSION_1);
    expect(dev.calls.filter((c) => c[0] === 'setMemory').map((c) => c[1])).toEqual([1, 2]);
    for (const q of fe.queues) {
      const s = dev.running.get(q.index)!;
      expect(s).toBeDefined();
      // Translated from the frontend's (user) addresses back to guest-physical.
      expect(s.descAddr).toBe(q.descAddr);
      expect(s.availAddr).toBe(q.availAddr);
      expect(s.usedAddr).toBe(q.usedAddr);
      expect(s.size).toBe(256);
      expect(s.nextAvail).toBe(0);
      expect(s.eventIdx).toBe(true);
      expect(s.kickFd).toBeGreaterThanOrEqual(0);
      expect(s.callFd).toBeGreaterThanOrEqual(0);
      // Started disabled (protocol features), then enabled by SET_VRING_ENABLE 1.
      expect(dev.enabled.get(q.index)).toBe(true);
    }
    const names = dev.callNames();
    const firstEnable = dev.calls.findIndex((c) => c[0] === 'enableQueue' && c[2] === true);
    expect(dev.calls.findIndex((c) => c[0] === 'enableQueue' && c[2] === false)).toBeLessThan(firstEnable);
    expect(names.indexOf('startQueue')).toBeLessThan(firstEnable);
    // The guest memory the device got is the frontend's memory.
    fe.memory[0x2000] = 0xab;
    expect(dev.memory!.view(0x1_0000_2000, 1)![0]).toBe(0xab);
    const upper = fe.regions[1]!.guestAddr + 5;
    fe.memory[upper - fe.guestBase] = 0xcd;
    expect(dev.memory!.view(upper, 1)![0]).toBe(0xcd);

    // A kick through the real eventfd reaches the device.
    fe.kick(1, true);
    await until(() => (dev.kicks.get(1) ?? 0) >= 1);
    // The device's interrupt reaches the frontend's call eventfd.
    expect(dev.signalCall(0)).toBe(true);
    expect(native.eventfdDrain(fe.queues[0]!.callFd)).toBe(1);

    // Stop: SET_VRING_ENABLE 0, SET_STATUS 0, GET_VRING_BASE.
    dev.stopBase.set(0, 17);
    dev.stopBase.set(1, 0xfffe);
    expect(await fe.stop()).toEqual([17, 0xfffe]);
    expect(dev.running.size).toBe(0);
    expect(session.state.rings.every((r) => !r.started && r.kickFd === -1 && r.callFd === -1)).toBe(true);
    // GET_VRING_BASE of a stopped ring answers the remembered base.
    expect(await fe.getVringBase(0)).toBe(17);

    await fe.close();
    expect(await ended).toBeNull();
    expect(dev.callNames().at(-2)).toBe('reset');
    expect(dev.calls.at(-1)).toEqual(['setMemory', 0]);
    expect(native.openFdCount()).toBe(fdsBefore);
  });
});

describe('cloud-hypervisor message order', () => {
  it('SET_OWNER first, NEED_REPLY on everything, SET_MEM_TABLE, NUMs first then per-ring ADDR/BASE/CALL/KICK', async () => {
    const fdsBefore = native.openFdCount();
    const { dev, session, fe } = rig({ style: 'cloud-hypervisor' });
    await fe.negotiate();
    // CH asks for MQ|CONFIGURE_MEM_SLOTS|REPLY_ACK|INFLIGHT|LOG: we give MQ, SLOTS, REPLY_ACK.
    expect(fe.protocolFeatures).toBe(
      (1n << BigInt(ProtocolFeature.MQ)) | (1n << BigInt(ProtocolFeature.CONFIGURE_MEM_SLOTS)) | (1n << BigInt(ProtocolFeature.REPLY_ACK)),
    );
    expect(fe.queueNum).toBe(2);
    await fe.start();
    await fe.sync();
    expect(session.state.regions).toHaveLength(1);
    expect(dev.running.size).toBe(2);
    expect(dev.enabled.get(0)).toBe(true);
    expect(dev.enabled.get(1)).toBe(true);
    expect(session.stats.errors).toBe(0);
    // CH pauses with SET_VRING_ENABLE 0.
    await fe.setVringEnable(1, false);
    expect(dev.enabled.get(1)).toBe(false);
    await fe.close();
    await until(() => session.closed);
    expect(native.openFdCount()).toBe(fdsBefore);
  });
});

describe('handshake timeout', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('QEMU and cloud-hypervisor speak at once and are never timed out, however long they stay quiet after; a silent connection is', async () => {
    // Fake setTimeout only (sockets stay real): time is moved on by hand, no waiting.
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const handshakeTimeoutMs = 1000;
    const rigs = [rig({ style: 'qemu' }, undefined, { handshakeTimeoutMs }), rig({ style: 'cloud-hypervisor' }, undefined, { handshakeTimeoutMs })];
    const silent = rig({}, undefined, { handshakeTimeoutMs });
    const unlimited = [rig({}, undefined, { handshakeTimeoutMs: 0 }), rig({}, undefined, { handshakeTimeoutMs: Infinity })];
    for (const { fe } of rigs) {
      await fe.negotiate(); // init only: the guest has not started the device yet
      await fe.sync();
    }
    vi.advanceTimersByTime(3600 * 1000);
    for (const { fe, session } of rigs) {
      expect(session.closed).toBe(false);
      expect(session.stats.handshakeTimedOut).toBe(false);
      await fe.start(); // the guest starts the device an hour later
      await fe.sync();
      expect(session.state.rings.every((r) => r.started)).toBe(true);
    }
    expect(silent.session.closed).toBe(true);
    expect(silent.session.stats.handshakeTimedOut).toBe(true);
    expect(await silent.ended).toBe('no request within 1000 ms (handshake timeout)');
    expect(silent.logs).toContain('warn vhost-user: session ended: no request within 1000 ms (handshake timeout)');
    // 0 and Infinity: no limit (Infinity must not become setTimeout's 1 ms).
    for (const { session } of unlimited) expect(session.closed).toBe(false);
  });
});

describe('ring start and enable rules', () => {
  async function basicSetup(fe: VhostUserFrontend, features: bigint) {
    await fe.setOwner();
    await fe.setFeatures(features);
    fe.ackedFeatures = features;
    await fe.setMemTable();
    fe.prepareQueues();
  }

  it('without VHOST_USER_F_PROTOCOL_FEATURES a ring starts enabled at SET_VRING_KICK', async () => {
    const { dev, fe } = rig();
    await basicSetup(fe, VIRTIO_F_VERSION_1);
    const q = fe.queues[0]!;
    await fe.setVringNum(0, q.size);
    await fe.setVringAddr(0, q);
    await fe.sync();
    expect(dev.running.has(0)).toBe(false);
    await fe.setVringKick(0, q.kickFd);
    await fe.sync();
    expect(dev.running.has(0)).toBe(true);
    expect(dev.enabled.get(0)).toBe(true);
    expect(dev.running.get(0)!.eventIdx).toBe(false);
  });

  it('with it, a ring starts disabled until SET_VRING_ENABLE 1; the kick may come before the addresses', async () => {
    const { dev, fe } = rig();
    await basicSetup(fe, VIRTIO_F_VERSION_1 | VIRTIO_RING_F_EVENT_IDX | F_PROTOCOL);
    const q = fe.queues[1]!;
    await fe.setVringKick(1, q.kickFd);
    await fe.setVringNum(1, q.size);
    await fe.sync();
    expect(dev.running.has(1)).toBe(false);
    await fe.setVringAddr(1, q);
    await fe.sync();
    expect(dev.running.has(1)).toBe(true);
    expect(dev.enabled.get(1)).toBe(false);
    await fe.setVringEnable(1, true);
    await fe.sync();
    expect(dev.enabled.get(1)).toBe(true);
  });

  it('SET_VRING_ENABLE before the ring starts is remembered', async () => {
    const { dev, fe } = rig();
    await basicSetup(fe, VIRTIO_F_VERSION_1 | F_PROTOCOL);
    const q = fe.queues[0]!;
    await fe.setVringEnable(0, true);
    await fe.setVringNum(0, q.size);
    await fe.setVringAddr(0, q);
    await fe.setVringKick(0, q.kickFd);
    await fe.sync();
    expect(dev.enabled.get(0)).toBe(true);
  });

  it('polling (kick with the no-fd bit) starts the ring with kickFd -1 and kicks from a timer', async () => {
    const { dev, fe } = rig();
    await basicSetup(fe, VIRTIO_F_VERSION_1);
    const q = fe.queues[0]!;
    await fe.setVringNum(0, q.size);
    await fe.setVringAddr(0, q);
    await fe.setVringKick(0, null);
    await fe.sync();
    expect(dev.running.get(0)!.kickFd).toBe(-1);
    await until(() => (dev.kicks.get(0) ?? 0) >= 3);
  });

  it('replacing kick restarts the ring at its position; replacing call goes to the device; old fds are closed', async () => {
    const { dev, session, fe } = rig();
    await basicSetup(fe, VIRTIO_F_VERSION_1);
    const q = fe.queues[0]!;
    await fe.setVringNum(0, q.size);
    await fe.setVringAddr(0, q);
    await fe.setVringBase(0, 5);
    await fe.setVringCall(0, q.callFd);
    await fe.setVringKick(0, q.kickFd);
    await fe.sync();
    expect(dev.running.get(0)!.nextAvail).toBe(5);
    const oldKick = session.state.rings[0]!.kickFd;
    const oldCall = session.state.rings[0]!.callFd;
    const fdsMid = native.openFdCount();
    dev.stopBase.set(0, 9);
    const k2 = native.eventfdCreate();
    const c2 = native.eventfdCreate();
    await fe.setVringKick(0, k2);
    await fe.setVringCall(0, c2);
    await fe.sync();
    expect(dev.running.get(0)!.nextAvail).toBe(9);
    expect(dev.calls.filter((c) => c[0] === 'setCallFd')).toHaveLength(1);
    const st = session.state.rings[0]!;
    expect(st.kickFd).not.toBe(oldKick);
    expect(st.callFd).not.toBe(oldCall);
    // Two new eventfds here, two received by the session, two old ones closed by it.
    expect(native.openFdCount()).toBe(fdsMid + 2);
    native.close(k2);
    native.close(c2);
  });

  it('SET_VRING_NUM and SET_VRING_BASE are refused while the ring runs; SET_VRING_ADDR moves it', async () => {
    const { dev, session, fe } = rig();
    await basicSetup(fe, VIRTIO_F_VERSION_1);
    fe.protocolFeatures = 0n;
    const q = fe.queues[0]!;
    await fe.setVringNum(0, q.size);
    await fe.setVringAddr(0, q);
    await fe.setVringKick(0, q.kickFd);
    await fe.setVringNum(0, 128);
    await fe.setVringBase(0, 3);
    await fe.sync();
    expect(session.stats.errors).toBe(2);
    expect(dev.running.get(0)!.size).toBe(q.size);
    // Same addresses again: no restart.
    const starts = () => dev.calls.filter((c) => c[0] === 'startQueue').length;
    await fe.setVringAddr(0, q);
    await fe.sync();
    expect(starts()).toBe(1);
    const elsewhere = fe.alloc.alloc(16 * q.size + 4096, 4096);
    await fe.setVringAddr(0, { descAddr: elsewhere, availAddr: q.availAddr, usedAddr: q.usedAddr });
    await fe.sync();
    expect(starts()).toBe(2);
    expect(dev.running.get(0)!.descAddr).toBe(elsewhere);
  });
});

describe('replies, acks and refusals', () => {
  async function withReplyAck(fe: VhostUserFrontend) {
    await fe.setProtocolFeatures(OFFERED_PROTOCOL_FEATURES);
    fe.protocolFeatures = OFFERED_PROTOCOL_FEATURES;
  }

  it('GET_FEATURES, GET_PROTOCOL_FEATURES, GET_QUEUE_NUM, GET_MAX_MEM_SLOTS, GET/SET_STATUS', async () => {
    const { dev, fe, session } = rig();
    expect(await fe.getFeatures()).toBe(dev.deviceFeatures | F_PROTOCOL);
    expect(await fe.getProtocolFeatures()).toBe(OFFERED_PROTOCOL_FEATURES);
    expect(await fe.getQueueNum()).toBe(2);
    expect(await fe.getMaxMemSlots()).toBe(32);
    await fe.setStatus(Status.ACKNOWLEDGE | Status.DRIVER);
    expect(await fe.getStatus()).toBe(3);
    session.deviceBroken(0, 'test');
    expect(await fe.getStatus()).toBe(3 | STATUS_NEEDS_RESET);
    await fe.setStatus(0);
    expect(await fe.getStatus()).toBe(0);
  });

  it('GET_CONFIG slices the config space; out-of-range gets an empty reply; SET_CONFIG is refused', async () => {
    const { fe } = rig();
    await withReplyAck(fe);
    const c = await fe.getConfig(0, 6);
    expect(Array.from(c.data)).toEqual([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
    const mtu = await fe.getConfig(10, 2);
    expect(new DataView(mtu.data.buffer, mtu.data.byteOffset).getUint16(0, true)).toBe(1500);
    await expect(fe.getConfig(8, 8)).rejects.toThrow(/refused/);
    expect(await ack(fe, Req.SET_CONFIG, encodeConfig(0, 0, new Uint8Array([1, 2])))).not.toBe(0n);
    // A migration write that changes nothing is accepted.
    expect(await ack(fe, Req.SET_CONFIG, encodeConfig(0, 1, new Uint8Array([0x52, 0x54])))).toBe(0n);
  });

  it('REPLY_ACK: NEED_REPLY gets 0 on success and nonzero on refusal; no ack without NEED_REPLY', async () => {
    const { fe, session } = rig();
    await withReplyAck(fe);
    expect(await ack(fe, Req.SET_OWNER, new Uint8Array(0))).toBe(0n);
    expect(await ack(fe, Req.SET_VRING_NUM, encodeVringState(0, 100))).toBe(1n); // not a power of two
    expect(await ack(fe, Req.SET_VRING_NUM, encodeVringState(0, 65536))).toBe(1n);
    expect(await ack(fe, Req.SET_VRING_NUM, encodeVringState(2, 256))).toBe(1n); // index >= maxQueues
    expect(await ack(fe, Req.SET_VRING_NUM, encodeVringState(0, 32768))).toBe(0n);
    expect(await ack(fe, Req.SET_FEATURES, encodeU64(1n << 40n))).toBe(1n); // not offered
    expect(await ack(fe, Req.SET_PROTOCOL_FEATURES, encodeU64(1n << BigInt(ProtocolFeature.LOG_SHMFD)))).toBe(1n);
    expect(await ack(fe, Req.SET_VRING_BASE, encodeVringState(0, 0x10000))).toBe(1n);
    expect(await ack(fe, Req.SET_LOG_BASE, new Uint8Array(16))).toBe(1n);
    expect(await ack(fe, Req.GET_INFLIGHT_FD, new Uint8Array(24))).toBe(1n);
    expect(await ack(fe, Req.RESET_DEVICE, new Uint8Array(0))).toBe(1n);
    expect(session.stats.errors).toBe(9);
    // Without NEED_REPLY a refusal is silent: the next request's reply is its own.
    await fe.request(Req.SET_VRING_NUM, encodeVringState(0, 3));
    expect(await fe.getQueueNum()).toBe(2);
    expect(session.stats.errors).toBe(10);
  });

  it('GET_VRING_BASE with a bad index gets an empty reply', async () => {
    const { fe } = rig();
    const r = await fe.request(Req.GET_VRING_BASE, encodeVringState(7, 0));
    expect(r!.header.flags & FLAG_REPLY).toBe(FLAG_REPLY);
    expect(r!.payload.byteLength).toBe(0);
  });

  it('unknown request codes: error ack with NEED_REPLY, otherwise ignored', async () => {
    const { fe, session } = rig();
    await withReplyAck(fe);
    expect(await ack(fe, 999, new Uint8Array([1, 2, 3]))).toBe(1n);
    expect(await ack(fe, 0, new Uint8Array(0))).toBe(1n);
    await fe.request(12345, new Uint8Array(8));
    expect(await fe.getQueueNum()).toBe(2);
    expect(session.closed).toBe(false);
  });

  it('SET_VRING_ADDR outside guest memory, misaligned, or before any memory table is refused', async () => {
    const { fe } = rig({ memorySize: 1 << 20 });
    await withReplyAck(fe);
    const addr = (desc: number, avail: number, used: number, index = 0) =>
      encodeVringAddr({ index, flags: 0, descUser: desc, availUser: avail, usedUser: used, logAddr: 0 });
    const u = fe.regions[0]!.userAddr;
    expect(await ack(fe, Req.SET_VRING_ADDR, addr(u, u + 0x1000, u + 0x2000))).toBe(1n); // no memory yet
    await fe.setMemTable();
    expect(await ack(fe, Req.SET_VRING_NUM, encodeVringState(0, 256))).toBe(0n);
    expect(await ack(fe, Req.SET_VRING_ADDR, addr(u, u + 0x1000, u + 0x2000))).toBe(0n);
    // used ring (6 + 8*256 bytes) runs past the end of memory
    expect(await ack(fe, Req.SET_VRING_ADDR, addr(u, u + 0x1000, u + (1 << 20) - 100))).toBe(1n);
    expect(await ack(fe, Req.SET_VRING_ADDR, addr(u - 0x1000, u + 0x1000, u + 0x2000))).toBe(1n);
    expect(await ack(fe, Req.SET_VRING_ADDR, addr(u + 8, u + 0x1000, u + 0x2000))).toBe(1n); // desc not 16-aligned
    expect(await ack(fe, Req.SET_VRING_ADDR, addr(u, u + 0x1000, u + 0x2000, 5))).toBe(1n);
    expect(await ack(fe, Req.SET_VRING_ADDR, addr(2 ** 53 - 1, u, u))).toBe(1n);
  });
});

describe('memory table', () => {
  it('SET_MEM_TABLE replaces the table: device first, then old mappings unmapped', async () => {
    const { dev, session, fe } = rig({ splitRegions: true });
    await fe.setProtocolFeatures(OFFERED_PROTOCOL_FEATURES);
    fe.protocolFeatures = OFFERED_PROTOCOL_FEATURES;
    await fe.setMemTable();
    const first = dev.memory!;
    const view = first.view(0, 16)!;
    expect(view.byteLength).toBe(16);
    await fe.setMemTable([fe.regions[0]!]);
    expect(session.state.regions).toHaveLength(1);
    expect(dev.memory).not.toBe(first);
    // The old mapping's views are detached after the swap.
    expect(view.byteLength).toBe(0);
  });

  it('refuses regions beyond their file, unmappable, overlapping, and a wrong fd count', async () => {
    const { dev, fe, session } = rig({ memorySize: 1 << 20 });
    const fdsBefore = native.openFdCount();
    await fe.setProtocolFeatures(OFFERED_PROTOCOL_FEATURES);
    fe.protocolFeatures = OFFERED_PROTOCOL_FEATURES;
    const r0 = fe.regions[0]!;
    const memfd = native.memfdCreate('t', 1 << 20);
    const table = (regions: Parameters<typeof encodeMemTable>[0]) => encodeMemTable(regions);
    expect(await ack(fe, Req.SET_MEM_TABLE, table([{ ...r0, size: 2 << 20 }]), [memfd])).toBe(1n);
    expect(await ack(fe, Req.SET_MEM_TABLE, table([{ ...r0, mmapOffset: 4096 }]), [memfd])).toBe(1n);
    // Not a regular file: fdSize unknown, mmap itself fails.
    const [s1, s2] = native.unixSocketPair();
    expect(await ack(fe, Req.SET_MEM_TABLE, table([r0]), [s1])).toBe(1n);
    expect(
      await ack(fe, Req.SET_MEM_TABLE, table([r0, { ...r0, guestAddr: r0.guestAddr + 4096, userAddr: r0.userAddr + (4 << 20) }]), [memfd, memfd]),
    ).toBe(1n);
    expect(await ack(fe, Req.SET_MEM_TABLE, table([r0]), [memfd, memfd])).toBe(1n);
    expect(await ack(fe, Req.SET_MEM_TABLE, table([r0]), [])).toBe(1n);
    expect(dev.memory).toBeNull();
    expect(session.state.regions).toHaveLength(0);
    native.close(memfd);
    native.close(s1);
    native.close(s2);
    await fe.sync();
    expect(native.openFdCount()).toBe(fdsBefore);
  });

  it('ADD_MEM_REG / REM_MEM_REG edit the table; overlaps and unknown regions are refused', async () => {
    const { dev, session, fe } = rig({ splitRegions: true, memorySize: 1 << 21 });
    await fe.setProtocolFeatures(OFFERED_PROTOCOL_FEATURES);
    fe.protocolFeatures = OFFERED_PROTOCOL_FEATURES;
    const [r0, r1] = fe.regions as [typeof fe.regions[0], typeof fe.regions[0]];
    await fe.addMemReg(r0);
    await expect(fe.addMemReg(r0)).rejects.toThrow(/refused/);
    await fe.addMemReg(r1);
    expect(session.state.regions).toHaveLength(2);
    expect(dev.memory!.regionList).toHaveLength(2);
    await expect(fe.remMemReg({ ...r1, size: 4096 })).rejects.toThrow(/refused/);
    const v = dev.memory!.view(r1.guestAddr, 8)!;
    await fe.remMemReg(r1);
    expect(v.byteLength).toBe(0);
    expect(dev.memory!.regionList).toHaveLength(1);
    await fe.remMemReg(r0);
    expect(dev.memory).toBeNull();
    // REM_MEM_REG with an fd attached (tolerated, fd closed).
    const before = native.openFdCount();
    await fe.addMemReg(r0);
    const memfd = native.memfdCreate('t', 4096);
    expect(await ack(fe, Req.REM_MEM_REG, new Uint8Array([...new Uint8Array(8), ...encodeMemTable([r0]).subarray(8)]), [memfd])).toBe(0n);
    native.close(memfd);
    expect(native.openFdCount()).toBe(before);
  });
});

describe('fd ownership and teardown', () => {
  it('fds on requests that carry none are closed; wrong fd counts are refused and closed', async () => {
    const { fe, session } = rig();
    await fe.setProtocolFeatures(OFFERED_PROTOCOL_FEATURES);
    fe.protocolFeatures = OFFERED_PROTOCOL_FEATURES;
    const before = native.openFdCount();
    const e1 = native.eventfdCreate();
    const e2 = native.eventfdCreate();
    expect(await ack(fe, Req.SET_OWNER, new Uint8Array(0), [e1])).toBe(1n);
    expect(await ack(fe, Req.SET_VRING_KICK, encodeVringFd(0, false), [e1, e2])).toBe(1n);
    expect(await ack(fe, Req.SET_VRING_KICK, encodeVringFd(0, false), [])).toBe(1n);
    expect(await ack(fe, Req.SET_VRING_CALL, encodeVringFd(0, true), [e1])).toBe(1n);
    expect(await ack(fe, Req.SET_BACKEND_REQ_FD, new Uint8Array(0), [])).toBe(1n);
    expect(await ack(fe, Req.SET_VRING_ERR, encodeVringFd(1, false), [e2])).toBe(0n);
    expect(session.state.rings[1]!.errFd).toBeGreaterThanOrEqual(0);
    native.close(e1);
    native.close(e2);
    expect(native.openFdCount()).toBe(before + 1); // the err fd the session keeps
  });

  it('a device-reported broken ring signals the err fd', async () => {
    const { fe, session } = rig();
    const err = native.eventfdCreate();
    await fe.setVringErr(0, err);
    await fe.sync();
    session.deviceBroken(0, 'descriptor loop');
    expect(native.eventfdDrain(err)).toBe(1);
    native.close(err);
  });

  it('a bad header closes the connection and resets the session; nothing leaks', async () => {
    const fdsBefore = native.openFdCount();
    const { dev, fe, ended } = rig({ style: 'qemu' });
    await fe.connectAndStart();
    const e = native.eventfdCreate();
    await fe.sendRaw(encodeHeader(Req.GET_FEATURES, 0x2, 0), [e]); // version 2
    native.close(e);
    expect(await ended).toMatch(/bad message header: unsupported version/);
    await fe.closed;
    expect(dev.callNames()).toContain('reset');
    expect(dev.memory).toBeNull();
    expect(native.openFdCount()).toBe(fdsBefore);
  });

  it('EOF in the middle of a message ends the session cleanly', async () => {
    const fdsBefore = native.openFdCount();
    const { fe, ended } = rig();
    await fe.setOwner();
    const e = native.eventfdCreate();
    await fe.sendRaw(encodeHeader(Req.SET_VRING_KICK, 1, 8).subarray(0, 12), [e]);
    native.close(e);
    await fe.close();
    expect(await ended).toMatch(/middle of a message/);
    expect(native.openFdCount()).toBe(fdsBefore);
  });

  it('RESET_OWNER disables every running ring', async () => {
    const { dev, fe } = rig({ style: 'cloud-hypervisor' });
    await fe.connectAndStart();
    await fe.request(Req.RESET_OWNER, new Uint8Array(0), [], { needReply: true });
    expect(dev.enabled.get(0)).toBe(false);
    expect(dev.enabled.get(1)).toBe(false);
  });
});
