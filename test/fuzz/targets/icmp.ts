/**
 * Fuzz target: parseIcmp. Drop reasons come from a fixed set; a parsed
 * message has a good checksum, views over the input, and an echo request or
 * reply written back with writeEcho is the same message.
 */
import { parseIcmp, writeEcho, ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, ICMP_HEADER_LENGTH } from '../../../src/net/wire/icmp.js';
import { checksum } from '../../../src/net/wire/checksum.js';
import { check, type FuzzTarget } from '../engine/input.js';
import { l4Segments, seedFrames } from '../seeds.js';

export const target: FuzzTarget = {
  name: 'icmp',
  maxLength: 1600,
  seeds: () => l4Segments(seedFrames(), 1).map((s) => s.bytes),
  run(message) {
    const m = parseIcmp(message);
    if (typeof m === 'string') {
      check(m === 'truncated' || m === 'bad_checksum', `unknown drop reason ${m}`);
      check((m === 'truncated') === (message.length < ICMP_HEADER_LENGTH), `'truncated' for ${message.length} bytes`);
      return;
    }
    check(checksum(message) === 0, 'accepted a bad checksum');
    check(m.body.length === message.length - ICMP_HEADER_LENGTH && m.message === message, 'views');
    check(m.type === message[0] && m.code === message[1] && m.id === ((message[4]! << 8) | message[5]!) && m.seq === ((message[6]! << 8) | message[7]!), 'fields');
    if ((m.type === ICMP_ECHO_REQUEST || m.type === ICMP_ECHO_REPLY) && m.code === 0) {
      const copy = message.slice();
      writeEcho(copy, m.type, m.id, m.seq);
      check(checksum(copy) === 0, 'writeEcho left a bad checksum');
      copy[2] = message[2]!;
      copy[3] = message[3]!;
      check(Buffer.compare(copy, message) === 0, 'echo does not round-trip');
    }
  },
};
