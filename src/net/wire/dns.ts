/**
 * DNS message header and question view (RFC 1035 4.1), just enough for a
 * forwarder: the stack relays queries and answers without interpreting
 * records, so it checks only the header (12 bytes, QR bit, opcode), that
 * there is exactly one question, and that the question name parses —
 * labels <= 63 bytes, name <= 255 bytes, compression pointers followed at
 * most 32 times so a pointer loop cannot hang the parser.
 */

export const DNS_HEADER_LENGTH = 12;
const MAX_POINTERS = 32;
const MAX_NAME_LENGTH = 255;

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

/** Parse a (possibly compressed) name at `offset`: its dotted text and the offset after it in the original stream. */
export function parseDnsName(msg: Uint8Array, offset: number): { name: string; next: number } | string {
  const labels: string[] = [];
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
      break;
    }
    if (pos + 1 + len > msg.length) return 'truncated';
    length += len + 1;
    if (length > MAX_NAME_LENGTH) return 'name_too_long';
    let label = '';
    for (let i = pos + 1; i < pos + 1 + len; i++) label += String.fromCharCode(msg[i]!);
    labels.push(label);
    pos += 1 + len;
  }
  return { name: labels.join('.'), next };
}

export interface DnsQuestion {
  name: string;
  type: number;
  cls: number;
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

/** Header + the single question of a query (or response). */
export function parseDnsQuery(msg: Uint8Array): { header: DnsHeader; question: DnsQuestion } | string {
  const header = parseDnsHeader(msg);
  if (typeof header === 'string') return header;
  if (header.qdcount !== 1) return 'bad_qdcount';
  const name = parseDnsName(msg, DNS_HEADER_LENGTH);
  if (typeof name === 'string') return name;
  if (name.next + 4 > msg.length) return 'truncated';
  const dv = new DataView(msg.buffer, msg.byteOffset, msg.length);
  return { header, question: { name: name.name, type: dv.getUint16(name.next, false), cls: dv.getUint16(name.next + 2, false), end: name.next + 4 } };
}
