/**
 * IPv6 seen from a real guest (QEMU under TCG, the busybox initramfs): what
 * issue 7 asks of the backend's IPv6 side, each case the IPv6 twin of one
 * in nat-tcp, nat-udp-icmp, nat-dhcp-dns or nat-forward.
 *
 * The same cases run on two networks, one guest boot each:
 *  - QEMU's own `-netdev user` (libslirp 4.7), which gives guests IPv6 with
 *    the addresses ours copies (prefix fec0::/64, gateway fec0::2 mapped to
 *    the host's ::1, DNS fec0::3, router fe80::2). It is the reference the
 *    cases were checked against before our backend had IPv6, and it keeps
 *    them honest: a case that passes there asks nothing slirp-specific.
 *    What libslirp 4.7 does not do is skipped there, the reason in the
 *    case's name (no MTU or RDNSS option in its RAs here, no DHCPv6
 *    addresses, no IPv6 fragments, no ICMPv6 port unreachable, no v6
 *    hostfwd in QEMU 7.2, and its DNS relays to the host's resolver, which
 *    is no loopback peer);
 *  - our backend over vhost-user, with `--dns-upstream` at a test DNS
 *    server on 127.0.0.1 and forwards on [::1]. These run only once the
 *    backend has IPv6: backendIpv6Missing() (its `--help` offers
 *    `--no-ipv6`) gates them at collection time, and they are reported as
 *    skipped, with the reason, until then.
 * Every host peer listens on ::1 only, so whatever reaches one came
 * through an AF_INET6 host socket; the peers record the remote address.
 *
 * Pings to an address that is not the gateway's leave through a host ICMPv6
 * ping socket; that case runs in a network namespace of its own (a dummy
 * interface holding 2001:db8::1, ping sockets opened there only), with a
 * second guest on a backend inside it, as nat-udp-icmp does for IPv4.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bootGuest, type Guest, type NicOptions } from '../harness/qemu.js';
import { dhcpv6, ensureGuestBuilt, routerSolicit, slaac, udhcpc } from '../harness/guest.js';
import { backendIpv6Missing, startBackendProcess, type BackendProcess } from '../harness/backend.js';
import { killAllAfterAll } from '../harness/processes.js';
import { createNetns, netnsExists, netnsUnavailable, type Netns } from '../harness/netns.js';
import {
  DNS_TYPE_AAAA, MB, closeServer, closedTcpPort, closedUdpPort, freePorts, hashingSink, itemBody, sha256, tcpExchange,
  testDns, transferHttp, udpEcho, udpExchange, type HashingSink, type TestDns, type TransferHttp, type UdpEcho,
} from '../helpers/loopback-peers.js';

killAllAfterAll(afterAll);

const CONCURRENT = 100;
/** The SLAAC address of the harness's first NIC (MAC 52:54:00:12:34:56) in fec0::/64: its EUI-64. */
const GUEST_SLAAC = 'fec0::5054:ff:fe12:3456';
const TEST_NAME = 'testname.example';
const TEST_AAAA = '2001:db8::77';
/** A peer the guest reached over IPv6 from the router's side: the gateway's or the router's address, not ::ffff:10.0.2.2. */
const IPV6_PEER = /^(fec0|fe80)::[0-9a-f:]+$/;
/** The address on the namespace's dummy interface (documentation prefix, never routed outside it). */
const NS_ADDRESS6 = '2001:db8::1';

const ipv6Missing = await backendIpv6Missing();
const noNetns = netnsUnavailable();

type Network = 'slirp' | 'ours';

function ipv6Suite(network: Network): void {
  const title = network === 'slirp' ? 'QEMU -netdev user (libslirp)' : 'our backend';
  /** A case libslirp cannot pass: skipped on slirp, `why` in its name. */
  const oursOnly = (name: string, why: string, fn: () => Promise<void>): void => {
    it.skipIf(network === 'slirp')(`${name} (not on slirp: ${why})`, fn);
  };

  describe.skipIf(network === 'ours' && ipv6Missing !== undefined)(`IPv6 in a guest on ${title}`, () => {
    let dir: string;
    let backend: BackendProcess | undefined;
    let guest: Guest;
    let http: TransferHttp;
    let sink: HashingSink;
    let echo: UdpEcho;
    let dns: TestDns;
    let fwdTcp = 0;
    let fwdUdp = 0;
    const token = randomBytes(6).toString('hex');
    const blob = randomBytes(10 * MB);
    const blobSha = sha256(blob);

    beforeAll(async () => {
      await ensureGuestBuilt();
      dir = await mkdtemp(join(tmpdir(), `vun-ipv6-${network}-`));
      http = await transferHttp('::1', { blob, token, concurrent: CONCURRENT });
      sink = await hashingSink('::1');
      echo = await udpEcho('::1');
      dns = await testDns('127.0.0.1', { [TEST_NAME]: { aaaa: TEST_AAAA } });
      [fwdTcp, fwdUdp] = (await freePorts(2, '::1')) as [number, number];
      let nic: NicOptions = { kind: 'slirp' };
      if (network === 'ours') {
        const socket = join(dir, 'vu.sock');
        backend = await startBackendProcess({
          socket,
          args: ['--dns-upstream', `127.0.0.1:${dns.port}`, '--forward', `tcp:[::1]:${fwdTcp}:7002`, '--forward', `udp:[::1]:${fwdUdp}:7001`],
        });
        nic = { kind: 'vhost-user', socket };
      }
      guest = await bootGuest({ name: `ipv6-${network}`, nic });
      console.log(`guest boot to ready: ${guest.bootMs} ms`);
      // The guest's servers for the forwards: TCP and UDP echo, each logging its peers.
      await guest.runOk('(vun-echo tcp-server 7002 > /tmp/tcp-echo.log &) && (vun-echo udp-server 7001 > /tmp/udp-echo.log &) && sleep 0.3');
    });

    /** The peers the guest's TCP or UDP echo server logged, in order (IPv4 ones as ::ffff:a.b.c.d). */
    const guestServerPeers = async (proto: 'tcp' | 'udp'): Promise<string[]> => {
      const log = await guest.runOk(`cat /tmp/${proto}-echo.log`);
      return [...log.matchAll(new RegExp(`^vun-echo: ${proto} from (\\S+)$`, 'gm'))].map((m) => m[1]!);
    };

    afterAll(async () => {
      await guest?.close();
      await backend?.stop();
      await http?.close();
      await closeServer(sink?.server);
      echo?.socket.close();
      await dns?.close();
      if (dir) await rm(dir, { recursive: true, force: true });
    });

    it(`forms ${GUEST_SLAAC}/64 from the router's advertisement, default route via fe80::2`, async () => {
      const t0 = Date.now();
      const autoconf = await slaac(guest);
      console.log(`SLAAC: ${Date.now() - t0} ms`);
      expect(autoconf.cidr, autoconf.addresses).toBe(`${GUEST_SLAAC}/64`);
      expect(autoconf.router, autoconf.routes).toBe('fe80::2');
      // The on-link prefix is a route of its own (no next hop).
      expect(autoconf.routes).toMatch(/^fec0::\/64 dev eth0 /m);
      const ra = await routerSolicit(guest);
      expect(ra).toMatchObject({ from: 'fe80::2', prefixes: [{ prefix: 'fec0::', length: 64, valid: 86400, preferred: 14400 }] });
      expect(ra.prefixes[0]!.flags).toEqual(expect.arrayContaining(['L', 'A']));
      expect(ra.routerLifetime).toBeGreaterThan(0);
      // The router's link-layer address is the one the guest resolved fe80::2 to.
      expect(ra.slla).toMatch(/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/);
      expect((await guest.runOk('ip -6 neigh')).toLowerCase()).toMatch(new RegExp(`^fe80::2 (dev eth0 )?lladdr ${ra.slla} router`, 'm'));
    });

    oursOnly('advertises the MTU and the DNS address (RDNSS), and DHCPv6 addresses (M)', 'libslirp 4.7 sends no MTU option and no M flag, and RDNSS only when the host has an IPv6 resolver', async () => {
      const ra = await routerSolicit(guest);
      expect(ra.mtu).toBe(1500);
      expect(ra.rdnss.map((r) => r.address)).toEqual(['fec0::3']);
      expect(ra.rdnss[0]!.lifetime).toBeGreaterThan(0);
      expect(ra.flags).toContain('M');
      expect((await guest.runOk('cat /proc/sys/net/ipv6/conf/eth0/mtu')).trim()).toBe('1500');
    });

    it('gets its DHCPv4 lease beside IPv6, and both families work after it', async () => {
      const lease = await udhcpc(guest);
      expect(lease.cidr).toBe('10.0.2.15/24');
      expect(lease.gateway).toBe('10.0.2.2');
      expect(lease.dns).toEqual(['10.0.2.3']);
      const v6 = await guest.runOk('ip -6 -o addr show dev eth0');
      expect(v6).toContain(`inet6 ${GUEST_SLAAC}/64`);
      for (const cmd of ['ping -c 1 -W 5 10.0.2.2', 'ping -6 -c 1 -W 5 fec0::2']) {
        const r = await guest.run(cmd, { timeoutMs: 20_000 });
        expect(r.exitCode, `${cmd}\n${r.output}`).toBe(0);
        expect(r.output).toContain('1 packets transmitted, 1 packets received');
      }
    });

    it('answers ping6 to the gateway, its link-local address and the DNS address', async () => {
      for (const [addr, shown] of [['fec0::2', 'fec0::2'], ['fe80::2%eth0', 'fe80::2'], ['fec0::3', 'fec0::3']] as const) {
        const r = await guest.run(`ping -6 -c 3 -W 5 ${addr}`, { timeoutMs: 30_000 });
        expect(r.exitCode, r.output).toBe(0);
        expect(r.output).toContain('3 packets transmitted, 3 packets received');
        expect(r.output).toContain(`64 bytes from ${shown}: seq=2`);
      }
    });

    it('answers a DHCPv6 Information-request with the DNS address (stateless)', async () => {
      const a = await dhcpv6(guest, 'eth0', 'info');
      expect(a).toMatchObject({ type: 'reply', clientId: 'ours', dns: ['fec0::3'], addresses: [] });
    });

    oursOnly('assigns fec0::15 to a Solicit with Rapid Commit (stateful DHCPv6), and the address works', 'libslirp answers Information-requests only', async () => {
      const a = await dhcpv6(guest, 'eth0', 'solicit');
      expect(a).toMatchObject({ type: 'reply', clientId: 'ours', rapidCommit: true, dns: ['fec0::3'] });
      expect(a.serverId).toMatch(/^[0-9a-f]+$/);
      expect(a.iaNa?.iaid).toBe(1);
      expect(a.addresses.map((x) => x.address)).toEqual(['fec0::15']);
      expect(a.addresses[0]!.valid).toBeGreaterThanOrEqual(a.addresses[0]!.preferred);
      expect(a.status.filter((s) => s.code !== 0)).toEqual([]);
      // The leased address, used as a source: ping from it (after its duplicate address detection).
      // It stays, as with a DHCPv6 client, so a forward may reach the guest at either of its addresses.
      const r = await guest.run(
        'ip -6 addr add fec0::15/128 dev eth0 && for i in $(seq 1 20); do ' +
          "ip -6 addr show dev eth0 | grep 'fec0::15/128' | grep -q tentative || break; sleep 0.25; done; " +
          'ping -6 -c 2 -W 5 -I fec0::15 fec0::2',
        { timeoutMs: 30_000 },
      );
      expect(r.exitCode, r.output).toBe(0);
      expect(r.output).toContain('from fec0::15');
      expect(r.output).toContain('2 packets transmitted, 2 packets received');
    });

    it('downloads 10 MB from ::1 through fec0::2 with a matching sha256', async () => {
      const t0 = Date.now();
      const r = await guest.run(`wget -q -O - http://[fec0::2]:${http.port}/blob | sha256sum`, { timeoutMs: 150_000 });
      const ms = Date.now() - t0;
      console.log(`10 MB download over IPv6 (${network}): ${ms} ms (${((blob.length * 8) / 1e3 / ms).toFixed(1)} Mbit/s)`);
      expect(r.exitCode, r.output).toBe(0);
      expect(r.output.trim().split(/\s+/)[0]).toBe(blobSha);
      expect(http.remotes.at(-1)).toBe('::1');
    });

    it('uploads 10 MB to ::1 through fec0::2 with a matching sha256', async () => {
      await guest.runOk('dd if=/dev/urandom of=/tmp/up bs=1048576 count=10 2>/dev/null', { timeoutMs: 60_000 });
      const guestSha = (await guest.runOk('sha256sum /tmp/up', { timeoutMs: 60_000 })).trim().split(/\s+/)[0];
      expect(guestSha).toMatch(/^[0-9a-f]{64}$/);
      const t0 = Date.now();
      // busybox nc half-closes at the end of its input; the sink then answers with what it got.
      const r = await guest.run(`nc fec0::2 ${sink.port} < /tmp/up`, { timeoutMs: 150_000 });
      const ms = Date.now() - t0;
      console.log(`10 MB upload over IPv6 (${network}): ${ms} ms (${((10 * MB * 8) / 1e3 / ms).toFixed(1)} Mbit/s)`);
      expect(r.exitCode, r.output).toBe(0);
      expect(r.output.trim()).toBe(`${10 * MB} ${guestSha}`);
      expect(sink.uploads.at(-1)).toEqual({ length: 10 * MB, sha: guestSha, remote: '::1' });
    });

    it('shows a connection to a closed port on fec0::2 as refused (RST)', async () => {
      const closed = await closedTcpPort('::1');
      const r = await guest.run(`vun-echo tcp fec0::2 ${closed} hello 5000`, { timeoutMs: 20_000 });
      expect(r.exitCode).toBe(1);
      expect(r.output).toMatch(/connect: Connection refused/);
    });

    it(`completes ${CONCURRENT} concurrent IPv6 connections, each with its own content`, async () => {
      const t0 = Date.now();
      const before = http.remotes.length;
      // 100 wget in the background, all held open by the server until the last one arrives.
      const r = await guest.run(
        `rm -rf /tmp/c && mkdir /tmp/c && for i in $(seq 1 ${CONCURRENT}); do ` +
          `(wget -q -O /tmp/c/$i http://[fec0::2]:${http.port}/item/$i || echo "FAIL $i") & done; wait; ` +
          `cd /tmp/c && for i in $(seq 1 ${CONCURRENT}); do echo "$i $(sha256sum < $i | cut -d' ' -f1)"; done`,
        { timeoutMs: 150_000 },
      );
      console.log(`${CONCURRENT} concurrent IPv6 connections (${network}): ${Date.now() - t0} ms, peak open at the server ${http.peakOpen()}`);
      expect(r.exitCode, r.output).toBe(0);
      expect(r.output).not.toContain('FAIL');
      const lines = r.output.trim().split('\n');
      expect(lines.length).toBe(CONCURRENT);
      for (let n = 1; n <= CONCURRENT; n++) {
        expect(lines[n - 1], `item ${n}`).toBe(`${n} ${sha256(itemBody(token, n))}`);
      }
      // They were really open at the same time (the server held every response until the last arrived).
      expect(http.peakOpen()).toBe(CONCURRENT);
      expect(http.remotes.slice(before)).toEqual(Array(CONCURRENT).fill('::1'));
    });

    it('echoes UDP through fec0::2 to a server on ::1', async () => {
      const msg = `udp6-${randomBytes(6).toString('hex')}`;
      const r = await guest.run(`vun-echo udp fec0::2 ${echo.port} ${msg}`, { timeoutMs: 20_000 });
      expect(r).toEqual({ output: msg, exitCode: 0 });
      expect(echo.echoed.at(-1)).toEqual({ length: msg.length, from: '::1' });
      // Many flows at once, each reply to its own socket.
      const many = await guest.run(
        `for i in $(seq 1 20); do (vun-echo udp fec0::2 ${echo.port} m$i > /tmp/u$i || echo FAIL $i) & done; wait; ` +
          'for i in $(seq 1 20); do echo "$i $(cat /tmp/u$i)"; done',
        { timeoutMs: 60_000 },
      );
      expect(many.exitCode, many.output).toBe(0);
      expect(many.output.trim().split('\n')).toEqual(Array.from({ length: 20 }, (_, i) => `${i + 1} m${i + 1}`));
    });

    oursOnly('echoes a 3000-byte UDP datagram (IPv6 fragments both ways)', 'libslirp drops IPv6 fragments', async () => {
      const big = await guest.run(`vun-echo udp fec0::2 ${echo.port} "$(head -c 3000 /dev/zero | tr '\\000' v)"`, { timeoutMs: 20_000 });
      expect(big.exitCode, big.output.slice(0, 200)).toBe(0);
      expect(big.output).toBe('v'.repeat(3000));
      expect(echo.echoed.at(-1)).toEqual({ length: 3000, from: '::1' });
    });

    oursOnly('reports port unreachable for UDP to a closed port on fec0::2', 'libslirp 4.7 sends no ICMPv6 error (the guest times out)', async () => {
      const port = await closedUdpPort('::1');
      const r = await guest.run(`vun-echo udp fec0::2 ${port} anyone-there 5000`, { timeoutMs: 20_000 });
      expect(r.exitCode).toBe(1);
      // The guest's connected UDP socket gets ECONNREFUSED from the ICMPv6 port unreachable (not a timeout).
      expect(r.output).toMatch(/read: Connection refused/);
    });

    oursOnly('resolves an AAAA name through the IPv6 DNS address fec0::3', "libslirp relays to the host's own resolver", async () => {
      const before = dns.queries.length;
      const r = await guest.run(`nslookup -type=aaaa ${TEST_NAME} fec0::3`, { timeoutMs: 30_000 });
      expect(r.exitCode, r.output).toBe(0);
      expect(r.output).toContain('Server:\t\tfec0::3');
      expect(r.output).toMatch(new RegExp(`Name:\\s+${TEST_NAME.replace('.', '\\.')}\\nAddress:\\s+${TEST_AAAA}\\n`));
      const seen = dns.queries.slice(before);
      expect(seen.some((q) => q.name === TEST_NAME && q.type === DNS_TYPE_AAAA)).toBe(true);
      // The upstream sees the backend (from loopback), not the guest.
      expect(seen.every((q) => q.from === '127.0.0.1')).toBe(true);
    });

    oursOnly('forwards a host TCP port on [::1] to a guest server, over IPv6 to the guest', "QEMU 7.2's hostfwd is IPv4-only", async () => {
      const msg = Buffer.from(`fwd6-${token}:`.repeat(8000)); // ~150 KB, several windows each way
      const got = await tcpExchange(fwdTcp, msg, 60_000, '::1');
      expect(got.length).toBe(msg.length);
      expect(got.equals(msg)).toBe(true);
      // The guest's server saw an IPv6 peer, not a v4-mapped one.
      expect(await guestServerPeers('tcp')).toEqual([expect.stringMatching(IPV6_PEER)]);
    });

    oursOnly('forwards a host UDP port on [::1] to the guest, replies going back to each sender', "QEMU 7.2's hostfwd is IPv4-only", async () => {
      const [a, b] = await Promise.all([udpExchange(fwdUdp, `one-${token}`, 10_000, '::1'), udpExchange(fwdUdp, `two-${token}`, 10_000, '::1')]);
      expect(a).toEqual({ reply: `one-${token}`, from: '::1', fromPort: fwdUdp });
      expect(b).toEqual({ reply: `two-${token}`, from: '::1', fromPort: fwdUdp });
      expect(await guestServerPeers('udp')).toEqual([expect.stringMatching(IPV6_PEER), expect.stringMatching(IPV6_PEER)]);
    });

    if (network === 'ours') {
      it('ends with no internal errors in the backend', async () => {
        const c = await backend!.counters();
        expect(c['tcp.error.internal'] ?? 0).toBe(0);
        expect(backend!.log()).not.toMatch(/internal error|exception/);
      });
    }
  });

  if (network === 'ours' && ipv6Missing !== undefined) {
    it.skip(`IPv6 in a guest on our backend: ${ipv6Missing}`, () => undefined);
  }
}

ipv6Suite('slirp');
ipv6Suite('ours');

describe.skipIf(ipv6Missing !== undefined || noNetns !== undefined)('ICMPv6 echo through a host ping socket, in a namespace of our own', () => {
  let dir: string;
  let ns: Netns | undefined;
  let backend: BackendProcess;
  let guest: Guest;

  beforeAll(async () => {
    await ensureGuestBuilt();
    dir = await mkdtemp(join(tmpdir(), 'vun-ipv6-ping-'));
    ns = createNetns({ allowPingSockets: true, dummies: [{ name: 'd0', cidr: `${NS_ADDRESS6}/64` }] });
    const socket = join(dir, 'ns.sock');
    backend = await startBackendProcess({ socket, netns: ns.name, args: ['--dns-upstream', '127.0.0.1:9'] });
    guest = await bootGuest({ name: 'ipv6-ping-netns', nic: { kind: 'vhost-user', socket } });
    console.log(`guest boot to ready: ${guest.bootMs} ms`);
    expect((await slaac(guest)).cidr).toBe(`${GUEST_SLAAC}/64`);
  });

  afterAll(async () => {
    await guest?.close();
    await backend?.stop();
    if (ns) {
      const name = ns.name;
      ns.delete();
      expect(netnsExists(name)).toBe(false);
    }
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('the namespace allows ping sockets and holds the IPv6 address', () => {
    expect(ns!.sysctl('net.ipv4.ping_group_range').split(/\s+/)).toEqual(['0', '2147483647']);
    expect(ns!.exec('ip', ['-6', '-o', 'addr', 'show', 'dev', 'd0'])).toContain(`inet6 ${NS_ADDRESS6}/64`);
  });

  it(`pings ${NS_ADDRESS6} through an ICMPv6 ping socket`, async () => {
    const r = await guest.run(`ping -6 -c 3 -W 5 -s 1200 ${NS_ADDRESS6}`, { timeoutMs: 30_000 });
    expect(r.exitCode, r.output).toBe(0);
    expect(r.output).toContain('3 packets transmitted, 3 packets received');
    expect(r.output).toContain(`1208 bytes from ${NS_ADDRESS6}: seq=0`);
    expect(backend.log()).not.toMatch(/ping sockets not permitted/);
  });

  it('pings with echoes larger than the MTU (reassembled from the guest, fragmented to it)', async () => {
    const r = await guest.run(`ping -6 -c 2 -W 5 -s 3000 ${NS_ADDRESS6}`, { timeoutMs: 30_000 });
    expect(r.exitCode, r.output).toBe(0);
    expect(r.output).toContain('2 packets transmitted, 2 packets received');
    expect(r.output).toContain(`3008 bytes from ${NS_ADDRESS6}: seq=1`);
  });
});

if (ipv6Missing !== undefined || noNetns !== undefined) {
  it.skip(`ICMPv6 echo through a host ping socket: ${ipv6Missing ?? `needs network namespaces: ${noNetns}`}`, () => undefined);
}
