/**
 * The IPv6 frames of the libslirp captures in ../shared/corpora/libslirp
 * (read with pcap-reader.ts), parsed down to the upper layer, for the
 * corpus-replay tests of the IPv6 wire layer, NDP and DHCPv6.
 *
 * `ipv6CorpusFrames()` is null when the corpus is not beside the checkout;
 * the tests then skip, and `CORPUS_SKIP_NOTE` says why in their names. A
 * frame that does not parse is returned with the reason in `error`, so a
 * test can assert that none does.
 */
import { corpusFrames, sharedCorpusDir } from './pcap-reader.js';
import { parseEthernet, type EthernetView } from '../../src/net/wire/ethernet.js';
import { parseIPv6Packet, walkIPv6Headers, type IPv6UpperLayer, type IPv6View } from '../../src/net/wire/ipv6.js';

export const CORPUS_SKIP_NOTE = 'needs ../shared/corpora/libslirp beside the checkout';

export interface CorpusIpv6Frame {
  /** "IN_icmp6/ndp.pcap#0" */
  name: string;
  frame: Uint8Array;
  eth: EthernetView;
  ip: IPv6View | null;
  upper: IPv6UpperLayer | null;
  error: string | null;
}

let cached: CorpusIpv6Frame[] | null | undefined;

/** Every IPv6 frame of the corpus (identical files counted once), or null without a corpus. */
export function ipv6CorpusFrames(): CorpusIpv6Frame[] | null {
  if (cached !== undefined) return cached;
  const dir = sharedCorpusDir();
  if (dir === null) {
    console.warn(`IPv6 corpus replay skipped: ${CORPUS_SKIP_NOTE}`);
    return (cached = null);
  }
  const out: CorpusIpv6Frame[] = [];
  for (const { file, frames } of corpusFrames(dir)) {
    frames.forEach((frame, i) => {
      const eth = parseEthernet(frame);
      if (typeof eth === 'string' || eth.etherType !== 0x86dd) return;
      const name = `${file}#${i}`;
      const ip = parseIPv6Packet(eth.payload);
      if (typeof ip === 'string') return out.push({ name, frame, eth, ip: null, upper: null, error: ip });
      const upper = walkIPv6Headers(ip);
      if (typeof upper === 'string') return out.push({ name, frame, eth, ip, upper: null, error: upper });
      if (upper.kind !== 'upper_layer') return out.push({ name, frame, eth, ip, upper: null, error: upper.reason });
      out.push({ name, frame, eth, ip, upper, error: null });
    });
  }
  return (cached = out);
}
