/**
 * Fuzz target: parseArp. Drop reasons come from a fixed set; a parsed
 * packet is Ethernet/IPv4 with a request or reply opcode, and writing it back
 * gives the same 28 bytes.
 */
import { parseArp, writeArp, ARP_LENGTH, ARP_REPLY, ARP_REQUEST } from '../../../src/net/wire/arp.js';
import { check, type FuzzTarget } from '../engine/input.js';
import { arpPayloads, seedFrames } from '../seeds.js';

const REASONS = new Set(['truncated', 'bad_hardware_type', 'bad_protocol_type', 'bad_address_length', 'bad_op']);

export const target: FuzzTarget = {
  name: 'arp',
  maxLength: 128,
  seeds: () => arpPayloads(seedFrames()),
  run(bytes) {
    const a = parseArp(bytes);
    if (typeof a === 'string') {
      check(REASONS.has(a), `unknown drop reason ${a}`);
      check((a === 'truncated') === (bytes.length < ARP_LENGTH), `'truncated' for ${bytes.length} bytes`);
      return;
    }
    check(a.op === ARP_REQUEST || a.op === ARP_REPLY, `op ${a.op}`);
    check(a.sha.length === 6 && a.tha.length === 6, 'MAC views');
    check(Number.isInteger(a.spa) && a.spa >= 0 && a.spa <= 0xffffffff && a.tpa >= 0 && a.tpa <= 0xffffffff, 'addresses not u32');
    const out = new Uint8Array(ARP_LENGTH);
    writeArp(out, a.op, a.sha, a.spa, a.tha, a.tpa);
    check(Buffer.compare(out, bytes.subarray(0, ARP_LENGTH)) === 0, 'ARP packet does not round-trip');
  },
};
