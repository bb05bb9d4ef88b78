/**
 * Fuzz target: the whole stack, frames in through Stack.receive over a
 * FakeLink, as the device hands them over. The stack runs restricted with
 * socket factories that refuse, so no input can reach the network.
 *
 * Input: one configuration byte (bit 0: the TCP translator on; bit 1: the
 * guest takes partial checksums and TSO; bit 2: a link with no room, so
 * output meets back-pressure), then operations until the input ends, each
 * one byte:
 *   op % 4 = 0, 1  a frame: u16 length, the bytes; with bit 4 of op set, an
 *                  offload header first (flags byte, csumStart, csumOffset,
 *                  gsoType, gsoSize, hdrLen)
 *   op % 4 = 2     time passes (u16 * 10 ms) and the stack ticks
 *   op % 4 = 3     the batch ends (flush), and room appears on the link
 *
 * Invariants after every operation: no exception was caught anywhere in the
 * stack (every `*.exception` counter is zero; the logged stack trace is the
 * finding), every frame sent parses with good checksums (except L4
 * checksums left partial on purpose), no flow or DNS query exists (sockets
 * are refused), the reassembler stays within its limits, and every counter
 * name is one the source can produce.
 */
import { Stack } from '../../../src/net/stack.js';
import { CounterSet } from '../../../src/net/counters.js';
import type { FrameOffload } from '../../../src/net/link.js';
import { FakeLink } from '../../helpers/fake-link.js';
import { sentFrameProblem } from '../../helpers/packets.js';
import { isKnownCounterName } from '../../helpers/counter-names.js';
import { FuzzInput, FuzzInputWriter, check, type FuzzTarget } from '../engine/input.js';
import { builtFrames, guestSeedFrames } from '../seeds.js';

const MAX_FRAME = 65535 + 14;

function refuse(): never {
  throw new Error('no sockets while fuzzing');
}

function frameOp(frame: Uint8Array): FuzzInputWriter {
  return new FuzzInputWriter().u8(0).u16(frame.length).bytes(frame);
}

export function runStack(data: Uint8Array): void {
  const input = new FuzzInput(data);
  const config = input.u8();
  const link = new FakeLink();
  if (config & 2) link.rxOffloads = { csum: true, tso4: true, tso6: false };
  link.full = (config & 4) !== 0;
  const counters = new CounterSet();
  const clock = { t: 0, now() { return this.t; } };
  const logs: string[] = [];
  const stack = new Stack({
    link, counters, clock, ping: null, logger: (m) => logs.push(m), ...((config & 1) !== 0 ? {} : { tcp: null }),
    config: { restrict: true, dnsUpstreams: [] },
    udpSocket: refuse,
    host: { createUdpSocket: refuse, connectTcp: refuse },
  });
  const limits = stack.reassembler.limits;
  try {
    while (input.remaining > 0) {
      const op = input.u8();
      switch (op % 4) {
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
          const frame = input.take(input.u16() % (MAX_FRAME + 1));
          stack.receive(frame, offload);
          break;
        }
        case 2:
          clock.t += input.u16() * 10;
          stack.tick();
          break;
        default:
          stack.batchEnd();
          link.makeWritable();
      }
      const exceptions = Object.entries(counters.snapshot()).filter(([name, n]) => name.endsWith('.exception') && n > 0);
      check(exceptions.length === 0, () => `exception caught in the stack (${exceptions.map(([n]) => n).join(', ')}):\n${logs.join('\n')}`);
      for (let i = 0; i < link.sent.length; i++) {
        const problem = sentFrameProblem(link.sent[i]!, link.offloads[i]);
        check(problem === null, () => `sent a bad frame (${problem}): ${Buffer.from(link.sent[i]!).toString('hex')}`);
      }
      link.take();
      check(stack.reassembler.pending <= limits.maxDatagrams && stack.reassembler.bufferedBytes <= limits.maxBytes, 'reassembler over its limits');
      check(stack.udp.flowCount === 0 && stack.dns.pendingCount === 0 && (stack.tcp?.flowCount ?? 0) === 0, 'a flow exists though every socket is refused');
    }
    for (const name of Object.keys(counters.snapshot())) check(isKnownCounterName(name), `counter ${JSON.stringify(name)} is not a name the source produces`);
  } finally {
    stack.close();
  }
}

export const target: FuzzTarget = {
  name: 'stack',
  maxLength: 4096,
  seeds: () => [
    // Each guest frame alone, with and without TCP, then all our own frames in one input with ticks between.
    ...guestSeedFrames().flatMap((f) => [new FuzzInputWriter().u8(1).bytes(frameOp(f).finish()).finish(), new FuzzInputWriter().u8(0).bytes(frameOp(f).finish()).finish()]),
    builtFrames().reduce((w, f) => w.bytes(frameOp(f).finish()).u8(2).u16(100), new FuzzInputWriter().u8(1)).u8(3).finish(),
  ],
  run: runStack,
};
