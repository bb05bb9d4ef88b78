import { describe, it, expect, afterEach } from 'vitest';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Stack } from '../src/net/stack.js';
import { CounterSet } from '../src/net/counters.js';
import type { PingIO } from '../src/net/icmp.js';
import { parseIcmp } from '../src/net/wire/icmp.js';
import { FakeLink } from './helpers/fake-link.js';
import {
  DNS_IP, ETH_IPV4, ethernetFrame, GATEWAY_IP, GUEST_IP, guestIcmpFrame, guestUdpFrame, hex, icmpMessage, ip, ipv4Packet, parseFrame, bytes,
} from './helpers/packets.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

function setup(ping: PingIO | null | 'native' = null) {
  const link = new FakeLink();
  const counters = new CounterSet();
  const logs: string[] = [];
  const clock = { t: 0, now() { return this.t; } };
  const stack = new Stack({ link, counters, clock, tcp: null, logger: (m) => logs.push(m), ...(ping === 'native' ? {} : { ping }) });
  cleanups.push(() => stack.close());
  return { link, counters, stack, logs, clock };
}

describe('wire/icmp', () => {
  it('parses an echo request fixture and checks the checksum', () => {
    const m = parseIcmp(hex('0800 f7fd 0001 0001'));
    expect(m).toMatchObject({ type: 8, code: 0, id: 1, seq: 1 });
    expect(parseIcmp(hex('0800 f7fe 0001 0001'))).toBe('bad_checksum');
    expect(parseIcmp(hex('0800 f7fd 0001'))).toBe('truncated');
  });
});

describe('ICMP', () => {
  it('answers echo to the gateway with exact bytes', () => {
    const { link, counters, stack } = setup();
    stack.receive(guestIcmpFrame(GATEWAY_IP, { id: 0x1234, seq: 7, payload: bytes('abcdefgh') }), null);
    expect(link.sent).toHaveLength(1);
    const frame = link.sent[0]!;
    // Ethernet + IPv4 header (id 2 is the stack's first) + ICMP echo reply.
    expect(Buffer.from(frame.subarray(0, 14)).toString('hex')).toBe('525400123456' + '52550a000202' + '0800');
    const f = parseFrame(frame);
    expect(f.ipv4).toMatchObject({ src: GATEWAY_IP, dst: GUEST_IP, ttl: 64, protocol: 1, checksumOk: true, totalLength: 36 });
    const expectedIcmp = icmpMessage({ type: 0, id: 0x1234, seq: 7, payload: bytes('abcdefgh') });
    expect(Buffer.from(f.ipv4!.payload).toString('hex')).toBe(Buffer.from(expectedIcmp).toString('hex'));
    expect(counters.get('icmp.echo.local')).toBe(1);
  });

  it('answers echo to the DNS address; drops bad checksums and odd types; counts guest ICMP errors', () => {
    const { link, counters, stack } = setup();
    stack.receive(guestIcmpFrame(DNS_IP, { id: 1, seq: 1 }), null);
    expect(parseFrame(link.sent[0]!).ipv4?.src).toBe(DNS_IP);
    stack.receive(guestIcmpFrame(GATEWAY_IP, { id: 1, seq: 2, badChecksum: true }), null);
    stack.receive(guestIcmpFrame(GATEWAY_IP, { type: 13, id: 1, seq: 2 }), null); // timestamp request
    const quoted = ipv4Packet({ src: GATEWAY_IP, dst: GUEST_IP, protocol: 17, payload: new Uint8Array(8) });
    stack.receive(guestIcmpFrame(GATEWAY_IP, { type: 3, code: 3, rest: 0, payload: quoted }), null);
    expect(link.sent).toHaveLength(1);
    expect(counters.get('icmp.drop.bad_checksum')).toBe(1);
    expect(counters.get('icmp.drop.type')).toBe(1);
    expect(counters.get('icmp.rx.error')).toBe(1);
  });

  it('never sends an ICMP error about an ICMP error, a broadcast or a non-first fragment', () => {
    const { link, counters, stack } = setup();
    stack.receive(guestIcmpFrame(GATEWAY_IP, { id: 1, seq: 1 }), null); // learn MAC
    link.take();
    const errPacket = ipv4Packet({ dst: GATEWAY_IP, protocol: 1, payload: icmpMessage({ type: 3, code: 1, rest: 0 }) });
    stack.out.sendIcmpError(3, 3, errPacket);
    stack.out.sendIcmpError(3, 3, ipv4Packet({ dst: 0xffffffff, protocol: 17, payload: new Uint8Array(8) }));
    stack.out.sendIcmpError(3, 3, ipv4Packet({ dst: GATEWAY_IP, protocol: 17, payload: new Uint8Array(8), fragmentOffset: 8 }));
    stack.out.sendIcmpError(3, 3, ipv4Packet({ src: 0, dst: GATEWAY_IP, protocol: 17, payload: new Uint8Array(8) }));
    expect(link.sent).toHaveLength(0);
    expect(counters.get('icmp.tx.error_suppressed')).toBe(4);
    // An echo request is fine to quote.
    const echo = ipv4Packet({ dst: ip('192.0.2.1'), protocol: 1, payload: icmpMessage({ id: 5, seq: 5, payload: new Uint8Array(40) }) });
    stack.out.sendIcmpError(3, 1, echo, GATEWAY_IP);
    const f = parseFrame(link.sent[0]!);
    expect(f.icmp).toMatchObject({ type: 3, code: 1, checksumOk: true });
    expect(f.icmp!.payload.length).toBe(28);
    expect(Buffer.from(f.icmp!.payload).equals(Buffer.from(echo.subarray(0, 28)))).toBe(true);
  });

  it('refuses echo to in-network addresses and under restrict', () => {
    const { counters, stack } = setup();
    stack.receive(guestIcmpFrame(ip('10.0.2.44'), { id: 1, seq: 1 }), null);
    expect(counters.get('icmp.drop.nat_guest_network')).toBe(1);
  });

  const range = readFileSync('/proc/sys/net/ipv4/ping_group_range', 'utf8').trim().split(/\s+/).map(Number);
  const gid = process.getgid?.() ?? 0;
  const pingAllowedHere = gid >= range[0]! && gid <= range[1]!;

  it.skipIf(pingAllowedHere)('counts and logs once when ping sockets are not permitted (real addon, host namespace)', async () => {
    const { counters, stack, logs } = setup('native');
    await stack.start(); // loads the native ping IO
    // 198.51.100.1 (TEST-NET-2): the socket is refused before anything could be sent.
    stack.receive(guestIcmpFrame(ip('198.51.100.1'), { id: 1, seq: 1 }), null);
    stack.receive(guestIcmpFrame(ip('198.51.100.1'), { id: 1, seq: 2 }), null);
    expect(counters.get('icmp.ping.not_permitted'), JSON.stringify([logs, counters.snapshot()])).toBe(2);
    expect(logs.filter((l) => /not permitted/.test(l))).toHaveLength(1);
    expect(stack.icmp.flowCount).toBe(0);
  });

  it('maps ping-socket replies back to the guest id and destination (fake PingIO), with idle expiry', () => {
    const sent: { msg: Uint8Array; addr: string }[] = [];
    let deliver: ((m: Uint8Array, a: string) => void) | null = null;
    let closed = 0;
    const io: PingIO = {
      open(onMessage) {
        deliver = onMessage;
        return { send: (msg, addr) => (sent.push({ msg: msg.slice(), addr }), true), close: () => void closed++ };
      },
    };
    const { link, stack, clock } = setup(io);
    stack.receive(guestIcmpFrame(ip('192.0.2.9'), { id: 0xbeef, seq: 3, payload: bytes('data') }), null);
    expect(sent[0]!.addr).toBe('192.0.2.9');
    // The kernel answers with its own identifier (0x0042).
    const reply = icmpMessage({ type: 0, id: 0x0042, seq: 3, payload: bytes('data') });
    deliver!(reply, '192.0.2.9');
    const f = parseFrame(link.sent.at(-1)!);
    expect(f.ipv4).toMatchObject({ src: ip('192.0.2.9'), dst: GUEST_IP });
    expect(f.icmp).toMatchObject({ type: 0, id: 0xbeef, seq: 3, checksumOk: true });
    expect(stack.icmp.flowCount).toBe(1);
    clock.t = 60_000;
    stack.tick();
    expect(stack.icmp.flowCount).toBe(0);
    expect(closed).toBe(1);
  });

  const canUnshare = spawnSync('unshare', ['-n', 'true']).status === 0;

  it.skipIf(!canUnshare)('gets a real echo reply through a ping socket inside a network namespace', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'vun-ping-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const src = path.resolve(here, '..', 'src');
    const script = path.join(dir, 'child.mts');
    writeFileSync(script, `
      import { Stack } from ${JSON.stringify(path.join(src, 'net/stack.ts'))};
      import { CounterSet } from ${JSON.stringify(path.join(src, 'net/counters.ts'))};
      import { FakeLink } from ${JSON.stringify(path.join(here, 'helpers/fake-link.ts'))};
      import { guestIcmpFrame, ip, parseFrame, bytes } from ${JSON.stringify(path.join(here, 'helpers/packets.ts'))};
      const link = new FakeLink();
      const counters = new CounterSet();
      const stack = new Stack({ link, counters, tcp: null, logger: (m) => console.error(m) });
      await stack.start();
      stack.receive(guestIcmpFrame(ip('198.51.100.1'), { id: 0x4242, seq: 9, payload: bytes('netns ping') }), null);
      const end = Date.now() + 3000;
      while (link.sent.length === 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
      const f = link.sent[0] ? parseFrame(link.sent[0]) : null;
      console.log(JSON.stringify({ icmp: f?.icmp ? { type: f.icmp.type, id: f.icmp.id, seq: f.icmp.seq, ok: f.icmp.checksumOk, data: Buffer.from(f.icmp.payload).toString() } : null,
        src: f?.ipv4?.src, counters: counters.snapshot() }));
      stack.close();
      process.exit(0);
    `);
    const tsx = path.resolve(here, '..', 'node_modules', '.bin', 'tsx');
    const r = spawnSync('unshare', ['-n', 'sh', '-c',
      `ip link set lo up && ip addr add 198.51.100.1/32 dev lo && sysctl -qw net.ipv4.ping_group_range="0 2147483647" && exec ${tsx} ${script}`],
    { encoding: 'utf8', timeout: 30_000 });
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout.trim().split('\n').at(-1)!);
    expect(out.icmp).toEqual({ type: 0, id: 0x4242, seq: 9, ok: true, data: 'netns ping' });
    expect(out.src).toBe(ip('198.51.100.1'));
    expect(out.counters['icmp.ping.rx']).toBe(1);
    // The host's own setting is untouched.
    expect(readFileSync('/proc/sys/net/ipv4/ping_group_range', 'utf8').trim().split(/\s+/).map(Number)).toEqual(range);
  }, 40_000);

  it('sends protocol unreachable for unknown protocols to the gateway', () => {
    const { link, counters, stack } = setup();
    stack.receive(guestUdpFrame({ dst: ip('10.0.2.99'), sport: 1, dport: 1, payload: new Uint8Array(0) }), null); // learn MAC
    link.take();
    stack.receive(ethernetFrame({ etherType: ETH_IPV4, payload: ipv4Packet({ dst: GATEWAY_IP, protocol: 47, payload: new Uint8Array(12) }) }), null);
    expect(counters.get('ipv4.drop.protocol')).toBe(1);
    expect(parseFrame(link.sent[0]!).icmp).toMatchObject({ type: 3, code: 2 });
  });
});
