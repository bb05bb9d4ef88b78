/**
 * Fuzz target: parseEthernet. A frame shorter than the header is the one drop
 * reason; otherwise the views cover exactly the input, and writing the
 * parsed header back gives the same 14 bytes.
 */
import { parseEthernet, writeEthernetHeader, ETHERNET_HEADER_LENGTH } from '../../../src/net/wire/ethernet.js';
import { check, type FuzzTarget } from '../engine/input.js';
import { seedFrames } from '../seeds.js';

export const target: FuzzTarget = {
  name: 'ethernet',
  maxLength: 1600,
  seeds: seedFrames,
  run(frame) {
    const e = parseEthernet(frame);
    if (typeof e === 'string') {
      check(e === 'truncated' && frame.length < ETHERNET_HEADER_LENGTH, `drop reason ${e} for ${frame.length} bytes`);
      return;
    }
    check(e.dst.length === 6 && e.src.length === 6, 'MAC views not 6 bytes');
    check(e.payload.length === frame.length - ETHERNET_HEADER_LENGTH && e.payload.byteOffset === frame.byteOffset + ETHERNET_HEADER_LENGTH, 'payload view');
    const header = new Uint8Array(ETHERNET_HEADER_LENGTH);
    writeEthernetHeader(header, e.dst, e.src, e.etherType);
    check(Buffer.compare(header, frame.subarray(0, ETHERNET_HEADER_LENGTH)) === 0, 'header does not round-trip');
  },
};
