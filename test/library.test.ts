/**
 * The library entry: a program embeds the backend, attaches our own
 * frontend, and a frame makes the round trip (ARP for the gateway answered).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { NetDriver, VhostUserFrontend, startBackend } from '../src/index.js';

const dir = mkdtempSync(join(tmpdir(), 'vun-lib-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const quiet = { debug() {}, info() {}, warn() {}, error() {} };

function arpRequestForGateway(): Uint8Array {
  const f = new Uint8Array(42);
  f.fill(0xff, 0, 6); // broadcast
  f.set([0x52, 0x54, 0x00, 0x12, 0x34, 0x56], 6);
  f.set([0x08, 0x06, 0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01], 12);
  f.set([0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 10, 0, 2, 15], 22); // sender
  f.set([0, 0, 0, 0, 0, 0, 10, 0, 2, 2], 32); // target 10.0.2.2
  return f;
}

describe('library entry', () => {
  it('startBackend serves a frontend that gets ARP answered, then closes cleanly', async () => {
    const socket = join(dir, 'vm.sock');
    const backend = await startBackend({ socket, logger: quiet, config: { dnsUpstreams: [] } });
    const fe = VhostUserFrontend.connect(socket, { style: 'qemu' });
    await fe.connectAndStart();
    await fe.sync();
    const driver = new NetDriver(fe);
    driver.start();
    driver.send([arpRequestForGateway()]);
    const reply = await driver.receive(5000);
    // An ARP reply (opcode 2) from the gateway MAC 52:55:0a:00:02:02 for 10.0.2.2.
    expect(Array.from(reply.subarray(12, 14))).toEqual([0x08, 0x06]);
    expect(Array.from(reply.subarray(20, 22))).toEqual([0x00, 0x02]);
    expect(Array.from(reply.subarray(22, 32))).toEqual([0x52, 0x55, 0x0a, 0x00, 0x02, 0x02, 10, 0, 2, 2]);
    expect(backend.counters.get('arp.tx.reply')).toBe(1);
    driver.stop();
    await fe.close();
    await backend.close();
  });
});
