/**
 * The library entry: a program embeds the backend, attaches our own
 * frontend, and a frame makes the round trip (ARP for the gateway answered).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { NetDriver, VhostUserFrontend, startBackend } from '../src/index.js';
import { BROADCAST_MAC, ETH_ARP, GATEWAY_IP, arpPacket, ethernetFrame } from './helpers/packets.js';

const dir = mkdtempSync(join(tmpdir(), 'vun-lib-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const quiet = { debug() {}, info() {}, warn() {}, error() {} };

/** Who has 10.0.2.2? from the guest (42 bytes, unpadded). */
function arpRequestForGateway(): Uint8Array {
  return ethernetFrame({ dst: BROADCAST_MAC, etherType: ETH_ARP, payload: arpPacket({ tpa: GATEWAY_IP }) });
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
