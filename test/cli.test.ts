/**
 * The command as a user runs it: a child process serving our own frontend,
 * counters on SIGUSR1, a pcap capture, a clean exit on SIGTERM, usage
 * errors answered with exit code 2, and two backends pointed at one socket
 * path.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, lstatSync, mkdtempSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { NetDriver, VhostUserFrontend } from '../src/index.js';
import { REPO_ROOT, launchBackendProcess, startBackendProcess } from './harness/backend.js';
import { killAllAfterAll, killProcess } from './harness/processes.js';
import { BROADCAST_MAC, ETH_ARP, GATEWAY_IP, arpPacket, ethernetFrame } from './helpers/packets.js';

killAllAfterAll(afterAll);
const dir = mkdtempSync(join(tmpdir(), 'vun-cli-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** No DNS upstream from the host's resolv.conf: nothing leaves loopback. */
const LOOPBACK_DNS = ['--dns-upstream', '127.0.0.1:53'];

/** A QEMU-style frontend negotiates and starts its rings on `socket`, then leaves. */
async function frontendServedOn(socket: string): Promise<void> {
  const fe = VhostUserFrontend.connect(socket, { style: 'qemu', timeoutMs: 5000 });
  try {
    await fe.connectAndStart();
    await fe.sync();
  } finally {
    await fe.close();
  }
}

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

describe('the socket path', () => {
  it('a second backend on a live socket refuses with a clear error and exits 1; the first keeps its socket and serves', async () => {
    const socket = join(dir, 'live.sock');
    const first = await startBackendProcess({ socket, args: LOOPBACK_DNS });
    const inode = lstatSync(socket).ino;
    const second = launchBackendProcess({ socket, args: LOOPBACK_DNS });
    // Either it exits, or it took the path over and says it listens.
    const outcome = await Promise.race([
      second.proc.exited,
      second.waitForLog(/listening on/).then(
        () => 'listening: took the socket over',
        () => second.proc.exited,
      ),
    ]);
    expect(outcome).toBe(1);
    expect(second.log()).toContain(`socket ${socket} is in use by another backend`);
    expect(lstatSync(socket).ino).toBe(inode);
    await frontendServedOn(socket);
    await first.stop();
    expect(await first.proc.exited).toBe(0);
    expect(existsSync(socket)).toBe(false);
  });

  it('a backend that stops leaves alone the socket another backend has since bound at its path', async () => {
    const socket = join(dir, 'rebound.sock');
    const first = await startBackendProcess({ socket, args: LOOPBACK_DNS });
    unlinkSync(socket); // removed under the first one (a clean-up script, an operator)
    const second = await startBackendProcess({ socket, args: LOOPBACK_DNS });
    const inode = lstatSync(socket).ino;
    await first.stop();
    expect(await first.proc.exited).toBe(0);
    expect(existsSync(socket) && lstatSync(socket).ino).toBe(inode);
    await frontendServedOn(socket);
    await second.stop();
    expect(existsSync(socket)).toBe(false);
  });

  it('the socket is created 0600; one left behind by a killed backend is replaced', async () => {
    const socket = join(dir, 'stale.sock');
    const first = await startBackendProcess({ socket, args: LOOPBACK_DNS });
    expect(lstatSync(socket).mode & 0o777).toBe(0o600);
    await killProcess(first.proc, 'SIGKILL');
    expect(lstatSync(socket).isSocket()).toBe(true); // stale: nobody listens
    const second = await startBackendProcess({ socket, args: LOOPBACK_DNS });
    expect(lstatSync(socket).mode & 0o777).toBe(0o600);
    await frontendServedOn(socket);
    await second.stop();
  });

  it('a path that is not a socket is refused and left as it is', async () => {
    const file = join(dir, 'not-a-socket');
    writeFileSync(file, 'keep me');
    const backend = launchBackendProcess({ socket: file, args: LOOPBACK_DNS });
    expect(await backend.proc.exited).toBe(1);
    expect(backend.log()).toContain(`${file} exists and is not a socket`);
    expect(readFileSync(file, 'utf8')).toBe('keep me');
  });
});
