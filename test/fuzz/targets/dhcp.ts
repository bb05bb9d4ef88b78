/**
 * Fuzz target: parseDhcp. Drop reasons come from a fixed set; a parsed
 * message's options fit in the option area, the message type is what option
 * 53 says, and the options written again with DhcpWriter parse back to the
 * same values.
 */
import { parseDhcp, DhcpWriter, DHCP_OPTIONS_OFFSET, OPT_MESSAGE_TYPE } from '../../../src/net/wire/dhcp.js';
import { check, type FuzzTarget } from '../engine/input.js';
import { seedFrames, udpPayloads } from '../seeds.js';

const REASONS = new Set(['truncated', 'bad_hardware_type', 'bad_cookie', 'bad_option']);

export const target: FuzzTarget = {
  name: 'dhcp',
  maxLength: 1500,
  seeds: () => [...udpPayloads(seedFrames(), 67), ...udpPayloads(seedFrames(), 68)],
  run(bytes) {
    const d = parseDhcp(bytes);
    if (typeof d === 'string') {
      check(REASONS.has(d), `unknown drop reason ${d}`);
      return;
    }
    let total = 0;
    for (const [code, value] of d.options) {
      check(code > 0 && code < 255, `option code ${code}`);
      total += value.length;
    }
    check(total <= bytes.length - DHCP_OPTIONS_OFFSET, `${total} option bytes in ${bytes.length - DHCP_OPTIONS_OFFSET}`);
    const mt = d.options.get(OPT_MESSAGE_TYPE);
    check(d.messageType === (mt !== undefined && mt.length === 1 ? mt[0] : 0), `message type ${d.messageType}`);
    check(d.chaddr.length === 6, 'chaddr view');
    const w = new DhcpWriter(1500);
    w.header({ xid: d.xid, flags: d.flags, ciaddr: d.ciaddr, yiaddr: d.yiaddr, siaddr: d.siaddr, giaddr: d.giaddr, chaddr: d.chaddr });
    const written = [...d.options].filter(([code, value]) => w.option(code, value));
    const again = parseDhcp(w.finish());
    check(typeof again !== 'string', () => `written message does not parse: ${again as string}`);
    check(again.xid === d.xid && again.flags === d.flags && again.ciaddr === d.ciaddr && again.yiaddr === d.yiaddr && again.giaddr === d.giaddr, 'header fields do not round-trip');
    check(again.options.size === written.length, `${again.options.size} options back, ${written.length} written`);
    for (const [code, value] of written) check(Buffer.compare(again.options.get(code) ?? new Uint8Array(0), value) === 0, `option ${code} does not round-trip`);
  },
};
