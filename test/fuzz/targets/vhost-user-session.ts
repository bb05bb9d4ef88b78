/**
 * Fuzz target: the vhost-user message stream, end to end on the backend side.
 * The input is the byte stream a frontend writes; it goes over a real Unix
 * socket pair into a VhostUserSession (connection framing, decoding, the
 * session's state machine) serving the real virtio-net device, with guest
 * memory in a real memfd filled with a fixed pattern (rings point into it).
 *
 * File descriptors cannot come from bytes, so the harness attaches them the
 * way a frontend does, by the request code of each message (boundaries from
 * the header's size field): one memfd per region of SET_MEM_TABLE (the count
 * from the payload, at most 32), one for ADD_MEM_REG, a fresh eventfd for
 * SET_VRING_KICK/CALL/ERR without the no-fd bit and for SET_BACKEND_REQ_FD.
 * The first input byte can make the harness trickle each message in small
 * pieces with a turn of the event loop between them, so the connection sees
 * headers and payloads arrive in parts. After the stream, every eventfd
 * sent is signalled (kicks for started rings).
 *
 * Invariants: nothing escapes (no uncaught exception, no internal error in the
 * session, no "handler failed" closure); every reply parses as a reply
 * header with its whole payload and answers a request that was sent; the
 * session ends when the frontend goes away; and no file descriptor is left
 * open afterwards.
 */
import { native } from '../../../src/native/index.js';
import { VhostUserSession } from '../../../src/vhost-user/session.js';
import { VirtioNetDevice } from '../../../src/virtio/net-device.js';
import { HEADER_SIZE, MAX_MEM_SLOTS, Req, VRING_NOFD_MASK, decodeHeader } from '../../../src/vhost-user/messages.js';
import { MEM_SIZE, settle, validStream } from '../../helpers/vhost-user-streams.js';
import { mulberry32 } from '../../helpers/prng.js';
import { check, type FuzzTarget } from '../engine/input.js';

interface Resources {
  memfd: number;
  guest: Uint8Array;
  pattern: Uint8Array;
  uncaught: unknown[];
}

let resources: Resources | null = null;

function setup(): Resources {
  const memfd = native.memfdCreate('fuzz-session-guest', MEM_SIZE);
  const mapping = native.mmap(memfd, MEM_SIZE, 0);
  const guest = new Uint8Array(mapping.buffer);
  // A fixed pattern: a third zero bytes, the rest from a PRNG.
  const rnd = mulberry32(0x5e55);
  const pattern = Uint8Array.from({ length: MEM_SIZE }, () => (rnd() < 0.3 ? 0 : Math.floor(rnd() * 256)));
  const uncaught: unknown[] = [];
  process.on('uncaughtException', (e) => uncaught.push(e));
  return { memfd, guest, pattern, uncaught };
}

/** The stream cut into messages (the last one may be partial), each with the fds a frontend would attach. */
function messages(data: Uint8Array, memfd: number): Array<{ bytes: Uint8Array; fds: number[]; events: number }> {
  const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const out: Array<{ bytes: Uint8Array; fds: number[]; events: number }> = [];
  for (let pos = 0; pos < data.length; ) {
    if (data.length - pos < HEADER_SIZE) {
      out.push({ bytes: data.subarray(pos), fds: [], events: 0 });
      break;
    }
    const request = dv.getUint32(pos, true);
    const end = Math.min(data.length, pos + HEADER_SIZE + dv.getUint32(pos + 8, true));
    const payload = data.subarray(pos + HEADER_SIZE, end);
    let mem = 0;
    let events = 0;
    if (request === Req.SET_MEM_TABLE && payload.length >= 4) mem = Math.min(MAX_MEM_SLOTS, dv.getUint32(pos + HEADER_SIZE, true));
    else if (request === Req.ADD_MEM_REG) mem = 1;
    else if (request === Req.SET_VRING_KICK || request === Req.SET_VRING_CALL || request === Req.SET_VRING_ERR) {
      events = payload.length >= 2 && (dv.getUint16(pos + HEADER_SIZE, true) & VRING_NOFD_MASK) !== 0 ? 0 : 1;
    } else if (request === Req.SET_BACKEND_REQ_FD) events = 1;
    out.push({ bytes: data.subarray(pos, end), fds: Array.from({ length: mem }, () => memfd), events });
    pos = end;
  }
  return out;
}

async function turns(n: number): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
}

async function runSession(data: Uint8Array): Promise<void> {
  const res = (resources ??= setup());
  res.guest.set(res.pattern);
  res.uncaught.length = 0;
  const fdsBefore = native.openFdCount();
  const device = new VirtioNetDevice({ mac: Uint8Array.of(2, 0, 0, 0, 0, 1), mtu: 1500, sink: { receive() {} } });
  const [ours, theirs] = native.unixSocketPair();
  let endReason: string | null | undefined;
  const session = new VhostUserSession(theirs, device, { onClose: (r) => (endReason = r) });
  device.onBroken = (q, r) => session.deviceBroken(q, r);
  const eventfds: number[] = [];
  const sent = new Set<number>();
  try {
    // The first byte: bit 0 trickles every message in pieces of 1 + (byte >> 1) % 16 bytes, a turn of the event loop between pieces.
    const mode = data[0] ?? 0;
    const piece = (mode & 1) !== 0 ? 1 + ((mode >>> 1) % 16) : Infinity;
    let open = true;
    for (const m of messages(data.subarray(1), res.memfd)) {
      const fds = [...m.fds];
      for (let i = 0; i < m.events; i++) {
        const e = native.eventfdCreate();
        eventfds.push(e);
        fds.push(e);
      }
      if (m.bytes.length >= 4) sent.add(new DataView(m.bytes.buffer, m.bytes.byteOffset).getUint32(0, true));
      for (let off = 0; off < m.bytes.length && open; off += piece) {
        const chunk = m.bytes.subarray(off, off + piece);
        let n: number | null = null;
        try {
          n = native.sendMsg(ours, chunk, off === 0 ? fds : []);
        } catch {
          /* the session closed its end (a framing error) */
        }
        if (n === null || n < chunk.length) open = false; // closed, or the socket is full: enough
        else if (piece !== Infinity) await turns(1);
      }
      if (!open) break;
    }
    await settle(session);
    for (const e of eventfds) native.eventfdSignal(e);
    await turns(4);
    // Every reply: a valid reply header, its whole payload, for a request we sent.
    const replies: Uint8Array[] = [];
    const buf = new Uint8Array(1 << 16);
    for (;;) {
      let r;
      try {
        r = native.recvMsg(ours, buf, 8);
      } catch {
        break;
      }
      if (r === null || r.bytes === 0) break;
      for (const fd of r.fds) native.close(fd);
      check(r.fds.length === 0, 'a reply carried fds');
      replies.push(buf.slice(0, r.bytes));
    }
    const stream = Buffer.concat(replies);
    for (let pos = 0; pos < stream.length; ) {
      const h = decodeHeader(stream.subarray(pos), 'reply');
      check(h.ok, () => `bad reply header at ${pos}: ${(h as { reason: string }).reason}`);
      check(pos + HEADER_SIZE + h.value.size <= stream.length, 'a reply cut short');
      check(sent.has(h.value.request), `a reply to request ${h.value.request}, which was not sent`);
      pos += HEADER_SIZE + h.value.size;
    }
    check(session.stats.internalErrors === 0, () => `internal error in the session: ${session.stats.lastError}`);
  } finally {
    native.close(ours);
    for (const e of eventfds) native.close(e);
  }
  await settle(session);
  for (let i = 0; i < 200 && !session.closed; i++) await new Promise((r) => setTimeout(r, 1));
  check(session.closed, 'the session did not end when the frontend went away');
  check(!/handler failed/.test(endReason ?? ''), `session ended with: ${endReason}`);
  check(res.uncaught.length === 0, () => `uncaught: ${String(res.uncaught[0])}`);
  const open = native.openFdCount();
  check(open === fdsBefore, `${open - fdsBefore} fd(s) left open`);
}

export const target: FuzzTarget = {
  name: 'vhost-user-session',
  maxLength: 4096,
  // Valid streams, sent whole (first byte 0) and in 5-byte pieces (first byte 9).
  seeds: () => [1, 2, 3, 4, 5, 6].map((s) => Buffer.concat([Uint8Array.of(s % 2 === 0 ? 0 : 9), ...validStream(mulberry32(s)).map((m) => m.bytes)])),
  run: runSession,
};
