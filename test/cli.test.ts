/**
 * The command as a user runs it: a child process serving our own frontend,
 * counters on SIGUSR1, a pcap capture, a clean exit on SIGTERM, and usage
 * errors answered with exit code 2.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { NetDriver, VhostUserFrontend } from '../src/index.js';
import { REPO_ROOT, startBackendProcess } from './harness/backend.js';
import { killAllAfterAll } from './harness/processes.js';
import { BROADCAST_MAC, ETH_ARP, GATEWAY_IP, arpPacket, ethernetFrame } from './helpers/packets.js';

killAllAfterAll(afterAll);
const dir = mkdtempSync(join(tmpdir(), 'vun-cli-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Who has 10.0.2.2? from the guest (42 bytes, unpadded). */
function arpRequestForGateway(): Uint8Array {
  return ethernetFrame({ dst: BROADCAST_MAC, etherType: ETH_ARP, payload: arpPacket({ tpa: GATEWAY_IP }) });
}

describe('vhost-user-net command', () => {
  it('serves a frontend, reports counters on SIGUSR1, captures to pcap, exits on SIGTERM', async () => {
    const socket = join(dir, 'vm.sock');
    const pcap = join(dir, 'cap.pcap');
    const backend = await startBackendProcess({ socket, args: ['--pcap', pcap, '--dns-upstream', '127.0.0.1:53'] });
    const fe = VhostUserFrontend.connect(socket, { style: 'qemu' });
    await fe.connectAndStart();
    await fe.sync();
    const driver = new NetDriver(fe);
    driver.start();
    driver.send([arpRequestForGateway()]);
    const reply = await driver.receive(5000);
    expect(Array.from(reply.subarray(20, 22))).toEqual([0x00, 0x02]);

    const counters = await backend.counters();
    expect(counters['arp.tx.reply']).toBe(1);
    expect(counters['eth.rx.frames']).toBeGreaterThanOrEqual(1);

    driver.stop();
    await fe.close();
    await backend.stop();
    expect(await backend.proc.exited).toBe(0);

    // The capture: libpcap header, then the request and the reply.
    const bytes = readFileSync(pcap);
    const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    expect(dv.getUint32(0, true)).toBe(0xa1b2c3d4);
    expect(dv.getUint32(20, true)).toBe(1); // LINKTYPE_ETHERNET
    const first = 24;
    expect(dv.getUint32(first + 8, true)).toBe(42);
    expect(Array.from(bytes.subarray(first + 16 + 20, first + 16 + 22))).toEqual([0x00, 0x01]);
    const second = first + 16 + 42;
    expect(Array.from(bytes.subarray(second + 16 + 20, second + 16 + 22))).toEqual([0x00, 0x02]);
  });

  it.each([
    [['--help'], 0, /Usage: vhost-user-net/],
    [['--socket'], 2, /argument missing|Usage/],
    [['--socket', '/tmp/x', '--forward', 'sctp:1:2'], 2, /--forward/],
    [['--socket', '/tmp/x', '--net', '10.0.2.0'], 2, /--net/],
  ])('%j exits with %i', (args, code, text) => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'src', 'cli.ts'), ...(args as string[])], {
      cwd: REPO_ROOT,
      encoding: 'utf8',
      timeout: 30_000,
    });
    expect(r.status).toBe(code);
    expect(r.stdout + r.stderr).toMatch(text as RegExp);
  });
});
