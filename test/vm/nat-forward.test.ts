/**
 * Port forwarding and the NAT's policy switches, seen from a real guest
 * (QEMU under TCG, the busybox initramfs, our backends as child processes).
 *
 * One guest with three NICs, each on its own backend and network:
 *  - eth0, 10.0.2.0/24, defaults plus forwards: tcp HTTP -> guest httpd
 *    :8080, tcp ECHO -> guest vun-echo tcp-server :7002, udp UDP -> guest
 *    vun-echo udp-server :7001 (all bound on the host's 127.0.0.1);
 *  - eth1, 10.0.3.0/24, `--restrict` with its own tcp and udp forwards to
 *    the same guest servers;
 *  - eth2, 10.0.4.0/24, `--no-map-gw`.
 * Host-side servers on 127.0.0.1 count who reaches them, so "cannot reach"
 * is shown both in the guest (refused / unreachable) and on the host
 * (nothing arrived).
 */
import { createSocket, type Socket as DgramSocket } from 'node:dgram';
import { createServer as createNetServer, type Server as NetServer } from 'node:net';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bootGuest, type Guest } from '../harness/qemu.js';
import { ensureGuestBuilt, setupStaticIp, udhcpc } from '../harness/guest.js';
import { startBackendProcess, type BackendProcess } from '../harness/backend.js';
import { killAllAfterAll } from '../harness/processes.js';
import { closeServer, fetchLocal, freePorts, listenTcp, sha256, tcpExchange, udpExchange } from '../helpers/loopback-peers.js';

killAllAfterAll(afterAll);

const CONCURRENT = 100;

describe('port forwarding, --restrict and --no-map-gw in a guest', () => {
  let dir: string;
  let open: BackendProcess;
  let restricted: BackendProcess;
  let unmapped: BackendProcess;
  let guest: Guest;
  let httpFwd = 0;
  let echoFwd = 0;
  let udpFwd = 0;
  let httpFwdR = 0;
  let udpFwdR = 0;
  /** Forwarded to guest port 9999, where nothing listens. */
  let deadFwd = 0;
  const token = randomBytes(8).toString('hex');
  let bigSha = '';
  /** Host services on 127.0.0.1 that the guest may or may not reach. */
  let hostTcp: NetServer;
  let hostTcpPort = 0;
  const hostTcpPeers: string[] = [];
  let hostUdp: DgramSocket;
  let hostUdpPort = 0;
  const hostUdpSeen: string[] = [];

  beforeAll(async () => {
    await ensureGuestBuilt();
    dir = await mkdtemp(join(tmpdir(), 'vun-nat-fwd-'));
    hostTcp = createNetServer({ allowHalfOpen: true }, (conn) => {
      hostTcpPeers.push(conn.remoteAddress ?? '');
      conn.on('error', () => undefined);
      conn.pipe(conn);
    });
    hostTcpPort = await listenTcp(hostTcp, '127.0.0.1');
    hostUdp = createSocket('udp4');
    hostUdp.on('message', (m, rinfo) => {
      hostUdpSeen.push(m.toString());
      hostUdp.send(m, rinfo.port, rinfo.address);
    });
    await new Promise<void>((resolve) => hostUdp.bind(0, '127.0.0.1', resolve));
    hostUdpPort = hostUdp.address().port;

    [httpFwd, echoFwd, udpFwd, httpFwdR, udpFwdR, deadFwd] = (await freePorts(6, '127.0.0.1')) as [number, number, number, number, number, number];
    const dns = ['--dns-upstream', '127.0.0.1:9']; // nobody answers; no names are resolved here
    open = await startBackendProcess({
      socket: join(dir, 'open.sock'),
      args: [...dns, '--forward', `tcp:${httpFwd}:8080`, '--forward', `tcp:${echoFwd}:7002`, '--forward', `udp:${udpFwd}:7001`, '--forward', `tcp:${deadFwd}:9999`],
    });
    restricted = await startBackendProcess({
      socket: join(dir, 'restricted.sock'),
      args: [...dns, '--net', '10.0.3.0/24', '--restrict', '--forward', `tcp:127.0.0.1:${httpFwdR}:8080`, '--forward', `udp:${udpFwdR}:7001`],
    });
    unmapped = await startBackendProcess({ socket: join(dir, 'unmapped.sock'), args: [...dns, '--net', '10.0.4.0/24', '--no-map-gw'] });
    guest = await bootGuest({
      name: 'nat-forward',
      nics: [
        { kind: 'vhost-user', socket: join(dir, 'open.sock') },
        { kind: 'vhost-user', socket: join(dir, 'restricted.sock') },
        { kind: 'vhost-user', socket: join(dir, 'unmapped.sock') },
      ],
    });
    console.log(`guest boot to ready: ${guest.bootMs} ms`);
    expect((await udhcpc(guest)).cidr).toBe('10.0.2.15/24');
    await setupStaticIp(guest, '10.0.3.15/24', '', { iface: 'eth1' });
    await setupStaticIp(guest, '10.0.4.15/24', '', { iface: 'eth2' });
    // The guest's servers: httpd with a page and a 2 MB random file, TCP and UDP echo.
    bigSha = (await guest.runOk(
      `mkdir -p /www && echo "page ${token}" > /www/index.html && dd if=/dev/urandom of=/www/big bs=1024 count=2048 2>/dev/null && ` +
        'httpd -p 8080 -h /www && (vun-echo tcp-server 7002 >/dev/null &) && (vun-echo udp-server 7001 >/dev/null &) && sleep 0.5 && sha256sum /www/big',
    )).trim().split(/\s+/)[0]!;
    expect(bigSha).toMatch(/^[0-9a-f]{64}$/);
  });

  afterAll(async () => {
    await guest?.close();
    await Promise.all([open?.stop(), restricted?.stop(), unmapped?.stop()]);
    hostUdp?.close();
    await closeServer(hostTcp);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('forwards a host TCP port to the guest httpd (page and a 2 MB file)', async () => {
    const page = await fetchLocal(httpFwd, '/index.html');
    expect(page.status).toBe(200);
    expect(page.body.toString()).toBe(`page ${token}\n`);
    const t0 = Date.now();
    const big = await fetchLocal(httpFwd, '/big');
    console.log(`2 MB through the forward: ${Date.now() - t0} ms`);
    expect(big.status).toBe(200);
    expect(big.body.length).toBe(2048 * 1024);
    expect(sha256(big.body)).toBe(bigSha);
    expect((await open.counters())['tcp.forward.accepted']).toBeGreaterThanOrEqual(2);
  });

  it('binds forwards to 127.0.0.1 only by default', async () => {
    // 127.0.0.2 is loopback too, but not the bound address.
    await expect(fetchLocal(httpFwd, '/index.html', '127.0.0.2')).rejects.toThrow(/ECONNREFUSED/);
  });

  it('resets the host connection when nothing listens on the guest port', async () => {
    const before = (await open.counters())['tcp.forward.refused'] ?? 0;
    // The host's connect succeeds (the backend accepts), then the guest's RST resets it.
    await expect(tcpExchange(deadFwd, Buffer.from('anyone?'), 20_000)).rejects.toThrow(/ECONNRESET/);
    expect((await open.counters())['tcp.forward.refused']).toBe(before + 1);
  });

  it('forwards a host UDP port to the guest, replies going back to each sender', async () => {
    const [a, b] = await Promise.all([udpExchange(udpFwd, `one-${token}`), udpExchange(udpFwd, `two-${token}`)]);
    expect(a).toEqual({ reply: `one-${token}`, from: '127.0.0.1', fromPort: udpFwd });
    expect(b).toEqual({ reply: `two-${token}`, from: '127.0.0.1', fromPort: udpFwd });
    const c = await open.counters();
    expect(c['udp.inbound.rx']).toBeGreaterThanOrEqual(2);
    expect(c['udp.inbound.tx']).toBeGreaterThanOrEqual(2);
  });

  it(`completes ${CONCURRENT} concurrent host connections through a forward to a guest server`, async () => {
    const before = (await open.counters())['tcp.forward.accepted'] ?? 0;
    const msgs = Array.from({ length: CONCURRENT }, (_, i) => Buffer.from(`${i}:${token}:`.repeat(200 + i * 7)));
    const t0 = Date.now();
    const settled = await Promise.allSettled(msgs.map((m) => tcpExchange(echoFwd, m)));
    console.log(`${CONCURRENT} concurrent forwarded connections: ${Date.now() - t0} ms`);
    const failures = settled.flatMap((s, i) => (s.status === 'rejected' ? [`${i}: ${String(s.reason)}`] : []));
    expect(failures).toEqual([]);
    settled.forEach((s, i) => {
      const got = (s as PromiseFulfilledResult<Buffer>).value;
      expect(got.length, `connection ${i}`).toBe(msgs[i]!.length);
      expect(got.equals(msgs[i]!), `connection ${i}`).toBe(true);
    });
    const c = await open.counters();
    expect(c['tcp.forward.accepted']! - before).toBe(CONCURRENT);
    expect(c['tcp.error.internal'] ?? 0).toBe(0);
  });

  it('reaches the host through the mapped gateway (the control for the two cases below)', async () => {
    const r = await guest.run(`vun-echo tcp 10.0.2.2 ${hostTcpPort} control-${token}`, { timeoutMs: 20_000 });
    expect(r).toEqual({ output: `control-${token}`, exitCode: 0 });
    expect(hostTcpPeers).toEqual(['127.0.0.1']);
    const u = await guest.run(`vun-echo udp 10.0.2.2 ${hostUdpPort} ucontrol-${token}`, { timeoutMs: 20_000 });
    expect(u).toEqual({ output: `ucontrol-${token}`, exitCode: 0 });
    expect(hostUdpSeen).toEqual([`ucontrol-${token}`]);
  });

  it('--restrict: the guest cannot reach 10.0.3.2:PORT, a forwarded port still works', async () => {
    const r = await guest.run(`vun-echo tcp 10.0.3.2 ${hostTcpPort} restricted 5000`, { timeoutMs: 20_000 });
    expect(r.exitCode).toBe(1);
    expect(r.output).toMatch(/connect: Connection refused/);
    const u = await guest.run(`vun-echo udp 10.0.3.2 ${hostUdpPort} urestricted 3000`, { timeoutMs: 20_000 });
    expect(u.exitCode).toBe(1);
    // ICMP destination unreachable, administratively prohibited (code 13): EHOSTUNREACH in Linux.
    expect(u.output).toMatch(/read: No route to host/);
    expect(hostTcpPeers).toEqual(['127.0.0.1']); // only the control connection
    expect(hostUdpSeen).toEqual([`ucontrol-${token}`]);
    const c = await restricted.counters();
    expect(c['tcp.drop.nat_refused']).toBe(1);
    expect(c['udp.drop.nat_restricted']).toBe(1);
    // The forwards of the restricted backend work (to 10.0.3.15, answered over eth1).
    const page = await fetchLocal(httpFwdR, '/index.html');
    expect(page.body.toString()).toBe(`page ${token}\n`);
    expect(await udpExchange(udpFwdR, `r-${token}`)).toEqual({ reply: `r-${token}`, from: '127.0.0.1', fromPort: udpFwdR });
    // The gateway still answers ping (a local service).
    const p = await guest.run('ping -c 1 -W 5 10.0.3.2', { timeoutMs: 20_000 });
    expect(p.exitCode, p.output).toBe(0);
  });

  it('--no-map-gw: 10.0.4.2:PORT is not the host loopback', async () => {
    const r = await guest.run(`vun-echo tcp 10.0.4.2 ${hostTcpPort} unmapped 5000`, { timeoutMs: 20_000 });
    expect(r.exitCode).toBe(1);
    expect(r.output).toMatch(/connect: Connection refused/);
    const u = await guest.run(`vun-echo udp 10.0.4.2 ${hostUdpPort} uunmapped 3000`, { timeoutMs: 20_000 });
    expect(u.exitCode).toBe(1);
    expect(u.output).toMatch(/read: No route to host/);
    expect(hostTcpPeers).toEqual(['127.0.0.1']);
    expect(hostUdpSeen).toEqual([`ucontrol-${token}`]);
    const c = await unmapped.counters();
    expect(c['tcp.drop.nat_refused']).toBe(1);
    expect(c['udp.drop.nat_gateway_unmapped']).toBe(1);
  });
});
