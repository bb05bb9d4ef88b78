/**
 * Fuzz target: the DNS header, name and query parsers and skipDnsRecords.
 * Input: one byte, the offset at which parseDnsName starts, then the
 * message. Drop reasons come from a fixed set; offsets never point past the
 * message; names respect the 255-byte and 63-byte limits; and a plain-ASCII
 * name encoded again (encodeDomainSearch, the DHCP option 119 encoder) parses
 * back to itself.
 */
import { parseDnsHeader, parseDnsName, parseDnsQuery, skipDnsRecords, DNS_HEADER_LENGTH } from '../../../src/net/wire/dns.js';
import { encodeDomainSearch } from '../../../src/net/wire/dhcp.js';
import { FuzzInput, FuzzInputWriter, check, type FuzzTarget } from '../engine/input.js';
import { seedFrames, udpPayloads } from '../seeds.js';

const NAME_REASONS = new Set(['truncated', 'pointer_loop', 'bad_label', 'name_too_long']);

function checkName(msg: Uint8Array, offset: number): void {
  const r = parseDnsName(msg, offset);
  if (typeof r === 'string') {
    check(NAME_REASONS.has(r), `unknown name drop reason ${r}`);
    return;
  }
  check(r.next > offset && r.next <= msg.length, `next ${r.next} for offset ${offset} in ${msg.length}`);
  check(r.name.length <= 254, `name of ${r.name.length} characters`);
  const labels = r.name.split('.');
  if (r.name.length > 0 && /^[\x00-\x7f]*$/.test(r.name) && labels.every((l) => l.length > 0 && l.length <= 63)) {
    const again = parseDnsName(encodeDomainSearch([r.name]), 0);
    check(typeof again !== 'string' && again.name === r.name.toLowerCase(), () => `name ${JSON.stringify(r.name)} does not round-trip: ${JSON.stringify(again)}`);
  }
}

export const target: FuzzTarget = {
  name: 'dns',
  maxLength: 1500,
  seeds: () => udpPayloads(seedFrames(), 53).map((m) => new FuzzInputWriter().u8(DNS_HEADER_LENGTH).bytes(m).finish()),
  run(data) {
    const input = new FuzzInput(data);
    const offset = input.u8();
    const msg = input.rest();
    checkName(msg, offset);
    const h = parseDnsHeader(msg);
    check(typeof h === 'string' ? h === 'truncated' && msg.length < DNS_HEADER_LENGTH : msg.length >= DNS_HEADER_LENGTH, 'header verdict');
    const q = parseDnsQuery(msg);
    if (typeof q === 'string') {
      check(q === 'bad_qdcount' || NAME_REASONS.has(q), `unknown query drop reason ${q}`);
      return;
    }
    check(q.header.qdcount === 1 && q.question.end <= msg.length && q.question.end >= DNS_HEADER_LENGTH + 5, `question end ${q.question.end}`);
    checkName(msg, DNS_HEADER_LENGTH);
    const records = q.header.ancount + q.header.nscount + q.header.arcount;
    const end = skipDnsRecords(msg, q.question.end, records);
    if (typeof end === 'string') check(NAME_REASONS.has(end), `unknown record drop reason ${end}`);
    else check(end >= q.question.end && end <= msg.length && (records > 0 || end === q.question.end), `records end ${end}`);
  },
};
