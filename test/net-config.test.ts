import { describe, it, expect } from 'vitest';
import { defaultStackConfig, resolveStackConfig } from '../src/net/config.js';
import { parseForwardSpec } from '../src/net/forward.js';
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
    expect(parseForwardSpec('tcp:2222:22')).toEqual({ protocol: 'tcp', hostAddress: '127.0.0.1', hostPort: 2222, guestPort: 22 });
    expect(parseForwardSpec('udp:127.0.0.1:5353:53')).toEqual({ protocol: 'udp', hostAddress: '127.0.0.1', hostPort: 5353, guestPort: 53 });
    expect(parseForwardSpec('tcp::8080:80')).toEqual({ protocol: 'tcp', hostAddress: '127.0.0.1', hostPort: 8080, guestPort: 80 });
    expect(parseForwardSpec('tcp:0.0.0.0:8080:80')).toEqual({ protocol: 'tcp', hostAddress: '0.0.0.0', hostPort: 8080, guestPort: 80 });
    expect(parseForwardSpec('tcp:[::1]:8080:80')).toEqual({ protocol: 'tcp', hostAddress: '::1', hostPort: 8080, guestPort: 80 });
  });
  it('rejects', () => {
    for (const bad of ['sctp:1:2', 'tcp:1', 'tcp:0:22', 'tcp:70000:22', 'tcp:1.2.3:22:22', 'tcp:a:b', 'tcp:1:2:3:4', 'tcp:300.1.1.1:1:2']) {
      expect(() => parseForwardSpec(bad), bad).toThrow(/forward/);
    }
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
