/**
 * Guest memory that the frontend could shrink (hardening item 8). Our own
 * frontend's memfd guest memory, sealed as QEMU's memory-backend-memfd seals
 * it (F_SEAL_GROW|F_SEAL_SHRINK|F_SEAL_SEAL, the default) or not
 * (`sealMemory: false`, as cloud-hypervisor and QEMU seal=off send it),
 * against the real server and device in this process, the library entry and
 * the command.
 */
import { closeSync, ftruncateSync, openSync } from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { native, Seal } from '../src/native/index.js';
import { QEMU_MEMFD_SEALS, VhostUserError, VhostUserFrontend, type FrontendStyle } from '../src/frontend/frontend.js';
import { NetDriver } from '../src/frontend/net-driver.js';
import { startBackend } from '../src/runtime.js';
import { VhostUserServer } from '../src/vhost-user/server.js';
import { VirtioNetDevice } from '../src/virtio/net-device.js';
import { CounterSet } from '../src/net/counters.js';
import { Req, decodeReplyU64, encodeMemTable } from '../src/vhost-user/messages.js';
import { startBackendProcess } from './harness/backend.js';
import { killAllAfterAll } from './harness/processes.js';
import { BROADCAST_MAC, ETH_ARP, GATEWAY_IP, GUEST_IP, arpPacket, ethernetFrame, parseFrame } from './helpers/packets.js';
import { CollectSink, recordingLogger, socketScratch, startNetDriver } from './helpers/vhost-user.js';
import { waitFor } from './helpers/wait.js';

killAllAfterAll(afterAll);
const { cleanups, socketPath } = socketScratch('vun-seal-');

const UNSEALED = /guest memory is a memfd not sealed against shrinking/;
const REFUSED = /refused (ADD_MEM_REG|SET_MEM_TABLE): .*not sealed against shrinking.*sealed memory required/;

/** A VhostUserServer with a virtio-net device (frames to a sink), logging into `logs`. */
function server(logs: string[], requireSealedMemory?: boolean): { path: string; server: VhostUserServer; sink: CollectSink } {
  const sink = new CollectSink();
  const device = new VirtioNetDevice({ mac: new Uint8Array([0x52, 0x54, 0, 0x12, 0x34, 0x56]), mtu: 1500, sink, counters: new CounterSet() });
  const socket = socketPath();
  const s = new VhostUserServer({
    mode: 'listen',
    path: socket,
    device,
    logger: recordingLogger(logs),
    ...(requireSealedMemory !== undefined ? { requireSealedMemory } : {}),
  });
  s.start();
  cleanups.push(() => s.close());
  return { path: socket, server: s, sink };
}

function connect(socket: string, style: FrontendStyle, sealMemory?: boolean, splitRegions = false): VhostUserFrontend {
  const fe = VhostUserFrontend.connect(socket, { style, splitRegions, ...(sealMemory !== undefined ? { sealMemory } : {}) });
  cleanups.push(() => fe.close().then(() => undefined));
  return fe;
}

/** Starts `fe` and moves one frame guest -> device, so the session is known to run. */
async function runFrame(fe: VhostUserFrontend, sink: CollectSink): Promise<void> {
  const driver = await startNetDriver(fe, cleanups);
  const before = sink.frames.length;
  driver.send([arpRequest()]);
  await waitFor(() => sink.frames.length > before, 5000, 'the frame at the device');
}

function arpRequest(): Uint8Array {
  return ethernetFrame({ dst: BROADCAST_MAC, etherType: ETH_ARP, payload: arpPacket({ tpa: GATEWAY_IP }) });
}

/** ARP for the gateway answered: a running session against a real stack. */
async function arpAnswered(driver: NetDriver): Promise<void> {
  driver.send([arpRequest()]);
  const reply = parseFrame(await driver.receive(5000));
  expect(reply.arp).toMatchObject({ op: 2, spa: GATEWAY_IP, tpa: GUEST_IP });
}

describe('our frontend seals its memfd like QEMU', () => {
  it('seals GROW|SHRINK|SEAL by default (the memfd cannot shrink); sealMemory: false leaves it shrinkable', async () => {
    const { path: socket } = server([]);
    const sealed = connect(socket, 'qemu');
    expect(QEMU_MEMFD_SEALS).toBe(Seal.GROW | Seal.SHRINK | Seal.SEAL);
    expect(native.fdSeals(sealed.memoryFd)).toBe(QEMU_MEMFD_SEALS);
    expect(() => ftruncateSync(sealed.memoryFd, 4096)).toThrow(/EPERM/);
    await sealed.close();
    const { path: other } = server([]);
    const unsealed = connect(other, 'qemu', false);
    expect(native.fdSeals(unsealed.memoryFd) & Seal.SHRINK).toBe(0);
  });
});

describe('unsealed guest memory', () => {
  it('is accepted with one warning per server, however many regions and sessions', async () => {
    const logs: string[] = [];
    const { path: socket, sink } = server(logs);
    // Two regions (ADD_MEM_REG each), then a second session with SET_MEM_TABLE.
    const first = connect(socket, 'qemu', false, true);
    await runFrame(first, sink);
    expect(logs.filter((l) => UNSEALED.test(l))).toEqual([expect.stringMatching(/^warn vhost-user: guest memory is a memfd not sealed/)]);
    await first.close();
    await waitFor(() => logs.some((l) => l.includes('frontend disconnected')), 5000, 'the disconnect');
    const second = connect(socket, 'cloud-hypervisor', false);
    await runFrame(second, sink);
    expect(logs.filter((l) => UNSEALED.test(l))).toHaveLength(1);
  });

  it('sealed memory is accepted without a warning', async () => {
    const logs: string[] = [];
    const a = server(logs);
    await runFrame(connect(a.path, 'qemu', true, true), a.sink);
    const b = server(logs);
    await runFrame(connect(b.path, 'cloud-hypervisor'), b.sink);
    expect(logs.filter((l) => UNSEALED.test(l) || /refused/.test(l))).toEqual([]);
  });
});

describe('requireSealedMemory', () => {
  it.each(['qemu', 'cloud-hypervisor'] as const)('refuses an unsealed memfd with an error reply (%s), accepts sealed memory', async (style) => {
    const logs: string[] = [];
    const { path: socket, server: s, sink } = server(logs, true);
    const unsealed = connect(socket, style, false);
    await expect(unsealed.connectAndStart()).rejects.toThrow(VhostUserError);
    expect(logs).toContainEqual(expect.stringMatching(REFUSED));
    expect(s.session?.state.regions).toEqual([]);
    expect(logs.filter((l) => UNSEALED.test(l))).toEqual([]);
    await unsealed.close();
    await waitFor(() => s.session === null, 5000, 'the session to end');
    await runFrame(connect(socket, style), sink);
    expect(s.session?.state.regions.length).toBe(1);
  });

  it('refuses a region in a plain file (no seal can guard it) and accepts it without the option', async () => {
    const dir = path.dirname(socketPath());
    const file = path.join(dir, 'ram');
    const fd = openSync(file, 'w+');
    cleanups.push(() => closeSync(fd));
    ftruncateSync(fd, 1 << 20);
    const region = { guestAddr: 0, size: 1 << 20, userAddr: 0x7f00_0000_0000, mmapOffset: 0 };
    for (const require of [true, false]) {
      const logs: string[] = [];
      const { path: socket } = server(logs, require);
      const fe = connect(socket, 'qemu');
      await fe.negotiate();
      const reply = await fe.request(Req.SET_MEM_TABLE, encodeMemTable([region]), [fd], { needReply: true });
      const ack = decodeReplyU64(reply!.payload);
      expect(ack).toEqual({ ok: true, value: require ? 1n : 0n });
      if (require) expect(logs).toContainEqual(expect.stringMatching(/not a memfd sealed against shrinking.*sealed memory required/));
      expect(logs.filter((l) => UNSEALED.test(l))).toEqual([]);
    }
  });
});

describe('the library and the command', () => {
  it('startBackend({ requireSealedMemory: true }) refuses unsealed memory and serves sealed memory', async () => {
    const logs: string[] = [];
    const socket = socketPath();
    const backend = await startBackend({ socket, logger: recordingLogger(logs), config: { dnsUpstreams: [] }, requireSealedMemory: true });
    cleanups.push(() => backend.close());
    const unsealed = connect(socket, 'qemu', false);
    await expect(unsealed.connectAndStart()).rejects.toThrow(/ADD_MEM_REG refused/);
    expect(logs).toContainEqual(expect.stringMatching(REFUSED));
    await unsealed.close();
    await waitFor(() => backend.server.session === null, 5000, 'the session to end');
    const sealed = connect(socket, 'qemu');
    await arpAnswered(await startNetDriver(sealed, cleanups));
  });

  it('vhost-user-net --require-sealed-memory refuses unsealed memory; without it, unsealed memory is served with a warning', async () => {
    const socket = socketPath();
    const strict = await startBackendProcess({ socket, args: ['--require-sealed-memory', '--dns-upstream', '127.0.0.1:9'] });
    cleanups.push(() => strict.stop());
    const unsealed = connect(socket, 'qemu', false);
    await expect(unsealed.connectAndStart()).rejects.toThrow(/ADD_MEM_REG refused/);
    await strict.waitForLog(REFUSED);
    await unsealed.close();
    await strict.waitForLog(/frontend disconnected/);
    await arpAnswered(await startNetDriver(connect(socket, 'qemu'), cleanups));
    expect(strict.log()).not.toMatch(UNSEALED);

    const lax = socketPath();
    const lenient = await startBackendProcess({ socket: lax, args: ['--dns-upstream', '127.0.0.1:9'] });
    cleanups.push(() => lenient.stop());
    await arpAnswered(await startNetDriver(connect(lax, 'qemu', false), cleanups));
    await lenient.waitForLog(UNSEALED);
  });
});
