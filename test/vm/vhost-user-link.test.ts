/**
 * QEMU guests on our backend (src/cli.ts as a child process) over vhost-user:
 * the link itself, across the ways a frontend comes and goes.
 *
 * Listen mode, one backend process for the whole sequence:
 *   1. a guest boots; eth0 has carrier and the MAC we configured (same MAC
 *      given to QEMU and to the backend's device config: QEMU's virtio-net
 *      shows the guest its own `mac=`, it does not read a vhost-user
 *      backend's config space), resolves the gateway by ARP and pings it;
 *   2. the guest reboots (`reboot -f`: QEMU resets the virtio device, stops
 *      and restarts the rings on the same vhost-user connection) and pings;
 *   3. QEMU is killed and a new QEMU connects to the same backend process;
 *      that guest gets its address by DHCP (broadcast both ways) and pings;
 *   4. after the last QEMU exits, the backend holds no more descriptors and
 *      no memfd mappings than before the first QEMU.
 * Between steps, the backend's side is checked too: its log (session begins
 * and ends), its counters (ARP replies, local echo replies, DHCP) and that it
 * is still alive.
 *
 * Connect mode: QEMU listens (`server=on,wait=off`) and the backend connects
 * (`--connect`, with `--require-sealed-memory`: QEMU seals its memfd), also
 * after QEMU is restarted on the same path.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { bootGuest, type Guest } from '../harness/qemu.js';
import { ensureGuestBuilt, setupStaticIp, udhcpc } from '../harness/guest.js';
import { killAllAfterAll, pidAlive } from '../harness/processes.js';
import { processResources, startBackendProcess, type BackendProcess } from '../harness/backend.js';

killAllAfterAll(afterAll);

/** The guest NIC's MAC, given to QEMU and to the backend (not QEMU's default, so it is ours). */
const GUEST_MAC = '52:54:00:ab:cd:01';
/** The gateway's MAC in our stack (as libslirp: 52:55 then the gateway address). */
const GATEWAY_MAC = '52:55:0a:00:02:02';

const CONNECTED = /vhost-user: frontend connected\n/g;
const ENDED = /vhost-user: (?:frontend disconnected|session ended: [^\n]*)\n/g;

function countIn(text: string, re: RegExp): number {
  return text.match(re)?.length ?? 0;
}

/** Guest-side checks shared by every step: link up with our MAC, gateway by ARP, 3 pings. */
async function checkLink(guest: Guest, label: string): Promise<void> {
  expect((await guest.runOk('cat /sys/class/net/eth0/address')).trim(), label).toBe(GUEST_MAC);
  // The carrier follows the device's link status (VIRTIO_NET_F_STATUS);
  // operstate follows the carrier a moment later (the kernel's linkwatch).
  const link = await guest.run(
    'cd /sys/class/net/eth0; for i in $(seq 50); do [ "$(cat carrier)" = 1 ] && [ "$(cat operstate)" = up ] && exit 0; sleep 0.1; done; echo "carrier=$(cat carrier) operstate=$(cat operstate)"; exit 1',
  );
  expect(link.exitCode, `${label}: ${link.output}`).toBe(0);
  // No cached neighbour from before: the pings must resolve the gateway first.
  await guest.runOk('ip neigh flush dev eth0');
  const ping = await guest.run('ping -c 3 -W 5 10.0.2.2', { timeoutMs: 30_000 });
  expect(ping.exitCode, `${label}: ${ping.output}`).toBe(0);
  expect(ping.output, label).toMatch(/3 packets transmitted, 3 packets received, 0% packet loss/);
  const neigh = await guest.runOk('ip neigh show 10.0.2.2 dev eth0');
  expect(neigh, label).toMatch(new RegExp(`^10\\.0\\.2\\.2 .*lladdr ${GATEWAY_MAC}`, 'm'));
}

/** Counters the link test follows, with 0 for those not yet counted. */
async function linkCounters(backend: BackendProcess): Promise<{ arpReplies: number; echoLocal: number; rxFrames: number; txFrames: number }> {
  const c = await backend.counters();
  return {
    arpReplies: c['arp.tx.reply'] ?? 0,
    echoLocal: c['icmp.echo.local'] ?? 0,
    rxFrames: c['eth.rx.frames'] ?? 0,
    txFrames: c['eth.tx.frames'] ?? 0,
  };
}

describe('guest on our backend, listen mode (--socket)', () => {
  let dir: string;
  let socket: string;
  let backend: BackendProcess;
  let guest: Guest | undefined;
  let baseline: { fds: number; memfdMappings: number };

  beforeAll(async () => {
    await ensureGuestBuilt();
    dir = await mkdtemp(join(tmpdir(), 'vun-link-'));
    socket = join(dir, 'vu.sock');
    backend = await startBackendProcess({ socket, args: ['--mac', GUEST_MAC, '--verbose'] });
    // Let the child finish its start-up (lazy module loads, timers) before the baseline.
    await new Promise((r) => setTimeout(r, 500));
    baseline = processResources(backend.pid);
  });

  afterAll(async () => {
    await guest?.close();
    await backend?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  beforeEach(({ onTestFailed }) => {
    onTestFailed(() => console.log(`--- backend log (tail) ---\n${backend?.log().slice(-3000)}`));
  });

  it('boots over the backend: carrier, our MAC, the gateway by ARP, 3 pings', async () => {
    const t0 = Date.now();
    guest = await bootGuest({ name: 'link-1', nic: { kind: 'vhost-user', socket, mac: GUEST_MAC } });
    console.log(`boot over vhost-user: ${guest.bootMs} ms`);
    expect(countIn(backend.log(), CONNECTED)).toBe(1);
    expect(countIn(backend.log(), ENDED)).toBe(0);
    // The frontend mapped guest RAM into the backend, sealed against shrinking (QEMU's default): no warning.
    expect(processResources(backend.pid).memfdMappings).toBeGreaterThan(baseline.memfdMappings);
    expect(backend.log()).not.toMatch(/not sealed against shrinking/);

    await setupStaticIp(guest, '10.0.2.15/24', '10.0.2.2');
    await checkLink(guest, 'first boot');
    const c = await linkCounters(backend);
    expect(c.arpReplies).toBeGreaterThanOrEqual(1);
    expect(c.echoLocal).toBe(3);
    expect(c.rxFrames).toBeGreaterThanOrEqual(4);
    expect(c.txFrames).toBeGreaterThanOrEqual(4);
    console.log(`first boot step: ${Date.now() - t0} ms`);
  });

  it('pings again after a guest reboot (virtio reset)', async () => {
    const g = guest!;
    const before = await linkCounters(backend);
    const logBefore = backend.log().length;
    const ms = await g.reboot();
    console.log(`reboot over vhost-user: ${ms} ms`);
    // A fresh kernel: no address yet.
    expect((await g.run('ip -4 -o addr show dev eth0')).output).toBe('');
    await setupStaticIp(g, '10.0.2.15/24', '10.0.2.2');
    await checkLink(g, 'after reboot');
    const after = await linkCounters(backend);
    expect(after.echoLocal).toBe(before.echoLocal + 3);
    expect(after.arpReplies).toBeGreaterThan(before.arpReplies);
    expect(after.rxFrames).toBeGreaterThan(before.rxFrames);
    // QEMU 7.2 keeps the connection across a guest reset: it stops the
    // rings (GET_VRING_BASE), and sets them up again from index 0 when the
    // new driver starts the device. A frontend may also reconnect instead.
    // Either way the backend served the rebooted guest without a failure.
    const since = backend.log().slice(logBefore);
    expect(since).not.toMatch(/error:|refused|broken/);
    if (countIn(since, CONNECTED) === 0) {
      expect(countIn(since, ENDED), since).toBe(0);
      expect(countIn(since, /GET_VRING_BASE ok\n/g), since).toBe(2);
      expect(since).toMatch(/vring 0 started \(size \d+, base 0, enabled true\)/);
      expect(since).toMatch(/vring 1 started \(size \d+, base 0, enabled true\)/);
    } else {
      expect(countIn(since, ENDED), since).toBe(countIn(since, CONNECTED));
    }
    expect(pidAlive(backend.pid)).toBe(true);
  });

  it('serves a new QEMU after the first is killed: DHCP and pings', async () => {
    const before = await linkCounters(backend);
    await guest!.kill();
    guest = undefined;
    // The backend notices the hang-up and ends the session.
    await backend.waitForLog(ENDED, { count: 1, timeoutMs: 10_000 });
    expect(pidAlive(backend.pid)).toBe(true);
    expect(countIn(backend.log(), CONNECTED)).toBe(1);
    // Session over: guest memory is unmapped.
    await waitFor(() => processResources(backend.pid).memfdMappings === baseline.memfdMappings, 5000);

    guest = await bootGuest({ name: 'link-2', nic: { kind: 'vhost-user', socket, mac: GUEST_MAC } });
    console.log(`second QEMU boot: ${guest.bootMs} ms`);
    expect(countIn(backend.log(), CONNECTED)).toBe(2);

    // DHCP: the DISCOVER is a broadcast from the guest, and udhcpc takes the
    // OFFER/ACK sent to it before it has any address.
    const dhcpBefore = await backend.counters();
    const lease = await udhcpc(guest);
    expect(lease.cidr).toBe('10.0.2.15/24');
    expect(lease.gateway).toBe('10.0.2.2');
    expect(lease.output).toContain('lease of 10.0.2.15 obtained');
    const dhcpAfter = await backend.counters();
    const dhcpDelta = Object.keys(dhcpAfter)
      .filter((k) => k.startsWith('dhcp.'))
      .reduce((s, k) => s + (dhcpAfter[k]! - (dhcpBefore[k] ?? 0)), 0);
    expect(dhcpDelta, JSON.stringify(dhcpAfter)).toBeGreaterThanOrEqual(2);

    await checkLink(guest, 'second QEMU');
    const after = await linkCounters(backend);
    expect(after.echoLocal).toBe(before.echoLocal + 3);
    expect(pidAlive(backend.pid)).toBe(true);
  });

  it('leaves no descriptor or guest-memory mapping behind once QEMU is gone', async () => {
    const during = processResources(backend.pid);
    expect(during.memfdMappings).toBeGreaterThan(baseline.memfdMappings);
    // The console stays small (kernel messages are kept off it): the harness scans it on every chunk.
    console.log(`guest console: ${guest!.log.length} chars, backend log: ${backend.log().length} chars`);
    expect(guest!.log.length).toBeLessThan(1 << 20);
    await guest!.close();
    guest = undefined;
    await backend.waitForLog(ENDED, { count: 2, timeoutMs: 10_000 });
    // Allow a moment for the disconnect to be processed.
    let now = processResources(backend.pid);
    const end = Date.now() + 5000;
    while ((now.fds !== baseline.fds || now.memfdMappings !== baseline.memfdMappings) && Date.now() < end) {
      await new Promise((r) => setTimeout(r, 100));
      now = processResources(backend.pid);
    }
    console.log(`backend resources: baseline ${JSON.stringify(baseline)}, with a guest ${JSON.stringify(during)}, after ${JSON.stringify(now)}`);
    expect(now).toEqual(baseline);
    expect(pidAlive(backend.pid)).toBe(true);
    expect(backend.log()).not.toMatch(/error:/);
  });
});

describe('guest on our backend, connect mode (QEMU server=on, --connect)', () => {
  let dir: string;
  let socket: string;
  let backend: BackendProcess | undefined;
  let guest: Guest | undefined;

  beforeAll(async () => {
    await ensureGuestBuilt();
    dir = await mkdtemp(join(tmpdir(), 'vun-link-c-'));
    socket = join(dir, 'qemu-vu.sock');
  });

  afterAll(async () => {
    await guest?.close();
    await backend?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  beforeEach(({ onTestFailed }) => {
    onTestFailed(() => console.log(`--- backend log (tail) ---\n${backend?.log().slice(-3000)}`));
  });

  it('the backend connects to a listening QEMU and the guest pings the gateway', async () => {
    // The backend first: it retries until QEMU's socket appears. QEMU's
    // memory-backend-memfd is sealed against shrinking, so it is served
    // even when sealed memory is required.
    backend = await startBackendProcess({ socket, connect: true, args: ['--mac', GUEST_MAC, '--require-sealed-memory'] });
    await backend.waitForLog(/cannot connect to [^\n]*retrying/, { timeoutMs: 20_000 });
    guest = await bootGuest({ name: 'connect-1', nic: { kind: 'vhost-user', socket, mac: GUEST_MAC, server: true } });
    console.log(`boot with QEMU listening: ${guest.bootMs} ms`);
    expect(guest.args.join(' ')).toContain(`path=${socket},server=on,wait=off`);
    expect(countIn(backend.log(), /vhost-user: connected to /g)).toBe(1);
    await setupStaticIp(guest, '10.0.2.15/24', '10.0.2.2');
    await checkLink(guest, 'connect mode');
    expect((await linkCounters(backend)).echoLocal).toBe(3);
  });

  it('reconnects to a new QEMU listening on the same path', async () => {
    await guest!.kill();
    guest = undefined;
    await backend!.waitForLog(ENDED, { count: 1, timeoutMs: 10_000 });
    expect(pidAlive(backend!.pid)).toBe(true);
    guest = await bootGuest({ name: 'connect-2', nic: { kind: 'vhost-user', socket, mac: GUEST_MAC, server: true } });
    console.log(`second boot with QEMU listening: ${guest.bootMs} ms`);
    expect(countIn(backend!.log(), /vhost-user: connected to /g)).toBe(2);
    await setupStaticIp(guest, '10.0.2.15/24', '10.0.2.2');
    await checkLink(guest, 'connect mode, second QEMU');
    expect((await linkCounters(backend!)).echoLocal).toBe(6);
  });
});

async function waitFor(cond: () => boolean, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`condition not met within ${timeoutMs} ms: ${cond.toString()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
