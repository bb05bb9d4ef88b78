/**
 * Our frontend and its virtio-net driver moving real frames through the real
 * virtio-net device, over a real Unix socket, served by VhostUserServer —
 * in both negotiation styles, with one or two memory regions and a guest
 * memory base other than 0.
 */
import { describe, it, expect } from 'vitest';
import { native } from '../src/native/index.js';
import { VhostUserServer } from '../src/vhost-user/server.js';
import { VhostUserFrontend, type FrontendOptions } from '../src/frontend/frontend.js';
import type { NetDriver } from '../src/frontend/net-driver.js';
import { GuestAllocator } from '../src/frontend/allocator.js';
import { VirtioNetDevice } from '../src/virtio/net-device.js';
import { CollectSink, socketScratch, startNetDriver } from './helpers/vhost-user.js';
import { waitFor } from './helpers/wait.js';

const { cleanups, socketPath } = socketScratch('vu-fe-');

function frame(n: number, len: number): Uint8Array {
  const f = new Uint8Array(len);
  f.set([0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00]);
  for (let i = 14; i < len; i++) f[i] = (n * 7 + i) & 0xff;
  new DataView(f.buffer).setUint32(14, n, false);
  return f;
}

async function setup(options: FrontendOptions, driverOptions: ConstructorParameters<typeof NetDriver>[1] = {}) {
  const sink = new CollectSink();
  const device = new VirtioNetDevice({ mac: Uint8Array.from([0x52, 0x54, 0, 0x12, 0x34, 0x56]), mtu: 1500, sink });
  const p = socketPath();
  const server = new VhostUserServer({ mode: 'listen', path: p, device }).start();
  const fe = VhostUserFrontend.connect(p, options);
  cleanups.push(async () => {
    if (fe.isOpen) await fe.close();
    server.close();
  });
  const driver = await startNetDriver(fe, cleanups, driverOptions);
  return { sink, device, server, fe, driver };
}

describe('allocator', () => {
  it('aligns, recycles same-size blocks, and refuses past the end', () => {
    const a = new GuestAllocator(0x1000, 0x3000);
    expect(a.alloc(10, 16)).toBe(0x1000);
    expect(a.alloc(100, 256)).toBe(0x1100);
    a.release(0x1100, 100);
    expect(a.alloc(100, 4)).toBe(0x1100);
    expect(() => a.alloc(0x2000, 16)).toThrow(RangeError);
    expect(a.remaining).toBe(0x3000 - 0x1164);
  });
});

for (const style of ['qemu', 'cloud-hypervisor'] as const) {
  describe(`frames through the real virtio-net device (${style})`, () => {
    it('transmits a batch in order, byte for byte, and receives frames the device sends', async () => {
      const { sink, device, driver, fe } = await setup({ style, guestBase: 0x4000_0000, splitRegions: true });
      expect(driver.headerLength).toBe(12);
      expect(driver.mergeable).toBe(true);
      expect(device.ackedFeatures).not.toBe(0n);

      const out = Array.from({ length: 300 }, (_, i) => frame(i, 60 + (i % 1400)));
      driver.send(out);
      await driver.drained();
      await waitFor(() => sink.frames.length === out.length);
      sink.frames.forEach((f, i) => expect(Buffer.compare(f, out[i]!)).toBe(0));
      expect(driver.stats.kicks).toBeGreaterThan(0);
      expect(driver.stats.kicks).toBeLessThan(out.length); // batched

      const back = Array.from({ length: 50 }, (_, i) => frame(1000 + i, 64 + i * 20));
      for (const f of back) expect(device.send(f)).toBe(true);
      device.flush();
      for (const f of back) {
        const got = await driver.receive();
        expect(Buffer.compare(got, f)).toBe(0);
      }
      expect(fe.isOpen).toBe(true);
    });
  });
}

describe('mergeable receive buffers', () => {
  it('a frame larger than one receive buffer arrives whole (num_buffers > 1)', async () => {
    const { device, driver } = await setup({ style: 'qemu' }, { rxBufferSize: 512 });
    const big = frame(7, 1514);
    expect(device.send(big)).toBe(true);
    device.flush();
    const got = await driver.receive();
    expect(got.byteLength).toBe(1514);
    expect(Buffer.compare(got, big)).toBe(0);
    expect(driver.stats.rxMerged).toBe(1);
  });

  it('back-pressure: with few rx buffers the device refuses, then resumes when buffers come back', async () => {
    const { device, driver } = await setup({ style: 'cloud-hypervisor' }, { rxBuffers: 4 });
    let sent = 0;
    while (device.send(frame(sent, 100))) sent++;
    expect(sent).toBe(4);
    device.flush();
    const writable = new Promise<void>((r) => device.onWritable(r));
    for (let i = 0; i < 4; i++) await driver.receive();
    await writable;
    expect(device.send(frame(99, 100))).toBe(true);
    device.flush();
    expect(new DataView((await driver.receive()).buffer).getUint32(14, false)).toBe(99);
  });

  it('the async iterator and onFrame deliver frames too', async () => {
    const { device, driver } = await setup({ style: 'qemu' });
    expect(device.send(frame(1, 80))).toBe(true);
    device.flush();
    const it = driver[Symbol.asyncIterator]();
    const first = await it.next();
    expect((first.value as Uint8Array).byteLength).toBe(80);
    const seen: number[] = [];
    driver.onFrame((f) => seen.push(f.byteLength));
    device.send(frame(2, 90));
    device.flush();
    await waitFor(() => seen.length === 1);
    expect(seen).toEqual([90]);
  });
});

describe('frontend lifecycle', () => {
  it('close releases the memfd, mapping, eventfds and socket', async () => {
    const before = native.openFdCount();
    const sink = new CollectSink();
    const device = new VirtioNetDevice({ mac: Uint8Array.from([2, 0, 0, 0, 0, 1]), mtu: 1500, sink });
    const p = socketPath();
    const server = new VhostUserServer({ mode: 'listen', path: p, device }).start();
    const fe = VhostUserFrontend.connect(p, { style: 'qemu' });
    await fe.connectAndStart();
    const mem = fe.memory;
    expect(mem.byteLength).toBeGreaterThan(0);
    await fe.close();
    expect(mem.byteLength).toBe(0);
    await waitFor(() => server.session === null);
    server.close();
    expect(native.openFdCount()).toBe(before);
  });

  it('a request to a closed connection rejects; a missing reply times out', async () => {
    const [a, b] = native.unixSocketPair();
    const fe = VhostUserFrontend.fromFd(b, { timeoutMs: 100 });
    await expect(fe.getFeatures()).rejects.toThrow(/no reply within 100 ms/);
    native.close(a);
    await fe.closed;
    await expect(fe.getFeatures()).rejects.toThrow(/connection closed/);
  });
});
