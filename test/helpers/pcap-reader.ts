/**
 * Reading captures made by others (libslirp's fuzzing corpora in
 * ../shared/corpora/libslirp/) as Ethernet frames: classic pcap files
 * (either byte order, micro- or nanosecond timestamps) of Ethernet
 * (linktype 1) or Linux cooked captures (v1: 113, v2: 276, turned into
 * Ethernet frames with the capture's source address and protocol), and
 * `.pkt` files that hold one bare Ethernet frame.
 *
 * `sharedCorpusDir` finds the corpus beside the clone: `shared/` sits next to
 * the checkout in CI (../shared) and a level higher for a git worktree, so
 * the parents of the repository are searched; null when there is none (a
 * test that needs it then says so or skips).
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const LINKTYPE_ETHERNET = 1;
const LINKTYPE_LINUX_SLL = 113;
const LINKTYPE_LINUX_SLL2 = 276;

/** Destination MAC given to frames rebuilt from a cooked capture (the gateway's, as the guest would send them). */
const COOKED_DST = Uint8Array.of(0x52, 0x55, 0x0a, 0x00, 0x02, 0x02);

function ethernet(src: Uint8Array, protocol: number, payload: Uint8Array): Uint8Array {
  const f = new Uint8Array(14 + payload.length);
  f.set(COOKED_DST, 0);
  f.set(src.subarray(0, 6), 6);
  f[12] = protocol >>> 8;
  f[13] = protocol & 0xff;
  f.set(payload, 14);
  return f;
}

/** The frames of one classic pcap file, as Ethernet frames (records of other link types are skipped). */
export function readPcapFrames(bytes: Uint8Array): Uint8Array[] {
  if (bytes.length < 24) throw new Error('pcap: shorter than its global header');
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const magic = dv.getUint32(0, true);
  let le: boolean;
  if (magic === 0xa1b2c3d4 || magic === 0xa1b23c4d) le = true;
  else if (magic === 0xd4c3b2a1 || magic === 0x4d3cb2a1) le = false;
  else throw new Error(`pcap: bad magic 0x${magic.toString(16)}`);
  const linkType = dv.getUint32(20, le) & 0xffff;
  const frames: Uint8Array[] = [];
  for (let off = 24; off + 16 <= bytes.length; ) {
    const capLen = dv.getUint32(off + 8, le);
    const data = bytes.subarray(off + 16, off + 16 + capLen);
    off += 16 + capLen;
    if (data.length < capLen) break; // cut-off file
    if (linkType === LINKTYPE_ETHERNET) frames.push(data.slice());
    else if (linkType === LINKTYPE_LINUX_SLL2 && data.length >= 20) {
      frames.push(ethernet(data.subarray(12, 18), (data[0]! << 8) | data[1]!, data.subarray(20)));
    } else if (linkType === LINKTYPE_LINUX_SLL && data.length >= 16) {
      frames.push(ethernet(data.subarray(6, 12), (data[14]! << 8) | data[15]!, data.subarray(16)));
    }
  }
  return frames;
}

/** `shared/corpora/libslirp` in the nearest parent of the repository that has one, or null. */
export function sharedCorpusDir(): string | null {
  let dir = path.resolve(fileURLToPath(new URL('../..', import.meta.url)));
  for (;;) {
    const parent = path.dirname(dir);
    if (parent === dir) return null;
    dir = parent;
    const candidate = path.join(dir, 'shared', 'corpora', 'libslirp');
    if (existsSync(candidate)) return candidate;
  }
}

/** Every frame of every .pcap and .pkt file under `dir` (sorted by path; the same file in two folders counts once). */
export function corpusFrames(dir: string): Array<{ file: string; frames: Uint8Array[] }> {
  const files: string[] = [];
  const walk = (d: string): void => {
    for (const name of readdirSync(d).sort()) {
      const p = path.join(d, name);
      if (statSync(p).isDirectory()) walk(p);
      else if (name.endsWith('.pcap') || name.endsWith('.pkt')) files.push(p);
    }
  };
  walk(dir);
  const seen = new Set<string>();
  const out: Array<{ file: string; frames: Uint8Array[] }> = [];
  for (const file of files) {
    const bytes = new Uint8Array(readFileSync(file));
    const key = Buffer.from(bytes).toString('base64');
    if (seen.has(key)) continue;
    seen.add(key);
    out.push({ file: path.relative(dir, file), frames: file.endsWith('.pkt') ? [bytes] : readPcapFrames(bytes) });
  }
  return out;
}
