import { describe, it, expect } from 'vitest';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PcapWriter } from '../src/net/pcap.js';
import { Stack } from '../src/net/stack.js';
import { FakeLink } from './helpers/fake-link.js';
import { GATEWAY_IP, GUEST_MAC, guestArpFrame, guestIcmpFrame, hex } from './helpers/packets.js';
import { GATEWAY_IP6, GUEST_LL6, guestIcmpv6Frame, neighborSolicitation } from './helpers/packets6.js';
import { solicitedNodeMulticast } from '../src/net/ipv6-address.js';

function tmp(): { file: string; done: () => void } {
  const dir = mkdtempSync(path.join(tmpdir(), 'pcap-'));
  return { file: path.join(dir, 'out.pcap'), done: () => rmSync(dir, { recursive: true, force: true }) };
}

describe('pcap writer', () => {
  it('writes the classic header and records (byte fixture)', () => {
    const { file, done } = tmp();
    const w = new PcapWriter(file);
    w.writeFrame(hex('ffffffffffff 525400123456 0806 00'), 1_700_000_000_123.456);
    w.close();
    const b = readFileSync(file);
    expect(b.toString('hex')).toBe(
      'd4c3b2a1' + '0200' + '0400' + '00000000' + '00000000' + 'ffff0000' + '01000000' + // global header
      '00f15365' + '40e20100' + '0f000000' + '0f000000' + // ts 1700000000 s, 123456 us, caplen 15, len 15
      'ffffffffffff5254001234560806' + '00',
    );
    done();
  });

  it('flushes when its buffer fills and on close', () => {
    const { file, done } = tmp();
    const w = new PcapWriter(file);
    const frame = new Uint8Array(1500).fill(0xab);
    for (let i = 0; i < 100; i++) w.writeFrame(frame, i);
    expect(readFileSync(file).length).toBeGreaterThan(24); // some written before close
    w.close();
    expect(readFileSync(file).length).toBe(24 + 100 * (16 + 1500));
    done();
  });

  it('captures frames in and out at the stack boundary', () => {
    const { file, done } = tmp();
    const pcap = new PcapWriter(file);
    const link = new FakeLink();
    const stack = new Stack({ link, tcp: null, ping: null, pcap, wallClock: () => 1000, logger: () => {} });
    const frame = guestIcmpFrame(GATEWAY_IP, { id: 1, seq: 1 });
    stack.receive(frame, null);
    stack.batchEnd();
    pcap.close();
    const b = readFileSync(file);
    expect(pcap.frames).toBe(2);
    const first = b.subarray(24);
    expect(first.readUInt32LE(8)).toBe(frame.length);
    expect(Buffer.from(first.subarray(16, 16 + frame.length)).equals(Buffer.from(frame))).toBe(true);
    const second = first.subarray(16 + frame.length);
    expect(Buffer.from(second.subarray(16)).equals(Buffer.from(link.sent[0]!))).toBe(true);
    done();
  });

  it('captures IPv6 frames too: an NS in, its NA out', () => {
    const { file, done } = tmp();
    const pcap = new PcapWriter(file);
    const link = new FakeLink();
    const stack = new Stack({ link, tcp: null, ping: null, pcap, wallClock: () => 1000, logger: () => {} });
    const ns = guestIcmpv6Frame({ src: GUEST_LL6, dst: solicitedNodeMulticast(GATEWAY_IP6), type: 135, body: neighborSolicitation(GATEWAY_IP6, GUEST_MAC) });
    stack.receive(ns, null);
    stack.batchEnd();
    pcap.close();
    expect(pcap.frames).toBe(2);
    const b = readFileSync(file).subarray(24);
    expect(Buffer.from(b.subarray(16, 16 + ns.length)).equals(Buffer.from(ns))).toBe(true);
    const na = b.subarray(16 + ns.length + 16);
    expect(Buffer.from(na).equals(Buffer.from(link.sent[0]!))).toBe(true);
    expect(na[12]).toBe(0x86);
    done();
  });
});

import { spawnSync } from 'node:child_process';
const tcpdump = spawnSync('tcpdump', ['--version']).status === 0;

describe('pcap readable by tcpdump', () => {
  it.skipIf(!tcpdump)('tcpdump decodes an ARP exchange and an echo reply', () => {
    const { file, done } = tmp();
    const pcap = new PcapWriter(file);
    const link = new FakeLink();
    const stack = new Stack({ link, tcp: null, ping: null, pcap, wallClock: () => 1000, logger: () => {} });
    stack.receive(guestArpFrame({ tpa: GATEWAY_IP }), null);
    stack.receive(guestIcmpFrame(GATEWAY_IP, { id: 5, seq: 6 }), null);
    pcap.close();
    const r = spawnSync('tcpdump', ['-nn', '-r', file], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines).toHaveLength(4);
    expect(lines[0]).toMatch(/ARP, Request who-has 10\.0\.2\.2 tell 10\.0\.2\.15/);
    expect(lines[1]).toMatch(/ARP, Reply 10\.0\.2\.2 is-at 52:55:0a:00:02:02/);
    expect(lines[2]).toMatch(/10\.0\.2\.15 > 10\.0\.2\.2: ICMP echo request, id 5, seq 6/);
    expect(lines[3]).toMatch(/10\.0\.2\.2 > 10\.0\.2\.15: ICMP echo reply, id 5, seq 6/);
    done();
  });
});
