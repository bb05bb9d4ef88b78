import { describe, it, expect } from 'vitest';
import { defaultStackConfig, resolveStackConfig } from '../src/net/config.js';
import { checkForwardSpec, checkForwards, formatForwardSpec, forwardsOverlap, parseForwardSpec } from '../src/net/forward.js';
import { parseResolvConf, hostDnsUpstreams, parseDnsUpstream } from '../src/net/resolv-conf.js';
import { CounterSet } from '../src/net/counters.js';
import { FlowEntry, FlowTable } from '../src/net/flows.js';
import { parseInAny } from '../src/net/inany.js';
import { ip } from './helpers/packets.js';
import { writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

describe('config', () => {
  it('has slirp defaults', () => {
    const c = defaultStackConfig();
    expect(c.network).toBe(ip('10.0.2.0'));
    expect(c.prefixLength).toBe(24);
    expect(c.gateway).toBe(ip('10.0.2.2'));
    expect(c.dns).toBe(ip('10.0.2.3'));
    expect(c.guestIp).toBe(ip('10.0.2.15'));
    expect(c.mtu).toBe(1500);
    expect(Array.from(c.gatewayMac)).toEqual([0x52, 0x55, 0x0a, 0x00, 0x02, 0x02]);
    expect(c.udpIdleTimeoutMs).toBe(180_000);
    expect(c.mapGatewayToLoopback).toBe(true);
  });
  it('validates', () => {
    expect(resolveStackConfig({ network: ip('192.168.76.0'), gateway: ip('192.168.76.1'), dns: ip('192.168.76.1') + 2, guestIp: ip('192.168.76.9') }).gateway)
      .toBe(ip('192.168.76.1'));
    expect(() => resolveStackConfig({ gateway: ip('10.0.3.2') })).toThrow(/gateway/);
    expect(() => resolveStackConfig({ dns: ip('10.0.2.2') })).toThrow(/distinct/);
    expect(() => resolveStackConfig({ guestIp: ip('10.0.2.255') })).toThrow(/broadcast/);
    expect(() => resolveStackConfig({ mtu: 500 })).toThrow(/mtu/);
    expect(() => resolveStackConfig({ mtu: 70000 })).toThrow(/mtu/);
    expect(() => resolveStackConfig({ prefixLength: 31 })).toThrow(/prefix/);
    expect(() => resolveStackConfig({ gatewayMac: new Uint8Array([1, 2, 3, 4, 5, 6]) })).toThrow(/unicast/);
    expect(() => resolveStackConfig({ maxUdpFlows: 0 })).toThrow(/maxUdpFlows/);
    expect(() => resolveStackConfig({ tcpInboundShare: 1 })).toThrow(/tcpInboundShare/);
    expect(() => resolveStackConfig({ tcpInboundShare: Number.NaN })).toThrow(/tcpInboundShare/);
    expect(() => resolveStackConfig({ tcpForwardShare: 0 })).toThrow(/tcpForwardShare/);
    expect(resolveStackConfig({ tcpForwardShare: 1 }).tcpForwardShare).toBe(1);
    expect(resolveStackConfig({}).tcpInboundShare).toBe(0.25);
    expect(() => resolveStackConfig({ dnsUpstreams: [{ address: '1.1.1.1', port: 0 }] })).toThrow(/port/);
    expect(() => resolveStackConfig({ hostname: 'bad host' })).toThrow(/hostname/);
    expect(resolveStackConfig({ mtu: undefined }).mtu).toBe(1500);
  });
});

describe('forward specs', () => {
  it('parses', () => {
    expect(parseForwardSpec('tcp:2222:22')).toEqual({ protocol: 'tcp', hostAddress: '127.0.0.1', hostPort: 2222, guestPort: 22, count: 1 });
    expect(parseForwardSpec('udp:127.0.0.1:5353:53')).toEqual({ protocol: 'udp', hostAddress: '127.0.0.1', hostPort: 5353, guestPort: 53, count: 1 });
    expect(parseForwardSpec('tcp::8080:80')).toEqual({ protocol: 'tcp', hostAddress: '127.0.0.1', hostPort: 8080, guestPort: 80, count: 1 });
    expect(parseForwardSpec('tcp:0.0.0.0:8080:80')).toEqual({ protocol: 'tcp', hostAddress: '0.0.0.0', hostPort: 8080, guestPort: 80, count: 1 });
    expect(parseForwardSpec('tcp:[::1]:8080:80')).toEqual({ protocol: 'tcp', hostAddress: '::1', hostPort: 8080, guestPort: 80, count: 1 });
    expect(parseForwardSpec('tcp:[::]:8080:80')).toEqual({ protocol: 'tcp', hostAddress: '::', hostPort: 8080, guestPort: 80, count: 1 });
    expect(parseForwardSpec('tcp:192.0.2.1:80:80')).toEqual({ protocol: 'tcp', hostAddress: '192.0.2.1', hostPort: 80, guestPort: 80, count: 1 });
  });
  it('parses ranges, mapped one to one', () => {
    expect(parseForwardSpec('tcp:8000-8010:8000-8010')).toEqual({ protocol: 'tcp', hostAddress: '127.0.0.1', hostPort: 8000, guestPort: 8000, count: 11 });
    expect(parseForwardSpec('tcp:9000-9010:80-90')).toEqual({ protocol: 'tcp', hostAddress: '127.0.0.1', hostPort: 9000, guestPort: 80, count: 11 });
    expect(parseForwardSpec('udp:[::1]:5000-5001:53-54')).toEqual({ protocol: 'udp', hostAddress: '::1', hostPort: 5000, guestPort: 53, count: 2 });
    expect(parseForwardSpec('tcp:7-7:8')).toEqual({ protocol: 'tcp', hostAddress: '127.0.0.1', hostPort: 7, guestPort: 8, count: 1 });
    for (const text of ['tcp:127.0.0.1:8000-8010:80-90', 'udp:[::1]:5353:53', 'tcp:0.0.0.0:65535:1']) {
      expect(formatForwardSpec(parseForwardSpec(text))).toBe(text);
    }
  });
  it('rejects', () => {
    const cases: [string, RegExp][] = [
      ['sctp:1:2', /must start with tcp: or udp:/],
      ['tcp:1', /is not tcp:\[HOSTADDR:\]HOSTPORTS:GUESTPORTS/],
      ['tcp:0:22', /host port 0 out of range/],
      ['tcp:70000:22', /out of range/],
      ['tcp:1.2.3:22:22', /bad host address "1.2.3"/],
      ['tcp:a:b', /bad host port "a"/],
      ['tcp:1:2:3:4', /is not/],
      ['tcp:300.1.1.1:1:2', /bad host address/],
      ['tcp:8000-8010:80-89', /host ports 8000-8010 \(11\) and guest ports 80-89 \(10\) must be ranges of the same length/],
      ['tcp:8010-8000:80-90', /host port range 8010-8000 runs backwards/],
      ['tcp:8000-:80', /bad host port ""/],
      ['tcp:8000-8001-8002:80-81', /bad host port "8001-8002"/],
      ['tcp:[::1:80:80', /bad host address/],
      ['tcp:[1.2.3.4]:80:80', /bad IPv6 host address/],
      ['tcp:[fe80::1%eth0]:80:80', /bad IPv6 host address/],
      ['udp:65535-65536:1-2', /out of range/],
    ];
    for (const [bad, message] of cases) expect(() => parseForwardSpec(bad), bad).toThrow(message);
  });
  it('overlap: same protocol, intersecting host ports, the same or a wildcard address', () => {
    const f = (text: string) => parseForwardSpec(text);
    const cases: [string, string, boolean][] = [
      ['tcp:8000-8010:80-90', 'tcp:8010:22', true],
      ['tcp:8000-8010:80-90', 'tcp:8011:22', false],
      ['tcp:8000-8010:80-90', 'tcp:7990-8000:1-11', true],
      ['tcp:8000-8010:80-90', 'udp:8005:22', false],
      ['tcp:127.0.0.1:80:80', 'tcp:127.0.0.2:80:80', false],
      ['tcp:127.0.0.1:80:80', 'tcp:0.0.0.0:80:81', true],
      ['tcp:[::1]:80:80', 'tcp:0.0.0.0:80:81', true],
      ['tcp:127.0.0.1:80:80', 'tcp:[::]:80:81', true],
      ['tcp:[::1]:80:80', 'tcp:[0:0::1]:80:81', true],
      ['tcp:[::1]:80:80', 'tcp:127.0.0.1:80:81', false],
      ['udp:192.0.2.1:53:53', 'udp:192.0.2.1:53:54', true],
    ];
    for (const [a, b, overlap] of cases) {
      expect([a, b, forwardsOverlap(f(a), f(b))]).toEqual([a, b, overlap]);
      expect([b, a, forwardsOverlap(f(b), f(a))]).toEqual([b, a, overlap]);
    }
    expect(() => checkForwards([f('tcp:1000-1001:1-2'), f('tcp:2000:1'), f('tcp:0.0.0.0:1001:5')])).toThrow(
      'forward: tcp:0.0.0.0:1001:5 overlaps tcp:127.0.0.1:1000-1001:1-2',
    );
  });
  it('checks specs a library caller builds', () => {
    const base = { protocol: 'tcp' as const, hostAddress: '127.0.0.1', hostPort: 80, guestPort: 80 };
    expect(() => checkForwardSpec(base)).not.toThrow();
    expect(() => checkForwardSpec({ ...base, count: 0 })).toThrow(/count must be a positive integer/);
    expect(() => checkForwardSpec({ ...base, hostPort: 65535, count: 2 })).toThrow(/host ports must lie in 1..65535/);
    expect(() => checkForwardSpec({ ...base, guestPort: 0 })).toThrow(/guest ports/);
    expect(() => checkForwardSpec({ ...base, hostAddress: 'localhost' })).toThrow(/bad host address "localhost"/);
    expect(() => checkForwardSpec({ ...base, protocol: 'sctp' as 'tcp' })).toThrow(/protocol must be tcp or udp/);
  });
});

describe('resolv.conf', () => {
  it('parses nameservers (loopback and v6 included) and search', () => {
    const r = parseResolvConf('# comment\nnameserver 127.0.0.53\nnameserver fe80::1%eth0\nnameserver bogus\nsearch a.example b.example.\noptions edns0\n');
    expect(r.nameservers).toEqual(['127.0.0.53', 'fe80::1']);
    expect(r.search).toEqual(['a.example', 'b.example']);
  });
  it('reads a file', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'resolv-'));
    const f = path.join(dir, 'resolv.conf');
    writeFileSync(f, 'nameserver 192.0.2.53\n');
    expect(hostDnsUpstreams(f)).toEqual([{ address: '192.0.2.53', port: 53 }]);
    expect(hostDnsUpstreams(path.join(dir, 'missing'))).toEqual([]);
  });
  it('parses --dns-upstream', () => {
    expect(parseDnsUpstream('127.0.0.1:5353')).toEqual({ address: '127.0.0.1', port: 5353 });
    expect(parseDnsUpstream('[::1]:53')).toEqual({ address: '::1', port: 53 });
    expect(parseDnsUpstream('::1')).toEqual({ address: '::1', port: 53 });
    expect(() => parseDnsUpstream('nope')).toThrow();
  });
});

describe('counters', () => {
  it('counts, snapshots and formats', () => {
    const c = new CounterSet();
    c.count('udp.flows.active');
    c.count('udp.flows.active');
    c.count('udp.flows.active', -1);
    c.count('ipv4.drop.bad_checksum', 1234);
    expect(c.snapshot()).toEqual({ 'ipv4.drop.bad_checksum': 1234, 'udp.flows.active': 1 });
    expect(c.format()).toBe('ipv4.drop.bad_checksum  1,234\n\nudp.flows.active        1');
    expect(c.sum('udp.')).toBe(1);
  });
});

describe('flow table', () => {
  const UDP = 17;
  const entry = (port: number, now: number): FlowEntry<string> => {
    const e = new FlowEntry<string>(UDP, 0x0a00020f, port, 0, 0, now);
    e.value = String.fromCharCode(96 + port); // 1 -> 'a'
    return e;
  };

  it('evicts LRU and expires idle entries in order', () => {
    const removed: string[] = [];
    const t = new FlowTable();
    const k = t.addClass<string>({ name: 'udp', capacity: 2, lru: true, idleTimeoutMs: 100, onRemove: (e, why) => removed.push(`${e.value}:${why}`) });
    t.insert(k, entry(1, 0));
    t.insert(k, entry(2, 10));
    t.touch(UDP, 0x0a00020f, 1, 0, 0, 20);
    t.insert(k, entry(3, 30));
    expect(removed).toEqual(['b:evicted']);
    expect(k.expire(119)).toBe(0);
    expect(k.expire(120)).toBe(1);
    expect(removed).toEqual(['b:evicted', 'a:expired']);
    k.clear();
    expect(k.size).toBe(0);
    expect(t.size).toBe(0);
  });

  it('one table for every protocol and both families: exact keys, classes with their own limits, counters per flow', () => {
    const t = new FlowTable();
    const removed: string[] = [];
    const tcp = t.addClass<string>({ name: 'tcp', capacity: 1, lru: false, idleTimeoutMs: 0, onRemove: (e) => removed.push(e.value) });
    const udp = t.addClass<string>({ name: 'udp', capacity: 8, lru: true, idleTimeoutMs: 0, onRemove: (e) => removed.push(e.value) });
    const v6 = parseInAny('2001:db8::15')!;
    const a = new FlowEntry<string>(6, 0x0a00020f, 1000, 0x0a000202, 80, 0);
    a.value = 'tcp4';
    const b = new FlowEntry<string>(17, 0x0a00020f, 1000, 0x0a000202, 80, 0);
    b.value = 'udp4';
    const c = new FlowEntry<string>(17, v6, 1000, parseInAny('2001:db8::2')!, 80, 0);
    c.value = 'udp6';
    expect(t.insert(tcp, a)).toBe(true);
    expect(t.insert(udp, b)).toBe(true);
    expect(t.insert(udp, c)).toBe(true);
    expect(t.size).toBe(3);
    expect(t.lookup<string>(6, 0x0a00020f, 1000, 0x0a000202, 80)?.value).toBe('tcp4');
    expect(t.lookup<string>(17, 0x0a00020f, 1000, 0x0a000202, 80)?.value).toBe('udp4');
    expect(t.lookup<string>(17, parseInAny('2001:db8::15')!, 1000, parseInAny('2001:db8::2')!, 80)?.value).toBe('udp6');
    expect(t.lookup(17, 0x0a00020f, 1000, 0x0a000202, 81)).toBeUndefined();
    // A class without LRU refuses when full; the other classes are not touched.
    const d = new FlowEntry<string>(6, 0x0a00020f, 1001, 0x0a000202, 80, 0);
    expect(t.insert(tcp, d)).toBe(false);
    expect(removed).toEqual([]);
    b.countFromGuest(100);
    b.countToGuest(40);
    b.countToGuest(2);
    expect([b.framesFromGuest, b.bytesFromGuest, b.framesToGuest, b.bytesToGuest]).toEqual([1, 100, 2, 42]);
    expect(t.remove(a)).toBe(true);
    expect(t.remove(a)).toBe(false);
    expect(removed).toEqual(['tcp4']);
    expect(a.live).toBe(false);
  });

  it('keys by a hash with a secret per table; entries whose hashes collide are told apart by their keys', () => {
    const one = new FlowTable([1, 2]);
    const other = new FlowTable([3, 4]);
    const hashes = (t: FlowTable): number[] => Array.from({ length: 64 }, (_, i) => t.hash(17, 0x0a00020f, 1024 + i, 0, 0));
    expect(hashes(one)).not.toEqual(hashes(other));
    expect(new Set(hashes(one)).size).toBeGreaterThan(60);
    // Many entries in a small hash space (30 bits): insert 5000, find each one back.
    const k = one.addClass<number>({ name: 'udp', capacity: 5000, lru: true, idleTimeoutMs: 0, onRemove: () => {} });
    for (let i = 0; i < 5000; i++) {
      const e = new FlowEntry<number>(17, 0x0a000200 + (i >> 8), i & 0xff, 0, 0, 0);
      e.value = i;
      one.insert(k, e);
    }
    for (let i = 0; i < 5000; i += 97) expect(one.lookup<number>(17, 0x0a000200 + (i >> 8), i & 0xff, 0, 0)?.value).toBe(i);
    // Every key in one bucket: still exact, and removal keeps the rest of the chain.
    const chained = new FlowTable();
    chained.hash = () => 7;
    const c = chained.addClass<number>({ name: 'udp', capacity: 10, lru: true, idleTimeoutMs: 0, onRemove: () => {} });
    const entries = [0, 1, 2].map((i) => {
      const e = new FlowEntry<number>(17, 0x0a00020f, 5000 + i, 0, 0, 0);
      e.value = i;
      chained.insert(c, e);
      return e;
    });
    chained.remove(entries[1]!);
    expect([0, 1, 2].map((i) => chained.lookup<number>(17, 0x0a00020f, 5000 + i, 0, 0)?.value)).toEqual([0, undefined, 2]);
    chained.remove(entries[0]!);
    expect(chained.lookup<number>(17, 0x0a00020f, 5002, 0, 0)?.value).toBe(2);
  });
});
