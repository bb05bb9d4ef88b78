/**
 * Frame builders and parsers for frame-level tests of the stack.
 *
 * Builders produce byte-exact frames as a guest would send them (checksums
 * filled in unless told otherwise); parsers take the frames the stack sent
 * (FakeLink.sent) apart so tests can assert on fields. Self-contained: only
 * the shared checksum and address helpers are used, so a bug in the stack's
 * own wire modules cannot hide behind the same bug here.
 *
 * Addresses are numbers (10.0.2.15 is 0x0a00020f) like everywhere in the
 * stack; `ip('10.0.2.15')` and `mac('52:54:00:12:34:56')` convert literals.
 */
import { checksum, l4Checksum } from '../../src/net/wire/checksum.js';
import { parseIPv4, ipv4ToString, readIPv4, writeIPv4 } from '../../src/net/ip-address.js';

// ---- constants ---------------------------------------------------------

export const ETH_IPV4 = 0x0800;
export const ETH_ARP = 0x0806;
export const ETH_IPV6 = 0x86dd;
export const PROTO_ICMP = 1;
export const PROTO_TCP = 6;
export const PROTO_UDP = 17;

export const TCP_FLAGS = { FIN: 0x01, SYN: 0x02, RST: 0x04, PSH: 0x08, ACK: 0x10, URG: 0x20, ECE: 0x40, CWR: 0x80 } as const;

export function ip(text: string): number {
  const v = parseIPv4(text);
  if (v === null) throw new Error(`bad IPv4 literal ${text}`);
  return v;
}

export function mac(text: string): Uint8Array {
  const parts = text.split(':');
  if (parts.length !== 6) throw new Error(`bad MAC literal ${text}`);
  return Uint8Array.from(parts.map((p) => parseInt(p, 16)));
}

export function macString(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join(':');
}

export const GUEST_MAC = mac('52:54:00:12:34:56');
export const GATEWAY_MAC = mac('52:55:0a:00:02:02');
export const BROADCAST_MAC = mac('ff:ff:ff:ff:ff:ff');
export const GUEST_IP = ip('10.0.2.15');
export const GATEWAY_IP = ip('10.0.2.2');
export const DNS_IP = ip('10.0.2.3');

export { ipv4ToString };

function be16(buf: Uint8Array, off: number, v: number): void {
  buf[off] = (v >>> 8) & 0xff;
  buf[off + 1] = v & 0xff;
}
function be32(buf: Uint8Array, off: number, v: number): void {
  new DataView(buf.buffer, buf.byteOffset, buf.byteLength).setUint32(off, v >>> 0, false);
}
function rd16(buf: Uint8Array, off: number): number {
  return (buf[off]! << 8) | buf[off + 1]!;
}
function rd32(buf: Uint8Array, off: number): number {
  return new DataView(buf.buffer, buf.byteOffset, buf.byteLength).getUint32(off, false);
}

export function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

export function bytes(text: string): Uint8Array {
  return new TextEncoder().encode(text);
}

/** Hex dump literal to bytes ("0a 00 02 0f" or "0a00020f"). */
export function hex(text: string): Uint8Array {
  const clean = text.replace(/[^0-9a-fA-F]/g, '');
  const out = new Uint8Array(clean.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(clean.slice(i * 2, i * 2 + 2), 16);
  return out;
}

// ---- builders ----------------------------------------------------------

export interface EthernetOptions {
  dst?: Uint8Array;
  src?: Uint8Array;
  etherType: number;
  payload: Uint8Array;
  /** Pad the frame to at least this many bytes (e.g. 60, as a NIC would). */
  padTo?: number;
}

export function ethernetFrame(o: EthernetOptions): Uint8Array {
  const len = Math.max(14 + o.payload.length, o.padTo ?? 0);
  const f = new Uint8Array(len);
  f.set(o.dst ?? GATEWAY_MAC, 0);
  f.set(o.src ?? GUEST_MAC, 6);
  be16(f, 12, o.etherType);
  f.set(o.payload, 14);
  return f;
}

export interface Ipv4Options {
  src?: number;
  dst: number;
  protocol: number;
  payload: Uint8Array;
  ttl?: number;
  id?: number;
  tos?: number;
  df?: boolean;
  mf?: boolean;
  /** Fragment offset in bytes (multiple of 8). */
  fragmentOffset?: number;
  /** IP options (padded to 4 bytes by the caller). */
  options?: Uint8Array;
  badChecksum?: boolean;
  /** Override the total length field. */
  totalLength?: number;
  version?: number;
  ihl?: number;
}

export function ipv4Packet(o: Ipv4Options): Uint8Array {
  const optLen = o.options?.length ?? 0;
  const hl = 20 + optLen;
  const p = new Uint8Array(hl + o.payload.length);
  p[0] = ((o.version ?? 4) << 4) | (o.ihl ?? hl / 4);
  p[1] = o.tos ?? 0;
  be16(p, 2, o.totalLength ?? p.length);
  be16(p, 4, o.id ?? 0);
  const frag = ((o.fragmentOffset ?? 0) >>> 3) | (o.df ? 0x4000 : 0) | (o.mf ? 0x2000 : 0);
  be16(p, 6, frag);
  p[8] = o.ttl ?? 64;
  p[9] = o.protocol;
  writeIPv4(p, 12, o.src ?? GUEST_IP);
  writeIPv4(p, 16, o.dst);
  if (o.options) p.set(o.options, 20);
  const c = checksum(p.subarray(0, hl));
  be16(p, 10, o.badChecksum ? c ^ 0x5555 : c);
  p.set(o.payload, hl);
  return p;
}

export interface UdpOptions {
  src?: number;
  dst: number;
  sport: number;
  dport: number;
  payload: Uint8Array;
  /** 'auto' (default) computes it, 'zero' leaves 0 (no checksum), 'bad' corrupts it. */
  checksum?: 'auto' | 'zero' | 'bad';
  /** Override the UDP length field. */
  length?: number;
}

/** A UDP datagram (header + payload), checksum over the IPv4 pseudo-header. */
export function udpDatagram(o: UdpOptions): Uint8Array {
  return udpWithChecksum(o, (d) => l4Checksum(o.src ?? GUEST_IP, o.dst, PROTO_UDP, d));
}

/** A UDP datagram whose checksum is `sum` over it (0 goes out as 0xffff), as `o.checksum` asks: for either family's pseudo-header. */
export function udpWithChecksum(o: Omit<UdpOptions, 'src' | 'dst'>, sum: (datagram: Uint8Array) => number): Uint8Array {
  const d = new Uint8Array(8 + o.payload.length);
  be16(d, 0, o.sport);
  be16(d, 2, o.dport);
  be16(d, 4, o.length ?? d.length);
  d.set(o.payload, 8);
  const mode = o.checksum ?? 'auto';
  if (mode !== 'zero') {
    let c = sum(d);
    if (c === 0) c = 0xffff;
    be16(d, 6, mode === 'bad' ? c ^ 0x0101 : c);
  }
  return d;
}

export interface TcpOptionsSpec {
  mss?: number;
  wscale?: number;
  sackPermitted?: boolean;
  timestamp?: [number, number];
  /** SACK blocks [left, right]. */
  sack?: [number, number][];
}

/** Encode TCP options (NOP-padded to a multiple of 4). */
export function tcpOptions(o: TcpOptionsSpec): Uint8Array {
  const out: number[] = [];
  if (o.mss !== undefined) out.push(2, 4, (o.mss >>> 8) & 0xff, o.mss & 0xff);
  if (o.sackPermitted) out.push(4, 2);
  if (o.timestamp) {
    const t = new Uint8Array(10);
    t[0] = 8;
    t[1] = 10;
    be32(t, 2, o.timestamp[0]);
    be32(t, 6, o.timestamp[1]);
    out.push(...t);
  }
  if (o.wscale !== undefined) out.push(1, 3, 3, o.wscale);
  if (o.sack && o.sack.length > 0) {
    const s = new Uint8Array(2 + 8 * o.sack.length);
    s[0] = 5;
    s[1] = s.length;
    o.sack.forEach(([l, r], i) => {
      be32(s, 2 + i * 8, l);
      be32(s, 6 + i * 8, r);
    });
    out.push(1, 1, ...s);
  }
  while (out.length % 4 !== 0) out.push(1);
  return Uint8Array.from(out);
}

export interface TcpSegmentOptions {
  src?: number;
  dst: number;
  sport: number;
  dport: number;
  seq?: number;
  ack?: number;
  /** Bitwise OR of TCP_FLAGS values. */
  flags: number;
  window?: number;
  urgent?: number;
  /** Raw option bytes (see tcpOptions), padded to a multiple of 4. */
  options?: Uint8Array | TcpOptionsSpec;
  payload?: Uint8Array;
  badChecksum?: boolean;
  /** Override the data offset (in 32-bit words). */
  dataOffset?: number;
}

/** A TCP segment (header + payload), checksum over the IPv4 pseudo-header. */
export function tcpSegment(o: TcpSegmentOptions): Uint8Array {
  const opts = o.options instanceof Uint8Array ? o.options : o.options ? tcpOptions(o.options) : new Uint8Array(0);
  const payload = o.payload ?? new Uint8Array(0);
  const hl = 20 + opts.length;
  const s = new Uint8Array(hl + payload.length);
  be16(s, 0, o.sport);
  be16(s, 2, o.dport);
  be32(s, 4, o.seq ?? 0);
  be32(s, 8, o.ack ?? 0);
  s[12] = (o.dataOffset ?? hl / 4) << 4;
  s[13] = o.flags & 0xff;
  be16(s, 14, o.window ?? 65535);
  be16(s, 18, o.urgent ?? 0);
  s.set(opts, 20);
  s.set(payload, hl);
  const c = l4Checksum(o.src ?? GUEST_IP, o.dst, PROTO_TCP, s);
  be16(s, 16, o.badChecksum ? c ^ 0x0101 : c);
  return s;
}

export interface IcmpOptions {
  type?: number;
  code?: number;
  id?: number;
  seq?: number;
  payload?: Uint8Array;
  badChecksum?: boolean;
  /** For error messages: the 4 "rest of header" bytes replace id/seq. */
  rest?: number;
}

/** An ICMP message; type 8 (echo request) by default. */
export function icmpMessage(o: IcmpOptions = {}): Uint8Array {
  const payload = o.payload ?? new Uint8Array(0);
  const m = new Uint8Array(8 + payload.length);
  m[0] = o.type ?? 8;
  m[1] = o.code ?? 0;
  if (o.rest !== undefined) be32(m, 4, o.rest);
  else {
    be16(m, 4, o.id ?? 0);
    be16(m, 6, o.seq ?? 0);
  }
  m.set(payload, 8);
  const c = checksum(m);
  be16(m, 2, o.badChecksum ? c ^ 0x0101 : c);
  return m;
}

export interface ArpOptions {
  op?: number;
  sha?: Uint8Array;
  spa?: number;
  tha?: Uint8Array;
  tpa: number;
}

/** An ARP packet for Ethernet/IPv4 (28 bytes); request by default. */
export function arpPacket(o: ArpOptions): Uint8Array {
  const a = new Uint8Array(28);
  be16(a, 0, 1);
  be16(a, 2, 0x0800);
  a[4] = 6;
  a[5] = 4;
  be16(a, 6, o.op ?? 1);
  a.set(o.sha ?? GUEST_MAC, 8);
  writeIPv4(a, 14, o.spa ?? GUEST_IP);
  a.set(o.tha ?? new Uint8Array(6), 18);
  writeIPv4(a, 24, o.tpa);
  return a;
}

export interface DhcpOptions {
  op?: number;
  xid: number;
  secs?: number;
  /** 0x8000 = broadcast. */
  flags?: number;
  ciaddr?: number;
  yiaddr?: number;
  siaddr?: number;
  giaddr?: number;
  chaddr?: Uint8Array;
  /** Options in order; the end option (255) is appended. Message type (53) is just an option here. */
  options: [number, Uint8Array | number[]][];
  /** Omit/corrupt the magic cookie. */
  cookie?: number;
  /** Pad the whole message to at least this length (BOOTP clients pad to 300). */
  padTo?: number;
  /** Do not append the end option. */
  noEnd?: boolean;
}

export const DHCP = { DISCOVER: 1, OFFER: 2, REQUEST: 3, DECLINE: 4, ACK: 5, NAK: 6, RELEASE: 7, INFORM: 8 } as const;

/** A BOOTP/DHCP message (the UDP payload). */
export function dhcpMessage(o: DhcpOptions): Uint8Array {
  const opt: number[] = [];
  for (const [code, value] of o.options) opt.push(code, value.length, ...value);
  if (!o.noEnd) opt.push(255);
  const len = Math.max(240 + opt.length, o.padTo ?? 0);
  const m = new Uint8Array(len);
  m[0] = o.op ?? 1;
  m[1] = 1;
  m[2] = 6;
  m[3] = 0;
  be32(m, 4, o.xid);
  be16(m, 8, o.secs ?? 0);
  be16(m, 10, o.flags ?? 0);
  writeIPv4(m, 12, o.ciaddr ?? 0);
  writeIPv4(m, 16, o.yiaddr ?? 0);
  writeIPv4(m, 20, o.siaddr ?? 0);
  writeIPv4(m, 24, o.giaddr ?? 0);
  m.set(o.chaddr ?? GUEST_MAC, 28);
  be32(m, 236, o.cookie ?? 0x63825363);
  m.set(opt, 240);
  return m;
}

/** IPv4 address as option bytes. */
export function ipBytes(address: number): number[] {
  return [address >>> 24, (address >>> 16) & 0xff, (address >>> 8) & 0xff, address & 0xff];
}

export interface DnsMessageOptions {
  id: number;
  /** Header flags; default 0x0100 (a query, recursion desired). */
  flags?: number;
  /** The question's name (default example.com), type (default 1, A) and class (default 1, IN). */
  name?: string;
  qtype?: number;
  qclass?: number;
  /** Section counts as written in the header (default: one question, nothing else). */
  qd?: number;
  an?: number;
  ns?: number;
  ar?: number;
  /** Raw bytes after the question. */
  rest?: number[];
}

/** A DNS message (the UDP payload, or a TCP message without its length): header, one question, then `rest`. */
export function dnsMessage(o: DnsMessageOptions): Uint8Array {
  const labels = (o.name ?? 'example.com').split('.').flatMap((l) => [l.length, ...new TextEncoder().encode(l)]);
  const m = new Uint8Array(12 + labels.length + 5 + (o.rest?.length ?? 0));
  be16(m, 0, o.id);
  be16(m, 2, o.flags ?? 0x0100);
  be16(m, 4, o.qd ?? 1);
  be16(m, 6, o.an ?? 0);
  be16(m, 8, o.ns ?? 0);
  be16(m, 10, o.ar ?? 0);
  m.set(labels, 12);
  let off = 12 + labels.length + 1; // the root label is the 0 already there
  be16(m, off, o.qtype ?? 1);
  be16(m, off + 2, o.qclass ?? 1);
  off += 4;
  m.set(o.rest ?? [], off);
  return m;
}

/**
 * The answer a resolver gives to `query` (uncompressed question, as
 * dnsMessage writes it): the same id and question, QR/RD/RA set, one A
 * record for the dotted `address` (TTL 60) naming the question by a pointer.
 */
export function dnsAnswer(query: Uint8Array, address: string): Uint8Array {
  let end = 12;
  while (end < query.length && query[end]! !== 0) end += 1 + query[end]!;
  end += 1 + 4;
  if (end > query.length) throw new Error('dnsAnswer: not a query dnsMessage could have written');
  const m = new Uint8Array(end + 16);
  m.set(query.subarray(0, end));
  be16(m, 2, 0x8180);
  be16(m, 4, 1);
  be16(m, 6, 1);
  be16(m, 8, 0);
  be16(m, 10, 0);
  m.set([0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, ...ipBytes(ip(address))], end);
  return m;
}

/** The A record's address in an answer built like dnsAnswer (its last four bytes), dotted. */
export function dnsAnswerAddress(answer: Uint8Array): string {
  return ipv4ToString(readIPv4(answer, answer.length - 4));
}

/** An EDNS0 OPT pseudo-record (root name, type 41, payload size 1232, no options), for `rest` with ar: 1. */
export const DNS_OPT_RR = [0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0];

/** A DNS message behind its two-byte length, as DNS over TCP carries it. */
export function dnsTcpFrame(msg: Uint8Array): Uint8Array {
  return concat(Uint8Array.from([msg.length >>> 8, msg.length & 0xff]), msg);
}

/** The whole length-prefixed DNS messages at the start of a TCP byte stream, without their lengths. */
export function dnsTcpMessages(stream: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let pos = 0; pos + 2 <= stream.length;) {
    const len = rd16(stream, pos);
    if (pos + 2 + len > stream.length) break;
    out.push(stream.subarray(pos + 2, pos + 2 + len));
    pos += 2 + len;
  }
  return out;
}

// ---- whole guest frames -------------------------------------------------

export interface GuestFrameOptions {
  srcMac?: Uint8Array;
  dstMac?: Uint8Array;
  src?: number;
  ttl?: number;
  id?: number;
  df?: boolean;
}

/** Ethernet + IPv4 around an L4 payload, from the guest to the gateway MAC. */
export function guestIPv4Frame(protocol: number, dst: number, l4: Uint8Array, o: GuestFrameOptions = {}): Uint8Array {
  const ipOpts: Ipv4Options = { src: o.src ?? GUEST_IP, dst, protocol, payload: l4 };
  if (o.ttl !== undefined) ipOpts.ttl = o.ttl;
  if (o.id !== undefined) ipOpts.id = o.id;
  if (o.df !== undefined) ipOpts.df = o.df;
  return ethernetFrame({ dst: o.dstMac ?? GATEWAY_MAC, src: o.srcMac ?? GUEST_MAC, etherType: ETH_IPV4, payload: ipv4Packet(ipOpts) });
}

export function guestUdpFrame(o: UdpOptions & GuestFrameOptions): Uint8Array {
  return guestIPv4Frame(PROTO_UDP, o.dst, udpDatagram({ ...o, src: o.src ?? GUEST_IP }), o);
}

export function guestTcpFrame(o: TcpSegmentOptions & GuestFrameOptions): Uint8Array {
  return guestIPv4Frame(PROTO_TCP, o.dst, tcpSegment({ ...o, src: o.src ?? GUEST_IP }), o);
}

export function guestIcmpFrame(dst: number, o: IcmpOptions & GuestFrameOptions = {}): Uint8Array {
  return guestIPv4Frame(PROTO_ICMP, dst, icmpMessage(o), o);
}

export function guestArpFrame(o: ArpOptions & { dstMac?: Uint8Array; srcMac?: Uint8Array }): Uint8Array {
  return ethernetFrame({ dst: o.dstMac ?? BROADCAST_MAC, src: o.srcMac ?? o.sha ?? GUEST_MAC, etherType: ETH_ARP, payload: arpPacket(o), padTo: 60 });
}

/** A DHCP message from an unconfigured guest (0.0.0.0:68 -> 255.255.255.255:67, broadcast MAC). */
export function guestDhcpFrame(o: DhcpOptions & { src?: number; dst?: number; srcMac?: Uint8Array; dstMac?: Uint8Array }): Uint8Array {
  const src = o.src ?? 0;
  const dst = o.dst ?? 0xffffffff;
  const udp = udpDatagram({ src, dst, sport: 68, dport: 67, payload: dhcpMessage(o) });
  return ethernetFrame({
    dst: o.dstMac ?? BROADCAST_MAC,
    src: o.srcMac ?? o.chaddr ?? GUEST_MAC,
    etherType: ETH_IPV4,
    payload: ipv4Packet({ src, dst, protocol: PROTO_UDP, payload: udp }),
  });
}

// ---- parsers for frames the stack sent -----------------------------------

export interface ParsedEthernet {
  dst: string;
  src: string;
  etherType: number;
  payload: Uint8Array;
}

export interface ParsedIpv4 {
  version: number;
  headerLength: number;
  totalLength: number;
  tos: number;
  id: number;
  df: boolean;
  mf: boolean;
  fragmentOffset: number;
  ttl: number;
  protocol: number;
  src: number;
  dst: number;
  checksumOk: boolean;
  payload: Uint8Array;
}

export interface ParsedUdp {
  sport: number;
  dport: number;
  length: number;
  checksum: number;
  checksumOk: boolean;
  payload: Uint8Array;
}

export interface ParsedTcp {
  sport: number;
  dport: number;
  seq: number;
  ack: number;
  dataOffset: number;
  flags: number;
  window: number;
  urgent: number;
  checksumOk: boolean;
  options: Uint8Array;
  mss?: number;
  wscale?: number;
  sackPermitted?: boolean;
  timestamp?: [number, number];
  sack?: [number, number][];
  payload: Uint8Array;
}

export interface ParsedIcmp {
  type: number;
  code: number;
  checksumOk: boolean;
  id: number;
  seq: number;
  rest: number;
  payload: Uint8Array;
}

export interface ParsedArp {
  op: number;
  sha: string;
  spa: number;
  tha: string;
  tpa: number;
}

export interface ParsedFrame {
  eth: ParsedEthernet;
  arp?: ParsedArp;
  ipv4?: ParsedIpv4;
  udp?: ParsedUdp;
  tcp?: ParsedTcp;
  icmp?: ParsedIcmp;
}

/**
 * What is wrong with a frame the stack sent (null: nothing): it must parse,
 * and its IPv4 header, UDP, TCP and ICMP checksums must hold — except an L4
 * checksum the link was told to complete (offload `needsCsum`).
 */
export function sentFrameProblem(frame: Uint8Array, offload?: { needsCsum: boolean }): string | null {
  let p: ParsedFrame;
  try {
    p = parseFrame(frame);
  } catch (err) {
    return `malformed frame: ${(err as Error).message}`;
  }
  if (p.ipv4 === undefined) return null;
  if (!p.ipv4.checksumOk) return 'bad IPv4 header checksum';
  if (offload?.needsCsum) return null;
  if (p.udp && !p.udp.checksumOk) return 'bad UDP checksum';
  if (p.tcp && !p.tcp.checksumOk) return 'bad TCP checksum';
  if (p.icmp && !p.icmp.checksumOk) return 'bad ICMP checksum';
  return null;
}

/** Parse a frame the stack sent; throws (test failure) on anything malformed. */
export function parseFrame(frame: Uint8Array): ParsedFrame {
  if (frame.length < 14) throw new Error(`frame too short: ${frame.length}`);
  const eth: ParsedEthernet = {
    dst: macString(frame.subarray(0, 6)),
    src: macString(frame.subarray(6, 12)),
    etherType: rd16(frame, 12),
    payload: frame.subarray(14),
  };
  const out: ParsedFrame = { eth };
  if (eth.etherType === ETH_ARP) {
    const a = eth.payload;
    if (a.length < 28) throw new Error('ARP too short');
    out.arp = { op: rd16(a, 6), sha: macString(a.subarray(8, 14)), spa: readIPv4(a, 14), tha: macString(a.subarray(18, 24)), tpa: readIPv4(a, 24) };
    return out;
  }
  if (eth.etherType !== ETH_IPV4) return out;
  const p = eth.payload;
  if (p.length < 20) throw new Error('IPv4 too short');
  const hl = (p[0]! & 0x0f) * 4;
  const total = rd16(p, 2);
  if (total > p.length || hl < 20 || hl > total) throw new Error(`IPv4 lengths inconsistent: hl ${hl} total ${total} have ${p.length}`);
  const frag = rd16(p, 6);
  const ip4: ParsedIpv4 = {
    version: p[0]! >>> 4,
    headerLength: hl,
    totalLength: total,
    tos: p[1]!,
    id: rd16(p, 4),
    df: (frag & 0x4000) !== 0,
    mf: (frag & 0x2000) !== 0,
    fragmentOffset: (frag & 0x1fff) * 8,
    ttl: p[8]!,
    protocol: p[9]!,
    src: readIPv4(p, 12),
    dst: readIPv4(p, 16),
    checksumOk: checksum(p.subarray(0, hl)) === 0,
    payload: p.subarray(hl, total),
  };
  out.ipv4 = ip4;
  if (ip4.mf || ip4.fragmentOffset !== 0) return out;
  const l4 = ip4.payload;
  if (ip4.protocol === PROTO_UDP) {
    if (l4.length < 8) throw new Error('UDP too short');
    const c = rd16(l4, 6);
    out.udp = {
      sport: rd16(l4, 0),
      dport: rd16(l4, 2),
      length: rd16(l4, 4),
      checksum: c,
      checksumOk: c === 0 || l4Checksum(ip4.src, ip4.dst, PROTO_UDP, l4) === 0,
      payload: l4.subarray(8, rd16(l4, 4)),
    };
  } else if (ip4.protocol === PROTO_TCP) {
    if (l4.length < 20) throw new Error('TCP too short');
    const doff = (l4[12]! >>> 4) * 4;
    if (doff < 20 || doff > l4.length) throw new Error('TCP data offset bad');
    const t: ParsedTcp = {
      sport: rd16(l4, 0),
      dport: rd16(l4, 2),
      seq: rd32(l4, 4),
      ack: rd32(l4, 8),
      dataOffset: doff,
      flags: l4[13]!,
      window: rd16(l4, 14),
      urgent: rd16(l4, 18),
      checksumOk: l4Checksum(ip4.src, ip4.dst, PROTO_TCP, l4) === 0,
      options: l4.subarray(20, doff),
      payload: l4.subarray(doff),
    };
    parseTcpOptionsInto(t);
    out.tcp = t;
  } else if (ip4.protocol === PROTO_ICMP) {
    if (l4.length < 8) throw new Error('ICMP too short');
    out.icmp = {
      type: l4[0]!,
      code: l4[1]!,
      checksumOk: checksum(l4) === 0,
      id: rd16(l4, 4),
      seq: rd16(l4, 6),
      rest: rd32(l4, 4),
      payload: l4.subarray(8),
    };
  }
  return out;
}

function parseTcpOptionsInto(t: ParsedTcp): void {
  const o = t.options;
  let i = 0;
  while (i < o.length) {
    const kind = o[i]!;
    if (kind === 0) break;
    if (kind === 1) {
      i++;
      continue;
    }
    if (i + 1 >= o.length) throw new Error('TCP option truncated');
    const len = o[i + 1]!;
    if (len < 2 || i + len > o.length) throw new Error('TCP option length bad');
    if (kind === 2 && len === 4) t.mss = rd16(o, i + 2);
    else if (kind === 3 && len === 3) t.wscale = o[i + 2]!;
    else if (kind === 4 && len === 2) t.sackPermitted = true;
    else if (kind === 8 && len === 10) t.timestamp = [rd32(o, i + 2), rd32(o, i + 6)];
    else if (kind === 5) {
      t.sack = [];
      for (let j = i + 2; j + 8 <= i + len; j += 8) t.sack.push([rd32(o, j), rd32(o, j + 4)]);
    }
    i += len;
  }
}

/** A parsed DHCP reply (the UDP payload of a frame the stack sent). */
export interface ParsedDhcp {
  op: number;
  xid: number;
  flags: number;
  ciaddr: number;
  yiaddr: number;
  siaddr: number;
  giaddr: number;
  chaddr: string;
  /** Options in wire order. */
  order: number[];
  options: Map<number, Uint8Array>;
  messageType: number;
}

export function parseDhcp(payload: Uint8Array): ParsedDhcp {
  if (payload.length < 240) throw new Error('DHCP too short');
  if (rd32(payload, 236) !== 0x63825363) throw new Error('DHCP cookie');
  const options = new Map<number, Uint8Array>();
  const order: number[] = [];
  let i = 240;
  while (i < payload.length) {
    const code = payload[i]!;
    if (code === 255) break;
    if (code === 0) {
      i++;
      continue;
    }
    const len = payload[i + 1]!;
    if (i + 2 + len > payload.length) throw new Error('DHCP option truncated');
    options.set(code, payload.subarray(i + 2, i + 2 + len));
    order.push(code);
    i += 2 + len;
  }
  return {
    op: payload[0]!,
    xid: rd32(payload, 4),
    flags: rd16(payload, 10),
    ciaddr: readIPv4(payload, 12),
    yiaddr: readIPv4(payload, 16),
    siaddr: readIPv4(payload, 20),
    giaddr: readIPv4(payload, 24),
    chaddr: macString(payload.subarray(28, 34)),
    order,
    options,
    messageType: options.get(53)?.[0] ?? 0,
  };
}

/** Read an option holding IPv4 addresses. */
export function optionAddresses(value: Uint8Array | undefined): number[] {
  if (!value) return [];
  const out: number[] = [];
  for (let i = 0; i + 4 <= value.length; i += 4) out.push(readIPv4(value, i));
  return out;
}

export function optionU32(value: Uint8Array | undefined): number | undefined {
  return value && value.length === 4 ? rd32(value, 0) : undefined;
}
