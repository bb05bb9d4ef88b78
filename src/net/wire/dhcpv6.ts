/**
 * DHCPv6 messages (RFC 8415) between a client and a server on the same
 * link (no relay messages).
 *
 * Theory of operation. A message is a type byte, a 24-bit transaction id
 * and options, each a 16-bit code, a 16-bit length and the value; IA_NA
 * and IAADDR carry options of their own. `parseDhcpv6` walks the options
 * once with every length checked against its container and returns a
 * plain object holding what a server or a test needs (client and server
 * DUIDs, IA_NA with their addresses and status, the option request list,
 * elapsed time, rapid commit, status, DNS servers, domain list,
 * preference, information refresh time); other options are skipped.
 * Bounds: at most MAX_DHCPV6_OPTIONS options in all (sub-options
 * included), MAX_IA_NA IA_NA options and MAX_IA_ADDRESSES addresses in
 * each; a DUID of 3..130 bytes (RFC 8415 §11.1); a singleton option
 * (client id, server id, elapsed time, rapid commit, status ...) twice is
 * malformed. Relay messages and too-short input are drop reasons.
 *
 * The parsed object and the builder's input have the same shape, so what
 * `buildDhcpv6` writes parses back equal; IA_TA and IA_PD are kept only as
 * {code, iaid} (this server assigns neither) and are written back with a
 * status, which is how a server declines them. Options are written in a
 * fixed order: client id, server id, elapsed time, option request, rapid
 * commit, status, IA_NA, other IAs, preference, DNS servers, domain list,
 * information refresh time. `duidLinkLayer` makes the DUID-LL (type 3) a
 * server derives from its MAC, as passt and dnsmasq do.
 */
import { encodeDomainList, parseDomainList } from './domain-list.js';
import { IPV6_ADDRESS_LENGTH, type IPv6Address } from '../ipv6-address.js';

export const DHCPV6_CLIENT_PORT = 546;
export const DHCPV6_SERVER_PORT = 547;
export const DHCPV6_HEADER_LENGTH = 4;

export const DHCPV6_SOLICIT = 1;
export const DHCPV6_ADVERTISE = 2;
export const DHCPV6_REQUEST = 3;
export const DHCPV6_CONFIRM = 4;
export const DHCPV6_RENEW = 5;
export const DHCPV6_REBIND = 6;
export const DHCPV6_REPLY = 7;
export const DHCPV6_RELEASE = 8;
export const DHCPV6_DECLINE = 9;
export const DHCPV6_RECONFIGURE = 10;
export const DHCPV6_INFORMATION_REQUEST = 11;
export const DHCPV6_RELAY_FORW = 12;
export const DHCPV6_RELAY_REPL = 13;

export const OPTION_CLIENTID = 1;
export const OPTION_SERVERID = 2;
export const OPTION_IA_NA = 3;
export const OPTION_IA_TA = 4;
export const OPTION_IAADDR = 5;
export const OPTION_ORO = 6;
export const OPTION_PREFERENCE = 7;
export const OPTION_ELAPSED_TIME = 8;
export const OPTION_STATUS_CODE = 13;
export const OPTION_RAPID_COMMIT = 14;
export const OPTION_DNS_SERVERS = 23;
export const OPTION_DOMAIN_LIST = 24;
export const OPTION_IA_PD = 25;
export const OPTION_INFORMATION_REFRESH_TIME = 32;

export const STATUS_SUCCESS = 0;
export const STATUS_UNSPEC_FAIL = 1;
export const STATUS_NO_ADDRS_AVAIL = 2;
export const STATUS_NO_BINDING = 3;
export const STATUS_NOT_ON_LINK = 4;
export const STATUS_USE_MULTICAST = 5;
export const STATUS_NO_PREFIX_AVAIL = 6;

export const DUID_LLT = 1;
export const DUID_EN = 2;
export const DUID_LL = 3;
export const DUID_UUID = 4;

export const MAX_DHCPV6_OPTIONS = 64;
export const MAX_IA_NA = 8;
export const MAX_IA_ADDRESSES = 8;
export const MIN_DUID_LENGTH = 3;
export const MAX_DUID_LENGTH = 130;

export interface Dhcpv6Status {
  code: number;
  /** UTF-8 text (RFC 8415 §21.13), decoded leniently. */
  message: string;
}

export interface Dhcpv6IaAddress {
  address: IPv6Address;
  preferredLifetime: number;
  validLifetime: number;
  status?: Dhcpv6Status;
}

export interface Dhcpv6IaNa {
  iaid: number;
  t1: number;
  t2: number;
  addresses: Dhcpv6IaAddress[];
  status?: Dhcpv6Status;
}

/** An IA_TA or IA_PD: only its identity is kept (and, when built, the status declining it). */
export interface Dhcpv6OtherIa {
  code: typeof OPTION_IA_TA | typeof OPTION_IA_PD;
  iaid: number;
  status?: Dhcpv6Status;
}

export interface Dhcpv6Message {
  type: number;
  /** 24 bits. */
  transactionId: number;
  clientId?: Uint8Array;
  serverId?: Uint8Array;
  /** Hundredths of a second since the client began. */
  elapsedTime?: number;
  /** Option codes requested (ORO). */
  oro?: number[];
  rapidCommit?: boolean;
  status?: Dhcpv6Status;
  iaNa?: Dhcpv6IaNa[];
  otherIas?: Dhcpv6OtherIa[];
  preference?: number;
  dnsServers?: IPv6Address[];
  domainList?: string[];
  informationRefreshTime?: number;
}

/** Option walker state shared by the nested walks: the count bound is global. */
interface Walk {
  options: number;
}

type OptionVisitor = (code: number, value: Uint8Array) => string | null;

/** Walk the options in `bytes`, calling `visit` for each; a drop reason or null. */
function walkOptions(bytes: Uint8Array, walk: Walk, visit: OptionVisitor): string | null {
  for (let i = 0; i < bytes.length; ) {
    if (i + 4 > bytes.length) return 'truncated_option';
    const code = (bytes[i]! << 8) | bytes[i + 1]!;
    const length = (bytes[i + 2]! << 8) | bytes[i + 3]!;
    if (i + 4 + length > bytes.length) return 'truncated_option';
    if (++walk.options > MAX_DHCPV6_OPTIONS) return 'too_many_options';
    const reason = visit(code, bytes.subarray(i + 4, i + 4 + length));
    if (reason !== null) return reason;
    i += 4 + length;
  }
  return null;
}

function u32(bytes: Uint8Array, offset: number): number {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.length).getUint32(offset, false);
}

function parseStatus(value: Uint8Array): Dhcpv6Status | string {
  if (value.length < 2) return 'bad_status_code';
  return { code: (value[0]! << 8) | value[1]!, message: new TextDecoder().decode(value.subarray(2)) };
}

function parseIaNa(value: Uint8Array, walk: Walk): Dhcpv6IaNa | string {
  if (value.length < 12) return 'bad_ia_na';
  const ia: Dhcpv6IaNa = { iaid: u32(value, 0), t1: u32(value, 4), t2: u32(value, 8), addresses: [] };
  const reason = walkOptions(value.subarray(12), walk, (code, sub) => {
    if (code === OPTION_STATUS_CODE) {
      if (ia.status) return 'duplicate_option';
      const s = parseStatus(sub);
      if (typeof s === 'string') return s;
      ia.status = s;
    } else if (code === OPTION_IAADDR) {
      if (sub.length < 24) return 'bad_iaaddr';
      if (ia.addresses.length === MAX_IA_ADDRESSES) return 'too_many_addresses';
      const a: Dhcpv6IaAddress = { address: sub.subarray(0, 16), preferredLifetime: u32(sub, 16), validLifetime: u32(sub, 20) };
      const r = walkOptions(sub.subarray(24), walk, (c, v) => {
        if (c !== OPTION_STATUS_CODE) return null;
        if (a.status) return 'duplicate_option';
        const s = parseStatus(v);
        if (typeof s === 'string') return s;
        a.status = s;
        return null;
      });
      if (r !== null) return r;
      ia.addresses.push(a);
    }
    return null;
  });
  return reason ?? ia;
}

/** Checked parse of a client or server message: the object, or a drop reason. */
export function parseDhcpv6(bytes: Uint8Array): Dhcpv6Message | string {
  if (bytes.length < DHCPV6_HEADER_LENGTH) return 'truncated';
  const type = bytes[0]!;
  if (type === DHCPV6_RELAY_FORW || type === DHCPV6_RELAY_REPL) return 'relay_message';
  const msg: Dhcpv6Message = { type, transactionId: (bytes[1]! << 16) | (bytes[2]! << 8) | bytes[3]! };
  const walk: Walk = { options: 0 };
  const reason = walkOptions(bytes.subarray(DHCPV6_HEADER_LENGTH), walk, (code, value) => {
    switch (code) {
      case OPTION_CLIENTID:
      case OPTION_SERVERID: {
        if ((code === OPTION_CLIENTID ? msg.clientId : msg.serverId) !== undefined) return 'duplicate_option';
        if (value.length < MIN_DUID_LENGTH || value.length > MAX_DUID_LENGTH) return 'bad_duid';
        if (code === OPTION_CLIENTID) msg.clientId = value;
        else msg.serverId = value;
        return null;
      }
      case OPTION_ELAPSED_TIME:
        if (value.length !== 2) return 'bad_elapsed_time';
        if (msg.elapsedTime !== undefined) return 'duplicate_option';
        msg.elapsedTime = (value[0]! << 8) | value[1]!;
        return null;
      case OPTION_ORO: {
        if (value.length % 2 !== 0) return 'bad_oro';
        if (msg.oro !== undefined) return 'duplicate_option';
        msg.oro = [];
        for (let i = 0; i < value.length; i += 2) msg.oro.push((value[i]! << 8) | value[i + 1]!);
        return null;
      }
      case OPTION_RAPID_COMMIT:
        if (value.length !== 0) return 'bad_rapid_commit';
        if (msg.rapidCommit) return 'duplicate_option';
        msg.rapidCommit = true;
        return null;
      case OPTION_STATUS_CODE: {
        if (msg.status !== undefined) return 'duplicate_option';
        const s = parseStatus(value);
        if (typeof s === 'string') return s;
        msg.status = s;
        return null;
      }
      case OPTION_IA_NA: {
        if ((msg.iaNa ??= []).length === MAX_IA_NA) return 'too_many_ias';
        const ia = parseIaNa(value, walk);
        if (typeof ia === 'string') return ia;
        msg.iaNa.push(ia);
        return null;
      }
      case OPTION_IA_TA:
      case OPTION_IA_PD: {
        if (value.length < (code === OPTION_IA_TA ? 4 : 12)) return 'bad_ia';
        if ((msg.otherIas ??= []).length === MAX_IA_NA) return 'too_many_ias';
        msg.otherIas.push({ code, iaid: u32(value, 0) });
        return null;
      }
      case OPTION_PREFERENCE:
        if (value.length !== 1) return 'bad_preference';
        if (msg.preference !== undefined) return 'duplicate_option';
        msg.preference = value[0]!;
        return null;
      case OPTION_DNS_SERVERS: {
        if (value.length % IPV6_ADDRESS_LENGTH !== 0) return 'bad_dns_servers';
        if (msg.dnsServers !== undefined) return 'duplicate_option';
        msg.dnsServers = [];
        for (let i = 0; i < value.length; i += IPV6_ADDRESS_LENGTH) msg.dnsServers.push(value.subarray(i, i + IPV6_ADDRESS_LENGTH));
        return null;
      }
      case OPTION_DOMAIN_LIST: {
        if (msg.domainList !== undefined) return 'duplicate_option';
        const names = parseDomainList(value, false);
        if (typeof names === 'string') return `domain_list_${names}`;
        msg.domainList = names;
        return null;
      }
      case OPTION_INFORMATION_REFRESH_TIME:
        if (value.length !== 4) return 'bad_information_refresh_time';
        if (msg.informationRefreshTime !== undefined) return 'duplicate_option';
        msg.informationRefreshTime = u32(value, 0);
        return null;
      default:
        return null;
    }
  });
  return reason ?? msg;
}

/** The DUID-LL (RFC 8415 §11.4) of an Ethernet MAC: type 3, hardware type 1, the six bytes. */
export function duidLinkLayer(mac: Uint8Array): Uint8Array {
  return Uint8Array.of(0, DUID_LL, 0, 1, mac[0]!, mac[1]!, mac[2]!, mac[3]!, mac[4]!, mac[5]!);
}

/** One option in wire form. */
export function encodeDhcpv6Option(code: number, value: Uint8Array): Uint8Array {
  const out = new Uint8Array(4 + value.length);
  out[0] = code >>> 8;
  out[1] = code & 0xff;
  out[2] = value.length >>> 8;
  out[3] = value.length & 0xff;
  out.set(value, 4);
  return out;
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let pos = 0;
  for (const p of parts) {
    out.set(p, pos);
    pos += p.length;
  }
  return out;
}

function u32Bytes(...values: number[]): Uint8Array {
  const b = new Uint8Array(4 * values.length);
  const dv = new DataView(b.buffer);
  values.forEach((v, i) => dv.setUint32(4 * i, v >>> 0, false));
  return b;
}

function statusOption(s: Dhcpv6Status): Uint8Array {
  const text = new TextEncoder().encode(s.message);
  return encodeDhcpv6Option(OPTION_STATUS_CODE, concat([Uint8Array.of(s.code >>> 8, s.code & 0xff), text]));
}

function iaNaOption(ia: Dhcpv6IaNa): Uint8Array {
  const parts: Uint8Array[] = [u32Bytes(ia.iaid, ia.t1, ia.t2)];
  for (const a of ia.addresses) {
    const sub: Uint8Array[] = [a.address.subarray(0, IPV6_ADDRESS_LENGTH), u32Bytes(a.preferredLifetime, a.validLifetime)];
    if (a.status) sub.push(statusOption(a.status));
    parts.push(encodeDhcpv6Option(OPTION_IAADDR, concat(sub)));
  }
  if (ia.status) parts.push(statusOption(ia.status));
  return encodeDhcpv6Option(OPTION_IA_NA, concat(parts));
}

function otherIaOption(ia: Dhcpv6OtherIa): Uint8Array {
  const parts: Uint8Array[] = [ia.code === OPTION_IA_TA ? u32Bytes(ia.iaid) : u32Bytes(ia.iaid, 0, 0)];
  if (ia.status) parts.push(statusOption(ia.status));
  return encodeDhcpv6Option(ia.code, concat(parts));
}

/** A message in wire form (see the theory of operation for the option order). */
export function buildDhcpv6(msg: Dhcpv6Message): Uint8Array {
  const parts: Uint8Array[] = [Uint8Array.of(msg.type, (msg.transactionId >>> 16) & 0xff, (msg.transactionId >>> 8) & 0xff, msg.transactionId & 0xff)];
  if (msg.clientId) parts.push(encodeDhcpv6Option(OPTION_CLIENTID, msg.clientId));
  if (msg.serverId) parts.push(encodeDhcpv6Option(OPTION_SERVERID, msg.serverId));
  if (msg.elapsedTime !== undefined) parts.push(encodeDhcpv6Option(OPTION_ELAPSED_TIME, Uint8Array.of(msg.elapsedTime >>> 8, msg.elapsedTime & 0xff)));
  if (msg.oro) parts.push(encodeDhcpv6Option(OPTION_ORO, Uint8Array.from(msg.oro.flatMap((c) => [c >>> 8, c & 0xff]))));
  if (msg.rapidCommit) parts.push(encodeDhcpv6Option(OPTION_RAPID_COMMIT, new Uint8Array(0)));
  if (msg.status) parts.push(statusOption(msg.status));
  for (const ia of msg.iaNa ?? []) parts.push(iaNaOption(ia));
  for (const ia of msg.otherIas ?? []) parts.push(otherIaOption(ia));
  if (msg.preference !== undefined) parts.push(encodeDhcpv6Option(OPTION_PREFERENCE, Uint8Array.of(msg.preference)));
  if (msg.dnsServers) parts.push(encodeDhcpv6Option(OPTION_DNS_SERVERS, concat(msg.dnsServers.map((a) => a.subarray(0, IPV6_ADDRESS_LENGTH)))));
  if (msg.domainList) parts.push(encodeDhcpv6Option(OPTION_DOMAIN_LIST, encodeDomainList(msg.domainList)));
  if (msg.informationRefreshTime !== undefined) parts.push(encodeDhcpv6Option(OPTION_INFORMATION_REFRESH_TIME, u32Bytes(msg.informationRefreshTime)));
  return concat(parts);
}
