import { describe, it, expect } from 'vitest';
import { Stack } from '../src/net/stack.js';
import { CounterSet } from '../src/net/counters.js';
import { FakeLink } from './helpers/fake-link.js';
import { parseArp, writeArp } from '../src/net/wire/arp.js';
import { GUEST_MAC, GUEST_IP, GATEWAY_IP, DNS_IP, guestArpFrame, hex, ip, mac, parseFrame, guestIcmpFrame } from './helpers/packets.js';

function setup() {
  const link = new FakeLink();
  const counters = new CounterSet();
  const stack = new Stack({ link, counters, clock: { now: () => 0 }, tcp: null, ping: null, logger: () => {} });
  return { link, counters, stack };
}

describe('wire/arp', () => {
  it('parses a request byte fixture', () => {
    const a = parseArp(hex('0001 0800 06 04 0001 525400123456 0a00020f 000000000000 0a000202'));
    expect(typeof a).toBe('object');
    if (typeof a === 'string') return;
    expect(a.op).toBe(1);
    expect(a.spa).toBe(GUEST_IP);
    expect(a.tpa).toBe(GATEWAY_IP);
    expect(Array.from(a.sha)).toEqual(Array.from(GUEST_MAC));
  });
  it('rejects malformed packets with a reason', () => {
    expect(parseArp(hex('0001 0800 06 04 0001'))).toBe('truncated');
    expect(parseArp(hex('0006 0800 06 04 0001 525400123456 0a00020f 000000000000 0a000202'))).toBe('bad_hardware_type');
    expect(parseArp(hex('0001 86dd 06 04 0001 525400123456 0a00020f 000000000000 0a000202'))).toBe('bad_protocol_type');
    expect(parseArp(hex('0001 0800 08 04 0001 525400123456 0a00020f 000000000000 0a000202'))).toBe('bad_address_length');
    expect(parseArp(hex('0001 0800 06 04 0003 525400123456 0a00020f 000000000000 0a000202'))).toBe('bad_op');
  });
  it('writes the exact bytes', () => {
    const out = new Uint8Array(28);
    writeArp(out, 2, mac('52:55:0a:00:02:02'), ip('10.0.2.2'), GUEST_MAC, GUEST_IP);
    expect(Buffer.from(out).toString('hex')).toBe('0001080006040002' + '52550a000202' + '0a000202' + '525400123456' + '0a00020f');
  });
});

describe('ARP responder', () => {
  it('answers a request for the gateway with exact reply bytes', () => {
    const { link, counters, stack } = setup();
    stack.receive(guestArpFrame({ tpa: GATEWAY_IP }), null);
    expect(link.sent).toHaveLength(1);
    const expected = hex(
      '525400123456 52550a000202 0806' + // ethernet: to the guest, from the gateway MAC
      '0001 0800 06 04 0002 52550a000202 0a000202 525400123456 0a00020f', // ARP reply
    );
    expect(Buffer.from(link.sent[0]!.subarray(0, 42)).toString('hex')).toBe(Buffer.from(expected).toString('hex'));
    expect(link.sent[0]!.length).toBe(60);
    expect(link.sent[0]!.subarray(42).every((b) => b === 0)).toBe(true);
    expect(counters.get('arp.tx.reply')).toBe(1);
    expect(stack.guestMac && Buffer.from(stack.guestMac).toString('hex')).toBe('525400123456');
  });

  it('answers for the DNS address too', () => {
    const { link } = setup();
    link.sent.length = 0;
    const { stack } = { stack: new Stack({ link, clock: { now: () => 0 }, tcp: null, ping: null, logger: () => {} }) };
    stack.receive(guestArpFrame({ tpa: DNS_IP }), null);
    const f = parseFrame(link.sent[0]!);
    expect(f.arp?.op).toBe(2);
    expect(f.arp?.spa).toBe(DNS_IP);
    expect(f.arp?.sha).toBe('52:55:0a:00:02:02');
  });

  it('does not answer for other addresses, its own (DAD probe) or gratuitous ARP', () => {
    const { link, counters, stack } = setup();
    stack.receive(guestArpFrame({ tpa: ip('10.0.2.77') }), null);
    stack.receive(guestArpFrame({ tpa: ip('192.168.1.1') }), null);
    stack.receive(guestArpFrame({ spa: 0, tpa: GUEST_IP }), null); // probe
    stack.receive(guestArpFrame({ spa: GUEST_IP, tpa: GUEST_IP }), null); // gratuitous
    expect(link.sent).toHaveLength(0);
    expect(counters.get('arp.ignored')).toBe(3);
    expect(counters.get('arp.rx.gratuitous')).toBe(1);
  });

  it('learns the guest MAC from a gratuitous ARP and uses it for replies', () => {
    const { link, stack } = setup();
    const other = mac('02:00:00:aa:bb:cc');
    stack.receive(guestArpFrame({ sha: other, spa: GUEST_IP, tpa: GUEST_IP }), null);
    stack.receive(guestIcmpFrame(GATEWAY_IP, { id: 1, seq: 1, srcMac: other }), null);
    const f = parseFrame(link.sent[0]!);
    expect(f.eth.dst).toBe('02:00:00:aa:bb:cc');
    expect(f.icmp?.type).toBe(0);
  });

  it('drops and counts malformed ARP', () => {
    const { link, counters, stack } = setup();
    const frame = guestArpFrame({ tpa: GATEWAY_IP });
    frame[14 + 7] = 9; // op 9
    stack.receive(frame, null);
    stack.receive(frame.subarray(0, 30), null);
    expect(link.sent).toHaveLength(0);
    expect(counters.get('arp.drop.bad_op')).toBe(1);
    expect(counters.get('arp.drop.truncated')).toBe(1);
  });

  it('asks for the guest MAC with an ARP request when it must send before learning it', () => {
    const { link, counters, stack } = setup();
    expect(stack.out.send(GATEWAY_IP, GUEST_IP, 1, new Uint8Array(8))).toBe(false);
    expect(counters.get('eth.tx.no_guest_mac')).toBe(1);
    const f = parseFrame(link.sent[0]!);
    expect(f.eth.dst).toBe('ff:ff:ff:ff:ff:ff');
    expect(f.arp).toMatchObject({ op: 1, spa: GATEWAY_IP, tpa: GUEST_IP });
  });
});
