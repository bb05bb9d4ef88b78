/**
 * DNS message header and question view (RFC 1035 4.1), just enough for a
 * forwarder: the stack relays queries and answers without interpreting
 * records, so it checks only the header (12 bytes, QR bit, opcode), that
 * there is exactly one question, and that the question name parses —
 * labels <= 63 bytes, name <= 255 bytes, compression pointers followed at
 * most 32 times so a pointer loop cannot hang the parser.
 *
 * `checkDnsQuery` is the one check of a guest's query, whether it came over
 * UDP or TCP; a question's `key` (the name in canonical form, RFC 4343 case
 * folding of ASCII letters only, with its type and class) is what an answer's
 * question must equal.
 */

export const DNS_HEADER_LENGTH = 12;
const MAX_POINTERS = 32;
const MAX_NAME_LENGTH = 255;
/** Largest query relayed (a query is a header, one name and an OPT record: far below this). */
export const MAX_QUERY_LENGTH = 4096;
/** Additional records a query may carry (EDNS OPT, TSIG). */
const MAX_ADDITIONAL = 2;
const OPCODE_QUERY = 0;

export interface DnsHeader {
  id: number;
  /** True for a response. */
  qr: boolean;
  opcode: number;
  rcode: number;
  qdcount: number;
  ancount: number;
  nscount: number;
  arcount: number;
}

export function parseDnsHeader(msg: Uint8Array): DnsHeader | string {
  if (msg.length < DNS_HEADER_LENGTH) return 'truncated';
  const dv = new DataView(msg.buffer, msg.byteOffset, DNS_HEADER_LENGTH);
  const flags = dv.getUint16(2, false);
  return {
    id: dv.getUint16(0, false),
    qr: (flags & 0x8000) !== 0,
    opcode: (flags >>> 11) & 0x0f,
    rcode: flags & 0x0f,
    qdcount: dv.getUint16(4, false),
    ancount: dv.getUint16(6, false),
    nscount: dv.getUint16(8, false),
    arcount: dv.getUint16(10, false),
  };
}

/**
 * Parse a (possibly compressed) name at `offset`: its dotted text, its
 * canonical form (the uncompressed wire form as characters, ASCII letters
 * lower-cased: equal for names equal under RFC 4343, and unlike the dotted
 * text never ambiguous about dots inside a label) and the offset
 * after it in the original stream.
 */
export function parseDnsName(msg: Uint8Array, offset: number): { name: string; canonical: string; next: number } | string {
  const labels: string[] = [];
  let canonical = '';
  let pos = offset;
  let next = -1;
  let jumps = 0;
  let length = 0;
  for (;;) {
    if (pos >= msg.length) return 'truncated';
    const len = msg[pos]!;
    if ((len & 0xc0) === 0xc0) {
      if (pos + 1 >= msg.length) return 'truncated';
      if (++jumps > MAX_POINTERS) return 'pointer_loop';
      if (next < 0) next = pos + 2;
      pos = ((len & 0x3f) << 8) | msg[pos + 1]!;
      continue;
    }
    if ((len & 0xc0) !== 0) return 'bad_label';
    if (len === 0) {
      if (next < 0) next = pos + 1;
      canonical += '\0';
      break;
    }
    if (pos + 1 + len > msg.length) return 'truncated';
    length += len + 1;
    if (length > MAX_NAME_LENGTH) return 'name_too_long';
    let label = '';
    canonical += String.fromCharCode(len);
    for (let i = pos + 1; i < pos + 1 + len; i++) {
      const b = msg[i]!;
      label += String.fromCharCode(b);
      canonical += String.fromCharCode(b >= 0x41 && b <= 0x5a ? b + 0x20 : b);
    }
    labels.push(label);
    pos += 1 + len;
  }
  return { name: labels.join('.'), canonical, next };
}

export interface DnsQuestion {
  name: string;
  type: number;
  cls: number;
  /** Canonical name, type and class: equal keys are the same question (names compared case-insensitively). */
  key: string;
  /** Offset just after the question. */
  end: number;
}

/**
 * Skip `count` resource records starting at `offset` (name, type, class,
 * TTL, RDLENGTH, RDATA); the offset after them, or a drop reason.
 */
export function skipDnsRecords(msg: Uint8Array, offset: number, count: number): number | string {
  let pos = offset;
  for (let i = 0; i < count; i++) {
    const name = parseDnsName(msg, pos);
    if (typeof name === 'string') return name;
    pos = name.next;
    if (pos + 10 > msg.length) return 'truncated';
    const rdlength = (msg[pos + 8]! << 8) | msg[pos + 9]!;
    pos += 10 + rdlength;
    if (pos > msg.length) return 'truncated';
  }
  return pos;
}

export interface DnsQuery {
  header: DnsHeader;
  question: DnsQuestion;
}

/** Header + the single question of a query (or response). */
export function parseDnsQuery(msg: Uint8Array): DnsQuery | string {
  const header = parseDnsHeader(msg);
  if (typeof header === 'string') return header;
  if (header.qdcount !== 1) return 'bad_qdcount';
  const name = parseDnsName(msg, DNS_HEADER_LENGTH);
  if (typeof name === 'string') return name;
  if (name.next + 4 > msg.length) return 'truncated';
  const dv = new DataView(msg.buffer, msg.byteOffset, msg.length);
  const type = dv.getUint16(name.next, false);
  const cls = dv.getUint16(name.next + 2, false);
  return { header, question: { name: name.name, type, cls, key: `${name.canonical}${type}/${cls}`, end: name.next + 4 } };
}

/**
 * A guest's query, checked before it is relayed (the upstream is often a
 * resolver on the host's loopback, which the guest must not reach with
 * anything else): at most MAX_QUERY_LENGTH bytes, QR clear, opcode QUERY,
 * exactly one question whose name parses, no answer or authority records,
 * at most MAX_ADDITIONAL additional records that parse and end exactly at
 * the end of the message. The parsed query, or the drop reason.
 */
export function checkDnsQuery(msg: Uint8Array): DnsQuery | string {
  if (msg.length > MAX_QUERY_LENGTH) return 'too_big';
  const q = parseDnsQuery(msg);
  if (typeof q === 'string') return q;
  if (q.header.qr) return 'not_query';
  if (q.header.opcode !== OPCODE_QUERY) return 'bad_opcode';
  if (q.header.ancount !== 0 || q.header.nscount !== 0 || q.header.arcount > MAX_ADDITIONAL) return 'bad_sections';
  const end = skipDnsRecords(msg, q.question.end, q.header.arcount);
  if (typeof end === 'string') return end;
  if (end !== msg.length) return 'trailing_bytes';
  return q;
}
