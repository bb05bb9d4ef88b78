/**
 * The real Stack over a FakeLink for frame-level tests: a hand-driven clock
 * (`clock.t`, in ms), no TCP, no ping, a silent logger; plus UDP sockets on
 * 127.0.0.1 to stand for hosts. Both are closed by clean-ups pushed on the
 * caller's list; a stub DNS resolver among them.
 */
import * as dgram from 'node:dgram';
import { Stack, type StackOptions } from '../../src/net/stack.js';
import { CounterSet } from '../../src/net/counters.js';
import { parseDnsQuery } from '../../src/net/wire/dns.js';
import { FakeLink } from './fake-link.js';
import { dnsAnswer } from './packets.js';

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

/**
 * A stub DNS resolver on 127.0.0.1: answers every query with an A record
 * 192.0.2.55 (data only; nothing is sent there); the ids it saw go to `seen`.
 */
export function stubDnsResolver(cleanups: (() => void)[], seen: number[] = []): Promise<dgram.Socket> {
  return loopbackUdp(cleanups, (m, r, sock) => {
    const q = parseDnsQuery(m);
    if (typeof q === 'string') return;
    seen.push(q.header.id);
    sock.send(dnsAnswer(m, '192.0.2.55'), r.port, r.address);
  });
}
