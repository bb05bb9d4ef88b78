/**
 * File descriptors (hardening item 3): the real backend child under a low
 * RLIMIT_NOFILE, our own frontend and net driver as the guest, real
 * loopback servers as the hosts it reaches.
 *
 *  - A guest that opens as many UDP flows as it can (4096: the default
 *    limit, above what fits in 1024 fds), then TCP flows up to the limit,
 *    still gets a new TCP flow, DNS answers and a frontend reconnect.
 *  - An EMFILE while receiving a control message's fds is reported as
 *    "out of file descriptors", as is one while accepting a frontend (once,
 *    without spinning), and the next frontend is served once fds are back.
 *  - A limit too low for a single flow of each kind stops the start.
 *  - An embedding program whose soft limit is below the hard one gets it
 *    raised, and flow limits it set beyond what fits are lowered, with a log
 *    line.
 */
import { spawnSync } from 'node:child_process';
import * as net from 'node:net';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { NetDriver, VhostUserFrontend, startBackend } from '../src/index.js';
import { native } from '../src/native/index.js';
import { REPO_ROOT, startBackendProcess, type BackendProcess } from './harness/backend.js';
import { killAllAfterAll, processFdLimit, setProcessFdLimit } from './harness/processes.js';
import {
  BROADCAST_MAC, DNS_IP, ETH_ARP, GATEWAY_IP, GUEST_IP, TCP_FLAGS, arpPacket, dnsMessage, ethernetFrame, guestTcpFrame, guestUdpFrame,
  parseFrame,
} from './helpers/packets.js';
import { loopbackUdp, stubDnsResolver } from './helpers/stack-rig.js';
import { recordingLogger, socketScratch, startNetDriver } from './helpers/vhost-user.js';
import { waitFor } from './helpers/wait.js';

killAllAfterAll(afterAll);
const { cleanups, socketPath } = socketScratch('vun-fd-');

/** The default UDP flow limit: more flows than 1024 fds can hold. */
const UDP_FLOWS_ASKED = 4096;

/** A TCP server on 127.0.0.1 that accepts and holds every connection. */
async function holdingTcpServer(): Promise<{ port: number; accepted: () => number }> {
  const sockets: net.Socket[] = [];
  const server = net.createServer((s) => {
    s.on('error', () => {});
    sockets.push(s);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanups.push(
    () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  );
  return { port: (server.address() as net.AddressInfo).port, accepted: () => sockets.length };
}

function arpRequestForGateway(): Uint8Array {
  return ethernetFrame({ dst: BROADCAST_MAC, etherType: ETH_ARP, payload: arpPacket({ tpa: GATEWAY_IP }) });
}

/** The guest's side of TCP handshakes and DNS: answers each SYN-ACK with an ACK, keeps RSTs and DNS answers. */
class GuestPeer {
  readonly synAcks = new Set<number>();
  readonly resets = new Set<number>();
  readonly dnsAnswers = new Map<number, Uint8Array>();
  constructor(private readonly driver: NetDriver, private readonly tcpPort: number) {
    driver.onFrame((frame) => this.onFrame(frame));
  }
  private onFrame(frame: Uint8Array): void {
    const f = parseFrame(frame);
    if (f.tcp && f.tcp.sport === this.tcpPort) {
      if ((f.tcp.flags & TCP_FLAGS.RST) !== 0) this.resets.add(f.tcp.dport);
      else if ((f.tcp.flags & (TCP_FLAGS.SYN | TCP_FLAGS.ACK)) === (TCP_FLAGS.SYN | TCP_FLAGS.ACK)) {
        this.synAcks.add(f.tcp.dport);
        this.driver.send([guestTcpFrame({ dst: GATEWAY_IP, sport: f.tcp.dport, dport: this.tcpPort, seq: 1001, ack: (f.tcp.seq + 1) >>> 0, flags: TCP_FLAGS.ACK })]);
      }
    }
    if (f.udp && f.ipv4?.src === DNS_IP && f.udp.sport === 53) {
      this.dnsAnswers.set((f.udp.payload[0]! << 8) | f.udp.payload[1]!, f.udp.payload);
    }
  }
  syn(sport: number): Uint8Array {
    return guestTcpFrame({ dst: GATEWAY_IP, sport, dport: this.tcpPort, seq: 1000, flags: TCP_FLAGS.SYN, options: { mss: 1460 } });
  }
  dns(id: number, sport: number): Uint8Array {
    return guestUdpFrame({ dst: DNS_IP, sport, dport: 53, payload: dnsMessage({ id, name: 'fd-limits.example' }) });
  }
}

/** The fd budget as logged at start: "N open, R reserved (...); flow limits TCP t, UDP u, ICMP p, DNS queries d". */
const BUDGET_LINE = /(\d+) open, (\d+) reserved .*flow limits TCP (\d+), UDP (\d+), ICMP (\d+), DNS queries (\d+)/;

function parseBudget(m: RegExpMatchArray): { open: number; reserved: number; tcp: number; udp: number; ping: number; dns: number } {
  return { open: Number(m[1]), reserved: Number(m[2]), tcp: Number(m[3]), udp: Number(m[4]), ping: Number(m[5]), dns: Number(m[6]) };
}

/** The backend's counters once `name` has reached `value` (polled through SIGUSR1). */
async function countersWhen(backend: BackendProcess, name: string, value: number, timeoutMs = 20_000): Promise<Record<string, number>> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const counters = await backend.counters();
    if ((counters[name] ?? 0) >= value) return counters;
    if (Date.now() > end) throw new Error(`counter ${name} at ${counters[name] ?? 0}, not ${value}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('file descriptors of the backend child', () => {
  it('a guest at its UDP and TCP flow limits leaves fds for a new TCP flow, DNS and a frontend reconnect (RLIMIT_NOFILE 1024)', async () => {
    let udpReceived = 0;
    const udpSink = await loopbackUdp(cleanups, () => udpReceived++);
    const udpPort = udpSink.address().port;
    const resolverSeen: number[] = [];
    const resolver = await stubDnsResolver(cleanups, resolverSeen);
    const tcp = await holdingTcpServer();

    const socket = socketPath();
    const backend = await startBackendProcess({
      socket,
      nofile: { soft: 1024, hard: 1024 },
      args: ['--dns-upstream', `127.0.0.1:${resolver.address().port}`],
    });
    cleanups.push(() => backend.stop());
    expect(backend.fdLimit()).toEqual({ soft: 1024, hard: 1024 });

    let fe = VhostUserFrontend.connect(socket, { style: 'qemu' });
    cleanups.push(() => fe.close().then(() => undefined));
    let driver = await startNetDriver(fe, cleanups);
    let peer = new GuestPeer(driver, tcp.port);

    // As many UDP flows as the guest can open: one datagram from each of 4096 source ports.
    const flood: Uint8Array[] = [];
    for (let i = 0; i < UDP_FLOWS_ASKED; i++) flood.push(guestUdpFrame({ dst: GATEWAY_IP, sport: 20000 + i, dport: udpPort, payload: new Uint8Array([i & 0xff]) }));
    driver.send(flood);
    await driver.drained();
    let counters = await countersWhen(backend, 'udp.rx.datagrams', UDP_FLOWS_ASKED);
    await waitFor(() => udpReceived > 0, 10_000, 'datagrams at the UDP server');
    // Every datagram got its flow and socket: none failed for want of an fd.
    expect(counters['udp.host.socket_error'] ?? 0).toBe(0);
    expect(counters['udp.flows.created']).toBe(UDP_FLOWS_ASKED);

    const limits = parseBudget(await backend.waitForLog(BUDGET_LINE));
    expect(counters['udp.flows.active']).toBe(limits.udp);
    expect(limits.reserved).toBe(62);
    expect(limits.open + limits.reserved + limits.tcp + limits.udp + limits.ping + limits.dns).toBeLessThanOrEqual(1024);

    // A new TCP flow still connects (SYN-ACK, not RST) with the UDP flows at their limit ...
    driver.send([peer.syn(40000)]);
    await waitFor(() => peer.synAcks.has(40000) || peer.resets.has(40000), 10_000, 'an answer to the SYN');
    expect(peer.resets.has(40000)).toBe(false);
    // ... and so do the rest, up to the TCP limit; one more is refused by the limit, not by EMFILE.
    const syns: Uint8Array[] = [];
    for (let i = 1; i < limits.tcp; i++) syns.push(peer.syn(40000 + i));
    driver.send(syns);
    await waitFor(() => tcp.accepted() === limits.tcp && peer.synAcks.size === limits.tcp, 20_000, `${limits.tcp} TCP connections`);
    expect(peer.resets.size).toBe(0);
    driver.send([peer.syn(40000 + limits.tcp)]);
    await waitFor(() => peer.resets.has(40000 + limits.tcp), 10_000, 'the RST beyond the TCP limit');
    counters = await backend.counters();
    expect(counters['tcp.flows.active']).toBe(limits.tcp);
    expect(counters['tcp.drop.flow_limit']).toBe(1);
    expect(Object.keys(counters).filter((k) => /EMFILE|socket_error/.test(k))).toEqual([]);

    // With every flow table full, the VM reconnects (memory, kick and call fds) ...
    driver.stop();
    await fe.close();
    await backend.waitForLog(/frontend disconnected/);
    fe = VhostUserFrontend.connect(socket, { style: 'qemu' });
    driver = await startNetDriver(fe, cleanups);
    peer = new GuestPeer(driver, tcp.port);
    driver.send([arpRequestForGateway()]);
    // ... and DNS works through the new session (its socket made only now).
    driver.send([peer.dns(0x4242, 5353)]);
    await waitFor(() => peer.dnsAnswers.has(0x4242), 10_000, 'the DNS answer');
    expect(resolverSeen).toHaveLength(1);
    expect((await backend.counters())['dns.tx.answers']).toBe(1);
    expect(backend.log()).not.toMatch(/EMFILE|too many file descriptors/);
  }, 90_000);

  it('an EMFILE on a control message or an accept is reported as "out of file descriptors", and the next frontend is served once fds are back', async () => {
    const socket = socketPath();
    const backend = await startBackendProcess({ socket, args: ['--dns-upstream', '127.0.0.1:9'] });
    cleanups.push(() => backend.stop());
    const limit = backend.fdLimit();
    const fe = VhostUserFrontend.connect(socket, { style: 'qemu' });
    cleanups.push(() => fe.close().then(() => undefined));
    await fe.connectAndStart();
    await fe.sync();

    // No fd can be opened in the backend any more (fds 0-2 are open, so a soft limit of 3 leaves no slot).
    backend.setFdLimit({ soft: 3, hard: limit.hard });
    let restored = false;
    const restore = (): void => {
      if (restored) return;
      restored = true;
      backend.setFdLimit(limit);
    };
    cleanups.push(restore);
    // A message carrying an fd: the kernel cannot install it in the backend.
    const call = native.eventfdCreate();
    cleanups.push(() => native.close(call));
    void fe.setVringCall(0, call).catch(() => {});
    const ended = await backend.waitForLog(/session ended: (.*)/);
    expect(ended[1]).toMatch(/^out of file descriptors \(EMFILE\)/);
    await fe.closed;

    // A frontend connecting now cannot be accepted: said once, and the loop does not spin on it.
    const next = VhostUserFrontend.connect(socket, { style: 'qemu' });
    cleanups.push(() => next.close().then(() => undefined));
    await backend.waitForLog(/cannot accept a frontend: out of file descriptors \(EMFILE\)/);
    restore();
    const driver = await startNetDriver(next, cleanups);
    driver.send([arpRequestForGateway()]);
    const reply = parseFrame(await driver.receive(5000));
    expect(reply.arp).toMatchObject({ op: 2, spa: GATEWAY_IP, tpa: GUEST_IP });
    expect(backend.log().match(/cannot accept a frontend/g)).toHaveLength(1);
    expect(backend.log()).not.toMatch(/accept failed|too many file descriptors/);
  }, 60_000);

  it('refuses to start when the fd limit leaves no room for flows', () => {
    const r = spawnSync('prlimit', ['--nofile=64:64', '--', process.execPath, '--import', 'tsx', path.join(REPO_ROOT, 'src', 'cli.ts'), '--socket', socketPath()], {
      cwd: REPO_ROOT,
      encoding: 'utf8',
      timeout: 20_000,
    });
    expect(r.stderr).toMatch(/file descriptor limit 64 too low: \d+ open and 62 reserved leave -?\d+ for guest flows/);
    expect(r.status).toBe(1);
  });
});

describe('file descriptors of an embedding program', () => {
  it('startBackend raises a soft limit below the hard one and lowers explicit flow limits to what fits, saying so', async () => {
    const original = processFdLimit(process.pid);
    const lowered = Math.min(4096, Math.floor(original.hard / 2));
    setProcessFdLimit(process.pid, { soft: lowered, hard: original.hard });
    cleanups.push(() => setProcessFdLimit(process.pid, original));
    const logs: string[] = [];
    const backend = await startBackend({
      socket: socketPath(),
      logger: recordingLogger(logs),
      config: { dnsUpstreams: [], maxTcpFlows: 1_000_000, maxUdpFlows: 1_000_000 },
    });
    cleanups.push(() => backend.close());
    const now = processFdLimit(process.pid);
    expect(now.soft).toBeGreaterThan(lowered);
    if (original.hard !== Infinity) expect(now.soft).toBe(original.hard);
    const line = logs.find((l) => BUDGET_LINE.test(l));
    expect(line).toContain(`limit ${now.soft} (soft limit raised from ${lowered})`);
    const budget = parseBudget(line!.match(BUDGET_LINE)!);
    const c = backend.stack.config;
    expect([c.maxTcpFlows, c.maxUdpFlows, c.maxPingFlows, c.maxDnsQueries]).toEqual([budget.tcp, budget.udp, budget.ping, budget.dns]);
    expect(c.maxTcpFlows).toBeLessThan(1_000_000);
    expect(budget.open + budget.reserved + c.maxTcpFlows + c.maxUdpFlows + c.maxPingFlows + c.maxDnsQueries).toBeLessThanOrEqual(now.soft);
    expect(logs).toContainEqual(expect.stringMatching(new RegExp(`^warn maxTcpFlows 1000000 lowered to ${c.maxTcpFlows}`)));
    expect(logs).toContainEqual(expect.stringMatching(new RegExp(`^warn maxUdpFlows 1000000 lowered to ${c.maxUdpFlows}`)));
    // The default ICMP limit was lowered in proportion but was not the caller's: no warning for it.
    expect(logs.filter((l) => l.includes('maxPingFlows'))).toEqual([]);
  });
});
