/**
 * BOOTP/DHCPv4 message view and writer (RFC 2131, options RFC 2132).
 *
 * Theory of operation: a DHCP message is a 236-byte fixed BOOTP header, the
 * magic cookie 99.130.83.99 and a TLV option area. `parseDhcp` checks the
 * fixed part, htype/hlen (Ethernet), the cookie, and walks the options with
 * every length checked against the bytes present; an option that runs past
 * the end is a drop reason, a missing end option is tolerated. Options that
 * appear more than once are concatenated (RFC 3396). Option overload (52,
 * options in sname/file) is ignored: those fields are never read as options.
 * `DhcpWriter` emits a reply with options in the order added, skipping any
 * that would not fit the client's maximum message size.
 */
import { readIPv4, writeIPv4 } from '../ip-address.js';

export const DHCP_FIXED_LENGTH = 236;
export const DHCP_MAGIC_COOKIE = 0x63825363;
export const DHCP_OPTIONS_OFFSET = 240;
export const DHCP_SERVER_PORT = 67;
export const DHCP_CLIENT_PORT = 68;
export const BOOTREQUEST = 1;
export const BOOTREPLY = 2;

export const DHCPDISCOVER = 1;
export const DHCPOFFER = 2;
export const DHCPREQUEST = 3;
export const DHCPDECLINE = 4;
export const DHCPACK = 5;
export const DHCPNAK = 6;
export const DHCPRELEASE = 7;
export const DHCPINFORM = 8;

export const OPT_PAD = 0;
export const OPT_SUBNET_MASK = 1;
export const OPT_ROUTER = 3;
export const OPT_DNS = 6;
export const OPT_HOSTNAME = 12;
export const OPT_DOMAIN_NAME = 15;
export const OPT_INTERFACE_MTU = 26;
export const OPT_BROADCAST = 28;
export const OPT_REQUESTED_IP = 50;
export const OPT_LEASE_TIME = 51;
export const OPT_OVERLOAD = 52;
export const OPT_MESSAGE_TYPE = 53;
export const OPT_SERVER_ID = 54;
export const OPT_PARAMETER_LIST = 55;
export const OPT_MESSAGE = 56;
export const OPT_MAX_MESSAGE_SIZE = 57;
export const OPT_RENEWAL_TIME = 58;
export const OPT_REBINDING_TIME = 59;
export const OPT_CLIENT_ID = 61;
export const OPT_DOMAIN_SEARCH = 119;
export const OPT_END = 255;

export interface DhcpView {
  op: number;
  xid: number;
  secs: number;
  flags: number;
  ciaddr: number;
  yiaddr: number;
  siaddr: number;
  giaddr: number;
  /** Client hardware address (6 bytes, view). */
  chaddr: Uint8Array;
  options: Map<number, Uint8Array>;
  messageType: number;
}

export function parseDhcp(bytes: Uint8Array): DhcpView | string {
  if (bytes.length < DHCP_OPTIONS_OFFSET) return 'truncated';
  const dv = new DataView(bytes.buffer, bytes.byteOffset, DHCP_OPTIONS_OFFSET);
  if (bytes[1] !== 1 || bytes[2] !== 6) return 'bad_hardware_type';
  if (dv.getUint32(236, false) !== DHCP_MAGIC_COOKIE) return 'bad_cookie';
  const options = new Map<number, Uint8Array>();
  let i = DHCP_OPTIONS_OFFSET;
  while (i < bytes.length) {
    const code = bytes[i]!;
    if (code === OPT_END) break;
    if (code === OPT_PAD) {
      i++;
      continue;
    }
    if (i + 1 >= bytes.length) return 'bad_option';
    const len = bytes[i + 1]!;
    if (i + 2 + len > bytes.length) return 'bad_option';
    const value = bytes.subarray(i + 2, i + 2 + len);
    const prev = options.get(code);
    if (prev) {
      const joined = new Uint8Array(prev.length + len);
      joined.set(prev);
      joined.set(value, prev.length);
      options.set(code, joined);
    } else options.set(code, value);
    i += 2 + len;
  }
  const mt = options.get(OPT_MESSAGE_TYPE);
  return {
    op: bytes[0]!,
    xid: dv.getUint32(4, false),
    secs: dv.getUint16(8, false),
    flags: dv.getUint16(10, false),
    ciaddr: readIPv4(bytes, 12),
    yiaddr: readIPv4(bytes, 16),
    siaddr: readIPv4(bytes, 20),
    giaddr: readIPv4(bytes, 24),
    chaddr: bytes.subarray(28, 34),
    options,
    messageType: mt && mt.length === 1 ? mt[0]! : 0,
  };
}

/** Option value as one IPv4 address, or null if absent/malformed. */
export function optionAddress(value: Uint8Array | undefined): number | null {
  return value && value.length === 4 ? readIPv4(value, 0) : null;
}

/** Builds a BOOTREPLY. */
export class DhcpWriter {
  private readonly buf: Uint8Array;
  private readonly dv: DataView;
  private pos = DHCP_OPTIONS_OFFSET;
  /** Room for options before the end option. */
  private readonly limit: number;

  /** `maxLength` is the whole DHCP message limit (576 - 28 unless the client says more). */
  constructor(maxLength: number) {
    const size = Math.max(300, Math.min(maxLength, 1500));
    this.buf = new Uint8Array(size);
    this.dv = new DataView(this.buf.buffer);
    this.limit = size - 1;
  }

  header(f: { xid: number; flags: number; ciaddr: number; yiaddr: number; siaddr: number; giaddr: number; chaddr: Uint8Array }): void {
    this.buf[0] = BOOTREPLY;
    this.buf[1] = 1;
    this.buf[2] = 6;
    this.buf[3] = 0;
    this.dv.setUint32(4, f.xid, false);
    this.dv.setUint16(8, 0, false);
    this.dv.setUint16(10, f.flags, false);
    writeIPv4(this.buf, 12, f.ciaddr);
    writeIPv4(this.buf, 16, f.yiaddr);
    writeIPv4(this.buf, 20, f.siaddr);
    writeIPv4(this.buf, 24, f.giaddr);
    this.buf.set(f.chaddr.subarray(0, 6), 28);
    this.dv.setUint32(236, DHCP_MAGIC_COOKIE, false);
  }

  /** Add an option; false (and nothing written) if it does not fit or is longer than 255 bytes. */
  option(code: number, value: Uint8Array): boolean {
    if (value.length > 255 || this.pos + 2 + value.length > this.limit) return false;
    this.buf[this.pos] = code;
    this.buf[this.pos + 1] = value.length;
    this.buf.set(value, this.pos + 2);
    this.pos += 2 + value.length;
    return true;
  }

  /** Append the end option; the message is padded with zeros to at least 300 bytes (BOOTP minimum). */
  finish(): Uint8Array {
    this.buf[this.pos++] = OPT_END;
    return this.buf.subarray(0, Math.max(this.pos, 300));
  }
}

export function u32Bytes(v: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, v >>> 0, false);
  return b;
}

export function u16Bytes(v: number): Uint8Array {
  return new Uint8Array([(v >>> 8) & 0xff, v & 0xff]);
}

export function addressBytes(...addresses: number[]): Uint8Array {
  const b = new Uint8Array(4 * addresses.length);
  addresses.forEach((a, i) => writeIPv4(b, i * 4, a));
  return b;
}

/**
 * RFC 3397 domain search list: DNS wire names with compression pointers
 * relative to the start of the option data. Labels longer than 63 bytes or
 * empty are skipped (the name is dropped).
 */
export function encodeDomainSearch(domains: string[]): Uint8Array {
  const out: number[] = [];
  const suffixes = new Map<string, number>();
  for (const domain of domains) {
    const labels = domain.replace(/\.$/, '').split('.');
    if (labels.some((l) => l.length === 0 || l.length > 63)) continue;
    const encoded = labels.map((l) => new TextEncoder().encode(l.toLowerCase()));
    if (encoded.some((l) => l.length > 63)) continue;
    for (let i = 0; i < labels.length; i++) {
      const suffix = labels.slice(i).join('.').toLowerCase();
      const at = suffixes.get(suffix);
      if (at !== undefined) {
        out.push(0xc0 | (at >>> 8), at & 0xff);
        break;
      }
      if (out.length < 0x3fff) suffixes.set(suffix, out.length);
      out.push(encoded[i]!.length, ...encoded[i]!);
      if (i === labels.length - 1) out.push(0);
    }
  }
  return Uint8Array.from(out);
}
