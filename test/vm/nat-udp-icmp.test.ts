/**
 * UDP and ICMP through the NAT, seen from a real guest (QEMU under TCG,
 * the busybox initramfs, our backend as child processes).
 *
 * One guest with two NICs:
 *  - eth0 -> a backend in the host's network namespace (defaults,
 *    10.0.2.0/24): UDP echo against a node:dgram server on 127.0.0.1
 *    through 10.0.2.2, port unreachable, local ping, and the refusal of
 *    ICMP ping sockets (this host's net.ipv4.ping_group_range is "1 0");
 *  - eth1 -> a backend inside a network namespace of our own
 *    (`--net 10.0.3.0/24`) where ping sockets are allowed
 *    (ping_group_range "0 2147483647" there only) and a dummy interface
 *    holds 192.0.2.1: the guest pings 192.0.2.1 through a host ping socket,
 *    and every packet stays inside that namespace. The backend's Unix
 *    socket is in the filesystem, so QEMU outside reaches it.
 * The namespace is deleted in afterAll (and on process exit).
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bootGuest, type Guest } from '../harness/qemu.js';
import { ensureGuestBuilt, setupStaticIp, udhcpc } from '../harness/guest.js';
import { startBackendProcess, type BackendProcess } from '../harness/backend.js';
import { killAllAfterAll } from '../harness/processes.js';
import { createNetns, hostPingGroupRange, netnsExists, netnsUnavailable, type Netns } from '../harness/netns.js';
import { closedUdpPort, udpEcho, type UdpEcho } from '../helpers/loopback-peers.js';

killAllAfterAll(afterAll);

/** The address on the namespace's dummy interface (TEST-NET-1, never routed outside it). */
const NS_ADDRESS = '192.0.2.1';
const noNetns = netnsUnavailable();

describe.skipIf(noNetns !== undefined)('UDP and ICMP through the NAT in a guest', () => {
  let dir: string;
  let ns: Netns | undefined;
  let hostBackend: BackendProcess;
  let nsBackend: BackendProcess;
  let guest: Guest;
  /** UDP echo on 127.0.0.1. */
  let echo: UdpEcho;

  beforeAll(async () => {
    await ensureGuestBuilt();
    dir = await mkdtemp(join(tmpdir(), 'vun-nat-udp-'));
    echo = await udpEcho('127.0.0.1');

    ns = createNetns({ allowPingSockets: true, dummies: [{ name: 'd0', cidr: `${NS_ADDRESS}/24` }] });
    const hostSocket = join(dir, 'host.sock');
    const nsSocket = join(dir, 'ns.sock');
    // Loopback DNS upstreams that nobody answers: this file resolves no names.
    hostBackend = await startBackendProcess({ socket: hostSocket, args: ['--dns-upstream', '127.0.0.1:9'] });
    nsBackend = await startBackendProcess({
      socket: nsSocket,
      netns: ns.name,
      args: ['--net', '10.0.3.0/24', '--dns-upstream', '127.0.0.1:9'],
    });
    guest = await bootGuest({
      name: 'nat-udp-icmp',
      nics: [
        { kind: 'vhost-user', socket: hostSocket },
        { kind: 'vhost-user', socket: nsSocket },
      ],
    });
    console.log(`guest boot to ready: ${guest.bootMs} ms`);
    const lease = await udhcpc(guest);
    expect(lease.cidr).toBe('10.0.2.15/24');
    // eth1: no default route ('' gateway: undefined would mean the default 10.0.2.2), only the namespace's test network behind 10.0.3.2.
    await setupStaticIp(guest, '10.0.3.15/24', '', { iface: 'eth1', routes: [`${NS_ADDRESS}/32 via 10.0.3.2 dev eth1`] });
  });

  afterAll(async () => {
    await guest?.close();
    await hostBackend?.stop();
    await nsBackend?.stop();
    echo?.socket.close();
    if (ns) {
      const name = ns.name;
      ns.delete();
      expect(netnsExists(name)).toBe(false);
    }
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('the namespace allows ping sockets while the host does not', () => {
    expect(ns!.sysctl('net.ipv4.ping_group_range').split(/\s+/)).toEqual(['0', '2147483647']);
    expect(ns!.exec('ip', ['-4', '-o', 'addr', 'show', 'dev', 'd0'])).toContain(`inet ${NS_ADDRESS}/24`);
  });

  it('answers ping to the gateway locally', async () => {
    const r = await guest.run('ping -c 3 -W 5 10.0.2.2', { timeoutMs: 30_000 });
    expect(r.exitCode, r.output).toBe(0);
    expect(r.output).toContain('3 packets transmitted, 3 packets received');
    const c = await hostBackend.counters();
    expect(c['icmp.echo.local']).toBeGreaterThanOrEqual(3);
    expect(c['icmp.ping.tx'] ?? 0).toBe(0);
  });

  it('pings an address of the namespace through an ICMP ping socket', async () => {
    const before = await nsBackend.counters();
    const r = await guest.run(`ping -c 3 -W 5 -s 1200 ${NS_ADDRESS}`, { timeoutMs: 30_000 });
    expect(r.exitCode, r.output).toBe(0);
    expect(r.output).toContain('3 packets transmitted, 3 packets received');
    expect(r.output).toMatch(new RegExp(`1208 bytes from ${NS_ADDRESS.replace(/\./g, '\\.')}: seq=0`));
    const c = await nsBackend.counters();
    expect(c['icmp.ping.tx']! - (before['icmp.ping.tx'] ?? 0)).toBe(3);
    expect(c['icmp.ping.rx']! - (before['icmp.ping.rx'] ?? 0)).toBe(3);
    expect(c['icmp.ping.flows.active']).toBe(1);
    expect(c['icmp.ping.not_permitted'] ?? 0).toBe(0);
    expect(nsBackend.log()).not.toMatch(/ping sockets not permitted/);
  });

  it('pings with echoes larger than the MTU (reassembled from the guest, fragmented to it)', async () => {
    const before = await nsBackend.counters();
    const r = await guest.run(`ping -c 2 -W 5 -s 3000 ${NS_ADDRESS}`, { timeoutMs: 30_000 });
    expect(r.exitCode, r.output).toBe(0);
    expect(r.output).toContain('2 packets transmitted, 2 packets received');
    expect(r.output).toMatch(new RegExp(`3008 bytes from ${NS_ADDRESS.replace(/\./g, '\\.')}: seq=1`));
    const c = await nsBackend.counters();
    expect(c['icmp.ping.rx']! - before['icmp.ping.rx']!).toBe(2);
    expect(c['ipv4.tx.fragmented']! - (before['ipv4.tx.fragmented'] ?? 0)).toBe(2);
  });

  it('logs once that ping sockets are not permitted on the host, and drops the echoes', async () => {
    const [low, high] = hostPingGroupRange();
    // Our backend runs with gid 0; only if the host excludes it is this case safe to run (nothing leaves).
    if (low <= 0 && 0 <= high) {
      console.log(`host ping_group_range ${low} ${high} allows gid 0: negative case not applicable`);
      return;
    }
    // 198.51.100.1 (TEST-NET-2) via eth0: the host refuses the ping socket, so no packet is sent anywhere.
    const r = await guest.run('ping -c 2 -W 2 198.51.100.1', { timeoutMs: 30_000 });
    expect(r.exitCode).not.toBe(0);
    expect(r.output).toContain('2 packets transmitted, 0 packets received');
    const again = await guest.run('ping -c 1 -W 2 198.51.100.1', { timeoutMs: 30_000 });
    expect(again.exitCode).not.toBe(0);
    const c = await hostBackend.counters();
    expect(c['icmp.ping.not_permitted']).toBe(3);
    expect(c['icmp.ping.tx'] ?? 0).toBe(0);
    expect(hostBackend.log().match(/ping sockets not permitted/g)?.length).toBe(1);
  });

  it('echoes UDP through 10.0.2.2 to a server on 127.0.0.1', async () => {
    const msg = `udp-${randomBytes(6).toString('hex')}`;
    const r = await guest.run(`vun-echo udp 10.0.2.2 ${echo.port} ${msg}`, { timeoutMs: 20_000 });
    expect(r).toEqual({ output: msg, exitCode: 0 });
    expect(echo.echoed.at(-1)).toEqual({ length: msg.length, from: '127.0.0.1' });
    // A 3000-byte datagram: fragmented by the guest on the way out, by the stack on the way back.
    const big = await guest.run(`vun-echo udp 10.0.2.2 ${echo.port} "$(head -c 3000 /dev/zero | tr '\\000' u)"`, { timeoutMs: 20_000 });
    expect(big.exitCode, big.output.slice(0, 200)).toBe(0);
    expect(big.output).toBe('u'.repeat(3000));
    expect(echo.echoed.at(-1)).toEqual({ length: 3000, from: '127.0.0.1' });
    const c = await hostBackend.counters();
    expect(c['ipv4.tx.fragmented']).toBeGreaterThanOrEqual(1);
    expect(c['udp.flows.created']).toBeGreaterThanOrEqual(2);
  });

  it('reports port unreachable for UDP to a closed port on 10.0.2.2', async () => {
    const port = await closedUdpPort('127.0.0.1');
    const before = (await hostBackend.counters())['udp.port_unreachable'] ?? 0;
    const r = await guest.run(`vun-echo udp 10.0.2.2 ${port} anyone-there 5000`, { timeoutMs: 20_000 });
    expect(r.exitCode).toBe(1);
    // The guest's connected UDP socket gets ECONNREFUSED from the ICMP port unreachable (not a timeout).
    expect(r.output).toMatch(/read: Connection refused/);
    expect((await hostBackend.counters())['udp.port_unreachable']).toBe(before + 1);
  });

  it('keeps many UDP flows apart (each reply reaches its own socket)', async () => {
    const r = await guest.run(
      `for i in $(seq 1 20); do (vun-echo udp 10.0.2.2 ${echo.port} m$i > /tmp/u$i || echo FAIL $i) & done; wait; ` +
        'for i in $(seq 1 20); do echo "$i $(cat /tmp/u$i)"; done',
      { timeoutMs: 60_000 },
    );
    expect(r.exitCode, r.output).toBe(0);
    expect(r.output).not.toContain('FAIL');
    expect(r.output.trim().split('\n')).toEqual(Array.from({ length: 20 }, (_, i) => `${i + 1} m${i + 1}`));
    expect(hostBackend.log()).not.toMatch(/exception/);
  });
});

if (noNetns !== undefined) {
  it.skip(`UDP and ICMP VM tests need network namespaces: ${noNetns}`, () => undefined);
}
