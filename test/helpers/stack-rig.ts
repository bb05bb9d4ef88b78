/**
 * The real Stack over a FakeLink for frame-level tests: a hand-driven clock
 * (`clock.t`, in ms), no TCP, no ping, a silent logger; plus UDP sockets on
 * 127.0.0.1 to stand for hosts. Both are closed by clean-ups pushed on the
 * caller's list.
 */
import * as dgram from 'node:dgram';
import { Stack, type StackOptions } from '../../src/net/stack.js';
import { CounterSet } from '../../src/net/counters.js';
import { FakeLink } from './fake-link.js';

export function fakeLinkStack(cleanups: (() => void)[], extra: Partial<StackOptions> = {}, config: StackOptions['config'] = {}) {
  const link = new FakeLink();
  const counters = new CounterSet();
  const clock = { t: 0, now() { return this.t; } };
  const stack = new Stack({ link, counters, clock, tcp: null, ping: null, logger: () => {}, config, ...extra });
  cleanups.push(() => stack.close());
  return { link, counters, stack, clock };
}

/** A UDP socket bound to 127.0.0.1 on a free port, `onMessage` called for each datagram. */
export async function loopbackUdp(cleanups: (() => void)[], onMessage: (msg: Buffer, rinfo: dgram.RemoteInfo, sock: dgram.Socket) => void): Promise<dgram.Socket> {
  const sock = dgram.createSocket('udp4');
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
  sock.on('message', (m, r) => onMessage(m, r, sock));
  cleanups.push(() => sock.close());
  return sock;
}
