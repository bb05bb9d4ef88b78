/**
 * Random-input fuzzing of the backend side: seeded streams of valid,
 * mutated (bit flips, wrong sizes, truncation, random codes, extra or
 * missing fds, fds of the wrong kind: /dev/zero, sockets) and purely random
 * vhost-user messages go into sessions serving the real virtio-net device,
 * with guest memory full of random bytes and random kicks. Some messages are
 * trickled in random pieces, with fds attached to any piece (or to several:
 * an fd flood). Nothing may throw out of the session, every session ends
 * cleanly when the frontend goes away, and no fd is left behind.
 */
import { openSync, closeSync } from 'node:fs';
import { describe, it, expect } from 'vitest';
import { native } from '../src/native/index.js';
import { VhostUserSession } from '../src/vhost-user/session.js';
import { VirtioNetDevice } from '../src/virtio/net-device.js';
import type { FrameSink } from '../src/net/link.js';
import { HEADER_SIZE } from '../src/vhost-user/messages.js';
import { mulberry32 as prng } from './helpers/prng.js';
import { FD_KINDS, MEM_SIZE, settle, validStream, type Msg } from './helpers/vhost-user-streams.js';

function mutate(m: Msg, rnd: () => number): Msg {
  let bytes = m.bytes.slice();
  let fds = [...m.fds];
  const dv = () => new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  switch (Math.floor(rnd() * 8)) {
    case 0: // bit flips anywhere
      for (let k = 1 + Math.floor(rnd() * 3); k > 0; k--) {
        const i = Math.floor(rnd() * bytes.length);
        bytes[i]! ^= 1 << Math.floor(rnd() * 8);
      }
      break;
    case 1: // wrong size field
      dv().setUint32(8, rnd() < 0.5 ? Math.floor(rnd() * 64) : Math.floor(rnd() * 0xffffffff), true);
      break;
    case 2: // truncated
      bytes = bytes.subarray(0, Math.floor(rnd() * bytes.length));
      break;
    case 3: // trailing garbage
      bytes = Uint8Array.from([...bytes, ...Array.from({ length: 1 + Math.floor(rnd() * 40) }, () => Math.floor(rnd() * 256))]);
      break;
    case 4: // random request code
      dv().setUint32(0, rnd() < 0.8 ? Math.floor(rnd() * 50) : Math.floor(rnd() * 0xffffffff), true);
      break;
    case 5: // random u64 somewhere in the payload
      if (bytes.length >= HEADER_SIZE + 8) {
        const off = HEADER_SIZE + Math.floor(rnd() * (bytes.length - HEADER_SIZE - 7));
        dv().setBigUint64(off, BigInt.asUintN(64, BigInt(Math.floor(rnd() * 2 ** 53)) * BigInt(1 + Math.floor(rnd() * 4096))), true);
      }
      break;
    case 6: // extra fds
      for (let k = 1 + Math.floor(rnd() * 3); k > 0; k--) fds.push(FD_KINDS[Math.floor(rnd() * FD_KINDS.length)]!);
      break;
    case 7: // missing fds, or fds of the wrong kind
      if (rnd() < 0.5) fds = fds.slice(0, Math.floor(rnd() * fds.length));
      else fds = fds.map(() => FD_KINDS[Math.floor(rnd() * FD_KINDS.length)]!);
      break;
  }
  return { bytes, fds };
}

function randomStream(rnd: () => number): Msg[] {
  const out: Msg[] = [];
  for (let n = 1 + Math.floor(rnd() * 10); n > 0; n--) {
    const len = Math.floor(rnd() * 80);
    const bytes = Uint8Array.from({ length: len }, () => Math.floor(rnd() * 256));
    // Often make the header look plausible so the payload decoders get exercised.
    if (len >= 12 && rnd() < 0.7) {
      const v = new DataView(bytes.buffer);
      v.setUint32(0, Math.floor(rnd() * 45), true);
      v.setUint32(4, rnd() < 0.5 ? 1 : 9, true);
      v.setUint32(8, len - 12, true);
    }
    out.push({ bytes, fds: rnd() < 0.2 ? ['event'] : [] });
  }
  return out;
}

const sink: FrameSink = { receive() {} };

/** FUZZ_SEED / FUZZ_STREAMS override the fixed seed and count (for longer local runs). */
const SEED = Number(process.env.FUZZ_SEED ?? 0x5eed_1234);
const STREAMS = Number(process.env.FUZZ_STREAMS ?? 400);

describe('fuzz: random and mutated message streams into a session', () => {
  it(`nothing throws out, sessions end cleanly, no fd leaks (${STREAMS} streams, seed ${SEED})`, async () => {
    const rnd = prng(SEED);
    const memfd = native.memfdCreate('fuzz-guest', MEM_SIZE);
    const zero = openSync('/dev/zero', 'r+');
    const [sockA, sockB] = native.unixSocketPair();
    const mapping = native.mmap(memfd, MEM_SIZE, 0);
    const guest = new Uint32Array(mapping.buffer);
    const fdsBefore = native.openFdCount();
    const errors: unknown[] = [];
    const onUncaught = (e: unknown): void => {
      errors.push(e);
    };
    process.on('uncaughtException', onUncaught);
    let framingClosures = 0;
    let refusals = 0;
    let brokenRings = 0;
    let internalErrors = 0;
    let trickled = 0;
    const endReasons: string[] = [];
    try {
      for (let s = 0; s < STREAMS; s++) {
        // Guest memory full of random bytes (with some zero pages) for the rings.
        // (all of it once, then a random 64 KiB window per stream).
        const from = s === 0 ? 0 : Math.floor(rnd() * (guest.length - 16384));
        const to = s === 0 ? guest.length : from + 16384;
        for (let i = from; i < to; i++) guest[i] = rnd() < 0.3 ? 0 : (rnd() * 0x1_0000_0000) >>> 0;
        const kind = rnd();
        const stream = kind < 0.2 ? validStream(rnd) : kind < 0.85 ? validStream(rnd).map((m) => (rnd() < 0.3 ? mutate(m, rnd) : m)) : randomStream(rnd);
        const device = new VirtioNetDevice({ mac: Uint8Array.from([2, 0, 0, 0, 0, 1]), mtu: 1500, sink });
        const [a, b] = native.unixSocketPair();
        let endReason: string | null | undefined;
        const session = new VhostUserSession(a, device, { onClose: (r) => (endReason = r) });
        device.onBroken = (q, r) => {
          brokenRings++;
          session.deviceBroken(q, r);
        };
        const ours: number[] = [];
        for (const m of stream) {
          const fds = m.fds.map((k) => {
            if (k === 'mem') return memfd;
            if (k === 'zero') return zero;
            if (k === 'sock') return sockA;
            const e = native.eventfdCreate();
            ours.push(e);
            return e;
          });
          if (m.bytes.length > 1 && rnd() < 0.1) {
            // Trickle: random pieces, a turn of the loop between them; the
            // fds ride on a random piece, or (an fd flood) on every piece.
            trickled++;
            const flood = rnd() < 0.3;
            const carrier = Math.floor(rnd() * 4);
            let off = 0;
            let piece = 0;
            let gone = false;
            while (off < m.bytes.length && !gone) {
              const n = Math.min(m.bytes.length - off, 1 + Math.floor(rnd() * 16));
              const withFds = flood ? [...fds, ...fds, memfd, memfd, memfd, memfd, memfd, memfd, memfd, memfd] : piece === carrier ? fds : [];
              try {
                if (native.sendMsg(b, m.bytes.subarray(off, off + n), withFds) === null) gone = true;
              } catch {
                gone = true;
              }
              off += n;
              piece++;
              await new Promise((r) => setImmediate(r));
            }
            if (gone) break;
            continue;
          }
          let sent: number | null = null;
          try {
            sent = native.sendMsg(b, m.bytes, fds);
          } catch {
            break; // the session closed its end (framing error)
          }
          if (sent === null) break; // socket full: enough for this stream
          if (sent < m.bytes.length) {
            // Finish a partial write (rare with small messages).
            try {
              native.sendMsg(b, m.bytes.subarray(sent), []);
            } catch {
              break;
            }
          }
          if (rnd() < 0.1) await settle(session);
        }
        await settle(session);
        // Random kicks on the eventfds we sent (some are kick fds of started rings).
        for (const e of ours) if (rnd() < 0.5) native.eventfdSignal(e);
        await new Promise((r) => setTimeout(r, 2));
        refusals += session.stats.errors;
        internalErrors += session.stats.internalErrors;
        const closedByBackend = session.closed;
        native.close(b);
        for (const e of ours) native.close(e);
        await settle(session);
        for (let i = 0; i < 100 && !session.closed; i++) await new Promise((r) => setTimeout(r, 1));
        expect(session.closed).toBe(true);
        if (closedByBackend && endReason) framingClosures++;
        if (endReason) endReasons.push(endReason);
      }
      await new Promise((r) => setTimeout(r, 10));
    } finally {
      process.off('uncaughtException', onUncaught);
    }
    expect(errors).toEqual([]);
    expect(internalErrors).toBe(0);
    expect(endReasons.filter((r) => /handler failed/.test(r))).toEqual([]);
    expect(native.openFdCount()).toBe(fdsBefore);
    // The fuzz reached every layer: refusals, framing closures and broken rings all happened.
    expect(refusals).toBeGreaterThan(100);
    expect(framingClosures).toBeGreaterThan(10);
    expect(brokenRings).toBeGreaterThan(0);
    expect(trickled).toBeGreaterThan(20);
    native.munmap(mapping);
    native.close(memfd);
    closeSync(zero);
    native.close(sockA);
    native.close(sockB);
  }, 120_000);
});
