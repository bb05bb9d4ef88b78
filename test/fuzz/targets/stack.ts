/**
 * Fuzz target: the whole stack, frames in through Stack.receive over a
 * FakeLink, as the device hands them over. No input reaches a network: host
 * sockets are either refused (restricted mode) or fakes (FakeTcpSocket,
 * FakeUdpSocket) whose host side the input itself plays — TCP peers, UDP
 * peers, the DNS upstream, ICMP errors from the kernel's error queue.
 *
 * Input: one configuration byte (bit 0: the TCP translator on; bit 1: the
 * guest takes partial checksums and TSO; bit 2: a link with no room, so
 * output meets back-pressure; bit 3: host mode — not restricted, TCP and
 * UDP flows and the DNS forwarder (upstream 127.0.0.1:53) on fake sockets,
 * at most 8 flows of each), then operations until the input ends, each one
 * byte `op`:
 *   op & 7 = 0, 1  a frame: u16 length, the bytes. Bit 4: an offload header
 *                  comes first (flags, csumStart, csumOffset, gsoType,
 *                  gsoSize, hdrLen). Bit 5: the harness fixes the IPv4 and
 *                  L4 checksums. Bit 6: a TCP segment's ack field is taken
 *                  as an offset from the next sequence number the stack sent
 *                  on that connection (the guest "knows" our random ISN).
 *   op & 7 = 2     time passes (u16 * 10 ms) and the stack ticks
 *   op & 7 = 3     the batch ends (flush), and room appears on the link
 *   op & 7 = 4     host socket (u8 picks one, in creation order) connects
 *   op & 7 = 5     host socket (u8) receives data: with bit 4, a source
 *                  (u8 picks an address, u16 port) for UDP, else the last
 *                  destination; u16 length % 4096, the bytes. Bit 5: a UDP
 *                  datagram starts with the first two bytes of the last one
 *                  sent (a DNS answer "knows" our random query id)
 *   op & 7 = 6     host socket (u8), u8 how: TCP ends, fails, closes or
 *                  times out; UDP gets an error, with bit 4 after an ICMP
 *                  error queued for it (u8 type, u8 code, u16 info)
 *   op & 7 = 7     every host write completes ('drain')
 *
 * Invariants after every operation (after the microtasks it queued ran, as
 * the event loop would): no exception was caught anywhere in the stack
 * (every `*.exception` counter is zero; the logged stack trace is the
 * finding), every frame sent parses with good checksums (except L4
 * checksums left partial on purpose), flows and DNS queries stay within
 * their limits (none at all when sockets are refused), the reassembler
 * stays within its limits, every counter name is one the source can
 * produce, and after close() no host socket is left open.
 */
import { Stack } from '../../../src/net/stack.js';
import { CounterSet } from '../../../src/net/counters.js';
import type { FrameOffload } from '../../../src/net/link.js';
import { l4Checksum, checksum } from '../../../src/net/wire/checksum.js';
import { FakeLink } from '../../helpers/fake-link.js';
import { FakeTcpSocket } from '../../helpers/fake-tcp-socket.js';
import { FakeUdpSocket } from '../../helpers/fake-udp-socket.js';
import { DNS_IP, TCP_FLAGS, guestTcpFrame, guestUdpFrame, ip, parseFrame, sentFrameProblem } from '../../helpers/packets.js';
import { isKnownCounterName } from '../../helpers/counter-names.js';
import { FuzzInput, FuzzInputWriter, check, type FuzzTarget } from '../engine/input.js';
import { builtFrames, guestSeedFrames } from '../seeds.js';

const MAX_FRAME = 65535 + 14;
const MAX_FLOWS = 8;
const HOST_ERRORS = ['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENOTFOUND'];
/** Sources a UDP datagram may come from: the gateway's host side, a peer, an address the guest never used. */
const UDP_SOURCES = ['127.0.0.1', '192.0.2.1', '198.51.100.7', '10.0.2.2', '0.0.0.0'];
/** ICMP types the error queue may report (dest. unreachable, time exceeded, redirect, and others the stack ignores). */
const ICMP_TYPES = [3, 11, 5, 12, 0];

function refuse(): never {
  throw new Error('no sockets while fuzzing');
}

function be16(b: Uint8Array, at: number, v: number): void {
  b[at] = (v >>> 8) & 0xff;
  b[at + 1] = v & 0xff;
}

/** Recompute the IPv4 header checksum and the TCP/UDP/ICMP checksum of an unfragmented packet, in place. */
function fixChecksums(frame: Uint8Array): void {
  if (frame.length < 34 || frame[12] !== 0x08 || frame[13] !== 0x00) return;
  const hl = (frame[14]! & 0x0f) * 4;
  const total = (frame[16]! << 8) | frame[17]!;
  if (hl < 20 || 14 + hl > frame.length) return;
  be16(frame, 24, 0);
  be16(frame, 24, checksum(frame.subarray(14, 14 + hl)));
  const fragmented = (((frame[20]! << 8) | frame[21]!) & 0x3fff) !== 0;
  if (fragmented || total < hl || 14 + total > frame.length) return;
  const l4 = frame.subarray(14 + hl, 14 + total);
  const dv = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  const src = dv.getUint32(26, false);
  const dst = dv.getUint32(30, false);
  const proto = frame[23];
  const at = proto === 6 ? 16 : proto === 17 ? 6 : proto === 1 ? 2 : -1;
  if (at < 0 || l4.length < at + 2) return;
  be16(l4, at, 0);
  const c = proto === 1 ? checksum(l4) : l4Checksum(src, dst, proto!, l4);
  be16(l4, at, proto === 17 && c === 0 ? 0xffff : c);
}

/** Next sequence number the stack sent per connection, keyed guest port:remote port. */
function learnSequence(frames: Uint8Array[], next: Map<string, number>): void {
  for (const f of frames) {
    let p;
    try {
      p = parseFrame(f);
    } catch {
      continue;
    }
    const t = p.tcp;
    if (t === undefined) continue;
    const len = t.payload.length + (t.flags & TCP_FLAGS.SYN ? 1 : 0) + (t.flags & TCP_FLAGS.FIN ? 1 : 0);
    next.set(`${t.dport}:${t.sport}`, (t.seq + len) >>> 0);
  }
}

/** Make a guest TCP segment's ack field an offset from what the stack sent (no-op for anything else). */
function relativeAck(frame: Uint8Array, next: Map<string, number>): void {
  if (frame.length < 34 || frame[12] !== 0x08 || frame[13] !== 0x00 || frame[23] !== 6) return;
  const l4 = 14 + (frame[14]! & 0x0f) * 4;
  if (l4 + 20 > frame.length) return;
  const dv = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  const base = next.get(`${dv.getUint16(l4, false)}:${dv.getUint16(l4 + 2, false)}`);
  if (base !== undefined) dv.setUint32(l4 + 8, (base + dv.getUint32(l4 + 8, false)) >>> 0, false);
}

async function drainMicrotasks(): Promise<void> {
  for (let i = 0; i < 4; i++) await null;
}

export async function runStack(data: Uint8Array): Promise<void> {
  const input = new FuzzInput(data);
  const config = input.u8();
  const hostMode = (config & 8) !== 0;
  const link = new FakeLink();
  if (config & 2) link.rxOffloads = { csum: true, tso4: true, tso6: false };
  link.full = (config & 4) !== 0;
  const counters = new CounterSet();
  const clock = { t: 0, now() { return this.t; } };
  const logs: string[] = [];
  const sockets: Array<FakeTcpSocket | FakeUdpSocket> = [];
  const udpSocket = (): FakeUdpSocket => {
    const u = new FakeUdpSocket();
    sockets.push(u);
    return u;
  };
  const stack = new Stack({
    link, counters, clock, ping: null, logger: (m) => logs.push(m), ...((config & 1) !== 0 ? {} : { tcp: null }),
    config: {
      restrict: !hostMode, dnsUpstreams: hostMode ? [{ address: '127.0.0.1', port: 53 }] : [], maxTcpFlows: MAX_FLOWS, maxUdpFlows: MAX_FLOWS, maxDnsQueries: MAX_FLOWS,
    },
    udpSocket: hostMode ? () => udpSocket().host() : refuse,
    host: {
      createUdpSocket: hostMode ? () => udpSocket().asSocket() : refuse,
      connectTcp: hostMode
        ? (options) => {
            const s = new FakeTcpSocket(options);
            sockets.push(s);
            return s.asSocket();
          }
        : refuse,
    },
  });
  const limits = stack.reassembler.limits;
  const sent = new Map<string, number>();
  const socket = (): FakeTcpSocket | FakeUdpSocket | undefined => {
    const pick = input.u8();
    return sockets.length === 0 ? undefined : sockets[pick % sockets.length];
  };
  try {
    while (input.remaining > 0) {
      const op = input.u8();
      switch (op & 7) {
        case 0:
        case 1: {
          let offload: FrameOffload | null = null;
          if (op & 0x10) {
            const flags = input.u8();
            offload = {
              needsCsum: (flags & 1) !== 0, dataValid: (flags & 2) !== 0, csumStart: input.u16(), csumOffset: input.u16(),
              gsoType: input.u8(), gsoSize: input.u16(), hdrLen: input.u16(),
            };
          }
          const frame = input.take(input.u16() % (MAX_FRAME + 1)).slice();
          if (op & 0x40) relativeAck(frame, sent);
          if (op & 0x20) fixChecksums(frame);
          stack.receive(frame, offload);
          break;
        }
        case 2:
          clock.t += input.u16() * 10;
          stack.tick();
          break;
        case 3:
          stack.batchEnd();
          link.makeWritable();
          break;
        case 4: {
          const s = socket();
          if (s instanceof FakeTcpSocket) s.connect();
          break;
        }
        case 5: {
          const s = socket();
          const from = op & 0x10 ? { address: UDP_SOURCES[input.u8() % UDP_SOURCES.length]!, port: input.u16() } : null;
          const bytes = input.take(input.u16() % 4096).slice();
          if (s instanceof FakeTcpSocket) s.receive(bytes);
          else if (s !== undefined) {
            const last = s.sent.at(-1);
            if (op & 0x20 && last !== undefined && last.data.length >= 2 && bytes.length >= 2) bytes.set(last.data.subarray(0, 2));
            s.receive(bytes, from?.address ?? last?.address ?? '127.0.0.1', from?.port ?? last?.port ?? 53);
          }
          break;
        }
        case 6: {
          const s = socket();
          const how = input.u8();
          const icmp = op & 0x10 ? { type: ICMP_TYPES[input.u8() % ICMP_TYPES.length]!, code: input.u8() % 16, info: input.u16() } : null;
          if (s instanceof FakeTcpSocket) {
            if (how % 4 === 0) s.peerEnd();
            else if (how % 4 === 1) s.fail(HOST_ERRORS[(how >>> 2) % HOST_ERRORS.length]!);
            else if (how % 4 === 2) s.destroy();
            else s.fireTimeout();
          } else if (s !== undefined) {
            const last = s.sent.at(-1);
            const queued = icmp === null ? [] : [{
              address: last?.address ?? '', port: last?.port ?? 0, origin: how & 1 ? 1 : 2, ...icmp, errno: 111,
              offender: how & 2 ? UDP_SOURCES[(how >>> 2) % UDP_SOURCES.length]! : '',
            }];
            s.fail(HOST_ERRORS[(how >>> 2) % HOST_ERRORS.length]!, queued);
          }
          break;
        }
        default:
          for (const s of sockets) if (s instanceof FakeTcpSocket) s.flushWrites();
      }
      await drainMicrotasks();
      const exceptions = Object.entries(counters.snapshot()).filter(([name, n]) => name.endsWith('.exception') && n > 0);
      check(exceptions.length === 0, () => `exception caught in the stack (${exceptions.map(([n]) => n).join(', ')}):\n${logs.join('\n')}`);
      for (let i = 0; i < link.sent.length; i++) {
        const problem = sentFrameProblem(link.sent[i]!, link.offloads[i]);
        check(problem === null, () => `sent a bad frame (${problem}): ${Buffer.from(link.sent[i]!).toString('hex')}`);
      }
      learnSequence(link.take(), sent);
      check(stack.reassembler.pending <= limits.maxDatagrams && stack.reassembler.bufferedBytes <= limits.maxBytes, 'reassembler over its limits');
      const udpFlows = stack.udp.flowCount;
      const queries = stack.dns.pendingCount;
      const tcpFlows = stack.tcp?.flowCount ?? 0;
      if (hostMode) check(udpFlows <= MAX_FLOWS && tcpFlows <= MAX_FLOWS && queries <= MAX_FLOWS, `${udpFlows} UDP flows, ${tcpFlows} TCP flows, ${queries} DNS queries`);
      else check(udpFlows === 0 && tcpFlows === 0 && queries === 0, 'a flow or DNS query exists though every socket is refused');
    }
    for (const name of Object.keys(counters.snapshot())) check(isKnownCounterName(name), `counter ${JSON.stringify(name)} is not a name the source produces`);
  } finally {
    stack.close();
  }
  await drainMicrotasks();
  const open = sockets.filter((s) => (s instanceof FakeTcpSocket ? !s.destroyed : !s.closed));
  check(open.length === 0, `${open.length} host socket(s) left open after close()`);
}

/** A frame operation for seeds: `flags` are op bits 5 and 6 (fix checksums, relative ack). */
function frameOp(w: FuzzInputWriter, frame: Uint8Array, flags = 0): FuzzInputWriter {
  return w.u8(flags).u16(frame.length).bytes(frame);
}

/** A guest connection to a host through fake sockets: handshake, a request, an answer, both sides close. */
function hostConversation(ending: 'fin' | 'rst' | 'host-error'): Uint8Array {
  const dst = ip('192.0.2.1');
  const seg = (flags: number, seq: number, payload?: Uint8Array): Uint8Array =>
    guestTcpFrame({ dst, sport: 40000, dport: 80, flags, seq, ack: 0, window: 65535, ...(payload ? { payload } : {}), ...(flags & TCP_FLAGS.SYN ? { options: { mss: 1460 } } : {}) });
  const request = new TextEncoder().encode('GET / HTTP/1.0\r\n\r\n');
  const w = new FuzzInputWriter().u8(1 | 8);
  frameOp(w, seg(TCP_FLAGS.SYN, 1000), 0x20);
  w.u8(4).u8(0).u8(3); // host connects; flush
  frameOp(w, seg(TCP_FLAGS.ACK, 1001), 0x60);
  frameOp(w, seg(TCP_FLAGS.ACK | TCP_FLAGS.PSH, 1001, request), 0x60);
  w.u8(7).u8(5).u8(0).u16(300).bytes(new Uint8Array(300).fill(0x61)).u8(3);
  frameOp(w, seg(TCP_FLAGS.ACK, 1001 + request.length), 0x60);
  if (ending === 'fin') {
    frameOp(w, seg(TCP_FLAGS.FIN | TCP_FLAGS.ACK, 1001 + request.length), 0x60);
    w.u8(6).u8(0).u8(0).u8(3);
    frameOp(w, seg(TCP_FLAGS.ACK, 1002 + request.length), 0x60);
  } else if (ending === 'rst') {
    frameOp(w, seg(TCP_FLAGS.RST, 1001 + request.length), 0x60);
  } else {
    w.u8(6).u8(0).u8(1);
  }
  return w.u8(2).u16(6000).finish();
}

/** A guest's UDP datagram to a peer and a DNS query, the peer's answer, an ICMP error, the upstream's answer. */
function udpConversation(): Uint8Array {
  const query = Uint8Array.of(0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 97, 0, 0, 1, 0, 1);
  const answer = Uint8Array.of(0, 0, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0, 1, 97, 0, 0, 1, 0, 1, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 9);
  const w = new FuzzInputWriter().u8(8);
  frameOp(w, guestUdpFrame({ dst: ip('192.0.2.1'), sport: 5000, dport: 9999, payload: new TextEncoder().encode('ping') }), 0x20);
  frameOp(w, guestUdpFrame({ dst: DNS_IP, sport: 5001, dport: 53, payload: query }), 0x20);
  w.u8(5).u8(0).u16(4).bytes(new TextEncoder().encode('pong')).u8(3); // the peer answers
  w.u8(6 | 0x10).u8(0).u8(0).u8(0).u8(3).u16(0).u8(3); // port unreachable from the peer
  w.u8(5 | 0x20).u8(1).u16(answer.length).bytes(answer).u8(3); // the upstream answers with our id
  return w.u8(2).u16(300).finish();
}

export const target: FuzzTarget = {
  name: 'stack',
  maxLength: 4096,
  seeds: () => [
    // Each guest frame alone, with and without TCP; all our own frames in one input with ticks between; host conversations.
    ...guestSeedFrames().flatMap((f) => [frameOp(new FuzzInputWriter().u8(1), f).finish(), frameOp(new FuzzInputWriter().u8(0), f).finish()]),
    builtFrames().reduce((w, f) => frameOp(w, f).u8(2).u16(100), new FuzzInputWriter().u8(1)).u8(3).finish(),
    hostConversation('fin'),
    hostConversation('rst'),
    hostConversation('host-error'),
    udpConversation(),
  ],
  run: runStack,
};
