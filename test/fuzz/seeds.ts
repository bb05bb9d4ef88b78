/**
 * Seed frames for the fuzz targets and the frame-level fuzz tests: a handful
 * of frames we build (ARP, ICMP echo, UDP, DNS, DHCP, a TCP SYN, two IPv4
 * fragments), plus — when ../shared is beside the clone, as in CI — every
 * frame of libslirp's fuzzing corpora (real captures: DHCP, DNS, TCP
 * handshakes and data, ICMP, ARP, IPv6 and TFTP). Nothing of the corpora is
 * copied into the repository; they are read at run time.
 *
 * The layer helpers cut frames into what each parser takes (Ethernet
 * payloads, IPv4 packets, L4 segments with their addresses); they use the
 * stack's own parsers without checksum checks, which is fine for picking
 * seeds: a wrong cut only makes a worse seed.
 */
import { parseEthernet, ETHERTYPE_ARP, ETHERTYPE_IPV4 } from '../../src/net/wire/ethernet.js';
import { parseIPv4Packet } from '../../src/net/wire/ipv4.js';
import { corpusFrames, sharedCorpusDir } from '../helpers/pcap-reader.js';
import {
  DHCP, DNS_IP, GATEWAY_IP, TCP_FLAGS, guestArpFrame, guestDhcpFrame, guestIcmpFrame, guestTcpFrame, guestUdpFrame, ip, ipBytes,
  ipv4Packet, ethernetFrame, ETH_IPV4, icmpMessage,
} from '../helpers/packets.js';

/** Frames a guest sends, built by our own helpers (the first answers of each service). */
export function builtFrames(): Uint8Array[] {
  const dnsQuery = Uint8Array.from([0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 97, 0, 0, 1, 0, 1]);
  const echo = icmpMessage({ id: 1, seq: 1, payload: new Uint8Array(100) });
  return [
    guestArpFrame({ tpa: GATEWAY_IP }),
    guestIcmpFrame(GATEWAY_IP, { id: 7, seq: 1, payload: new Uint8Array(32) }),
    guestIcmpFrame(ip('192.0.2.1'), { id: 7, seq: 1 }),
    guestUdpFrame({ dst: GATEWAY_IP, sport: 1234, dport: 5678, payload: new Uint8Array(20) }),
    guestUdpFrame({ dst: DNS_IP, sport: 1234, dport: 53, payload: dnsQuery }),
    guestDhcpFrame({ xid: 1, options: [[53, [DHCP.DISCOVER]], [55, [1, 3, 6, 119]], [61, [1, 2, 3]]] }),
    guestDhcpFrame({ xid: 2, options: [[53, [DHCP.REQUEST]], [50, ipBytes(ip('10.0.2.15'))], [54, ipBytes(GATEWAY_IP)]] }),
    guestTcpFrame({ dst: GATEWAY_IP, sport: 1000, dport: 22, flags: TCP_FLAGS.SYN, seq: 1, options: { mss: 1460 } }),
    ethernetFrame({ etherType: ETH_IPV4, payload: ipv4Packet({ dst: GATEWAY_IP, protocol: 1, payload: echo.subarray(0, 64), id: 3, mf: true }) }),
    ethernetFrame({ etherType: ETH_IPV4, payload: ipv4Packet({ dst: GATEWAY_IP, protocol: 1, payload: echo.subarray(64), id: 3, fragmentOffset: 64 }) }),
  ];
}

let cachedCaptured: Uint8Array[] | null = null;

/** Every frame of the shared libslirp corpora ([] when ../shared is not there). */
export function capturedFrames(): Uint8Array[] {
  if (cachedCaptured === null) {
    const dir = sharedCorpusDir();
    cachedCaptured = dir === null ? [] : corpusFrames(dir).flatMap((c) => c.frames);
  }
  return cachedCaptured;
}

/** Our frames, then the captured ones. */
export function seedFrames(): Uint8Array[] {
  return [...builtFrames(), ...capturedFrames()];
}

/** Frames not sent by the gateway or the DNS address: what libslirp's own harness feeds its stack. */
export function guestSeedFrames(): Uint8Array[] {
  return seedFrames().filter((f) => {
    const ip4 = ipv4Of(f);
    return ip4 === null || (ip4.src !== GATEWAY_IP && ip4.src !== DNS_IP);
  });
}

/** Payloads of the frames with this EtherType. */
export function etherPayloads(frames: Uint8Array[], etherType: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const f of frames) {
    const e = parseEthernet(f);
    if (typeof e !== 'string' && e.etherType === etherType) out.push(e.payload);
  }
  return out;
}

function ipv4Of(frame: Uint8Array) {
  const e = parseEthernet(frame);
  if (typeof e === 'string' || e.etherType !== ETHERTYPE_IPV4) return null;
  const p = parseIPv4Packet(e.payload, false);
  return typeof p === 'string' ? null : p;
}

export function arpPayloads(frames: Uint8Array[]): Uint8Array[] {
  return etherPayloads(frames, ETHERTYPE_ARP);
}

/** IPv4 packets (trimmed to their total length). */
export function ipv4Packets(frames: Uint8Array[]): Uint8Array[] {
  return frames.map(ipv4Of).flatMap((p) => (p === null ? [] : [p.packet]));
}

/** Unfragmented L4 payloads of this IP protocol, with the packet's addresses. */
export function l4Segments(frames: Uint8Array[], protocol: number): Array<{ src: number; dst: number; bytes: Uint8Array }> {
  const out: Array<{ src: number; dst: number; bytes: Uint8Array }> = [];
  for (const f of frames) {
    const p = ipv4Of(f);
    if (p !== null && p.protocol === protocol && p.fragmentOffset === 0 && !p.moreFragments) out.push({ src: p.src, dst: p.dst, bytes: p.payload });
  }
  return out;
}

/** UDP payloads to or from `port`. */
export function udpPayloads(frames: Uint8Array[], port: number): Uint8Array[] {
  return l4Segments(frames, 17)
    .filter((s) => s.bytes.length >= 8 && (((s.bytes[0]! << 8) | s.bytes[1]!) === port || ((s.bytes[2]! << 8) | s.bytes[3]!) === port))
    .map((s) => s.bytes.subarray(8));
}
