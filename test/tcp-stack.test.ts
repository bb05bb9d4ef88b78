/**
 * The TCP translator behind the real dispatcher (src/net/stack.ts): full
 * Ethernet frames in through Stack.receive, frames out on a FakeLink, the
 * translator loaded by start() as in production.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { Stack } from '../src/net/stack.js';
import { CounterSet } from '../src/net/counters.js';
import { FakeLink } from './helpers/fake-link.js';
import { GATEWAY_IP, GUEST_IP, guestTcpFrame, parseFrame } from './helpers/packets.js';
import { FLAG, closedPort, hostPeer, waitFor } from './helpers/tcp-context.js';

const cleanups: (() => void)[] = [];

async function waitValue<T>(fn: () => T | null | undefined, ms = 3000): Promise<T> {
  let v: T | null | undefined;
  await waitFor(() => (v = fn()) !== null && v !== undefined, ms);
  return v!;
}
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

describe('TCP through the Stack', () => {
  it('connects and moves data both ways, frame by frame', async () => {
    const { accepted, got, port } = await hostPeer(cleanups);
    const link = new FakeLink();
    const counters = new CounterSet();
    const clock = { t: 0, now() { return this.t; } };
    const stack = new Stack({ link, counters, clock, ping: null, logger: () => {} });
    await stack.start();
    cleanups.push(() => stack.close());
    expect(stack.tcp).not.toBeNull();

    const tcpFrames = () => link.take().map(parseFrame).filter((f) => f.tcp);
    stack.receive(guestTcpFrame({ dst: GATEWAY_IP, sport: 45000, dport: port, seq: 100, flags: FLAG.SYN, options: { mss: 1460, wscale: 7 } }), null);
    let frames = await waitValue(() => {
      const f = tcpFrames();
      return f.length > 0 ? f : null;
    });
    const synAck = frames[0]!;
    expect(synAck.ipv4!.src).toBe(GATEWAY_IP);
    expect(synAck.ipv4!.dst).toBe(GUEST_IP);
    expect(synAck.ipv4!.checksumOk).toBe(true);
    expect(synAck.tcp!.checksumOk).toBe(true);
    expect(synAck.tcp!.flags).toBe(FLAG.SYN | FLAG.ACK);
    expect(synAck.tcp!.ack).toBe(101);
    const ourSeq = synAck.tcp!.seq + 1;

    stack.receive(guestTcpFrame({ dst: GATEWAY_IP, sport: 45000, dport: port, seq: 101, ack: ourSeq, flags: FLAG.ACK | FLAG.PSH, window: 512, payload: Buffer.from('via the stack') }), null);
    stack.batchEnd?.();
    await waitFor(() => Buffer.concat(got).toString() === 'via the stack');
    await waitFor(() => accepted.length === 1);
    accepted[0]!.write('and back');
    frames = [];
    await waitFor(() => {
      frames.push(...tcpFrames());
      return frames.some((f) => f.tcp!.payload.length > 0);
    });
    const data = frames.find((f) => f.tcp!.payload.length > 0)!;
    expect(Buffer.from(data.tcp!.payload).toString()).toBe('and back');
    expect(data.tcp!.seq).toBe(ourSeq);
    expect(data.tcp!.ack).toBe(101 + 13);
    expect(data.tcp!.checksumOk).toBe(true);
    expect(stack.tcp!.flowCount).toBe(1);
    expect(counters.get('tcp.flows.active')).toBe(1);
  });

  it('refused host ports answer RST through the stack', async () => {
    const link = new FakeLink();
    const stack = new Stack({ link, counters: new CounterSet(), ping: null, logger: () => {} });
    await stack.start();
    cleanups.push(() => stack.close());
    const port = await closedPort();
    stack.receive(guestTcpFrame({ dst: GATEWAY_IP, sport: 45001, dport: port, seq: 7, flags: FLAG.SYN }), null);
    const rst = await waitValue(() => link.take().map(parseFrame).find((f) => f.tcp));
    expect(rst.tcp!.flags).toBe(FLAG.RST | FLAG.ACK);
    expect(rst.tcp!.ack).toBe(8);
  });
});
