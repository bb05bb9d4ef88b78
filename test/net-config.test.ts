import { describe, it, expect } from 'vitest';
import { defaultStackConfig, resolveStackConfig } from '../src/net/config.js';
import { parseForwardSpec } from '../src/net/forward.js';
import { parseResolvConf, hostDnsUpstreams, parseDnsUpstream } from '../src/net/resolv-conf.js';
import { CounterSet } from '../src/net/counters.js';
import { FlowTable } from '../src/net/flow-table.js';
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
  it('evicts LRU and expires idle entries in order', () => {
    const removed: string[] = [];
    const t = new FlowTable<{ lastUsed: number }>(2, 100, (k, _f, why) => removed.push(`${k}:${why}`));
    t.insert('a', { lastUsed: 0 });
    t.insert('b', { lastUsed: 10 });
    t.touch('a', 20);
    t.insert('c', { lastUsed: 30 });
    expect(removed).toEqual(['b:evicted']);
    expect(t.expire(119)).toBe(0);
    expect(t.expire(120)).toBe(1);
    expect(removed).toEqual(['b:evicted', 'a:expired']);
    t.clear();
    expect(t.size).toBe(0);
  });
});
