import { describe, it, expect, afterEach } from 'vitest';
import * as dgram from 'node:dgram';
import { parseDnsName, parseDnsQuery } from '../src/net/wire/dns.js';
import type { StackConfig } from '../src/net/context.js';
import { DnsQueryStream } from '../src/net/dns-stream.js';
import {
  DNS_IP, DNS_OPT_RR, GUEST_IP, concat, dnsAnswer, dnsAnswerAddress, dnsMessage, dnsTcpFrame, guestUdpFrame, hex, parseFrame,
} from './helpers/packets.js';
import { fakeLinkStack, loopbackUdp, stubDnsResolver } from './helpers/stack-rig.js';
import { waitFor, waitForValue } from './helpers/wait.js';

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

function query(id: number, name: string, flags = 0x0100): Uint8Array {
  return dnsMessage({ id, name, flags });
}

/** The address the stub resolver answers with, and the one forgers put in their answers (data only; nothing is sent there). */
const REAL = '192.0.2.55';
const FORGED = '203.0.113.66';

/** A stub resolver: answers A queries with REAL. */
function stubResolver(seen: number[] = []): Promise<dgram.Socket> {
  return stubDnsResolver(cleanups, seen);
}

function deadResolver(): Promise<dgram.Socket> {
  return loopbackUdp(cleanups, () => {});
}

function setup(upstreams: { address: string; port: number }[], config: Partial<StackConfig> = {}) {
  return fakeLinkStack(cleanups, {}, { dnsUpstreams: upstreams, ...config });
}

describe('wire/dns', () => {
  it('parses names with compression and stops pointer loops', () => {
    const msg = hex('0000 0000 0000 0000 0000 0000 03 777777 07 6578616d706c65 03 636f6d 00 c0 10');
    const a = parseDnsName(msg, 12);
    expect(a).toMatchObject({ name: 'www.example.com', next: 29 });
    expect(parseDnsName(msg, 29)).toMatchObject({ name: 'example.com', next: 31 });
    const loop = hex('0000 0000 0000 0000 0000 0000 c0 0c');
    expect(parseDnsName(loop, 12)).toBe('pointer_loop');
    expect(parseDnsName(hex('0000 0000 0000 0000 0000 0000 05 6162'), 12)).toBe('truncated');
    expect(parseDnsName(hex('0000 0000 0000 0000 0000 0000 80 00'), 12)).toBe('bad_label');
    expect(parseDnsQuery(query(1, 'a.b'))).toMatchObject({ header: { id: 1, qdcount: 1, qr: false }, question: { name: 'a.b', type: 1, cls: 1 } });
  });

  it('gives equal question keys exactly to the same question, names compared case-insensitively', () => {
    const key = (o: Parameters<typeof dnsMessage>[0]) => {
      const q = parseDnsQuery(dnsMessage(o));
      if (typeof q === 'string') throw new Error(q);
      return q.question.key;
    };
    const base = key({ id: 1, name: 'www.Example.COM' });
    expect(key({ id: 2, name: 'WWW.example.com' })).toBe(base);
    expect(key({ id: 1, name: 'www.example.org' })).not.toBe(base);
    expect(key({ id: 1, name: 'www.example.com', qtype: 28 })).not.toBe(base);
    expect(key({ id: 1, name: 'www.example.com', qclass: 3 })).not.toBe(base);
    // A dot inside a label is not a label boundary.
    const dotted = parseDnsQuery(hex('0001 0100 0001 0000 0000 0000 03 612e62 00 0001 0001'));
    expect(typeof dotted !== 'string' && dotted.question.name).toBe('a.b');
    expect(typeof dotted !== 'string' && dotted.question.key).not.toBe(key({ id: 1, name: 'a.b' }));
    // Only ASCII letters fold: 0xC4 and 0xE4 stay different.
    const latin = (b: string) => parseDnsQuery(hex(`0001 0100 0001 0000 0000 0000 01 ${b} 00 0001 0001`));
    const upper = latin('c4');
    const lower = latin('e4');
    expect(typeof upper !== 'string' && typeof lower !== 'string' && upper.question.key !== lower.question.key).toBe(true);
  });
});

describe('DNS over TCP: DnsQueryStream', () => {
  const stream = concat(
    dnsTcpFrame(dnsMessage({ id: 1, name: 'a.example.com' })),
    dnsTcpFrame(dnsMessage({ id: 2, name: 'b.example.com', ar: 1, rest: DNS_OPT_RR })),
    dnsTcpFrame(dnsMessage({ id: 3, name: 'c.example.com', qtype: 28 })),
  );

  it('passes whole queries, with their lengths, wherever the stream is cut', () => {
    for (let cut = 0; cut <= stream.length; cut++) {
      const s = new DnsQueryStream();
      const a = s.push(stream.subarray(0, cut));
      const b = s.push(stream.subarray(cut));
      if (typeof a === 'string' || typeof b === 'string') throw new Error(`refused at cut ${cut}`);
      expect(a.queries + b.queries).toBe(3);
      expect(concat(a.bytes, b.bytes)).toEqual(stream);
    }
  });

  it('refuses a length beyond MAX_QUERY_LENGTH at once, a message that is no query when whole, and stays refused', () => {
    const big = new DnsQueryStream();
    expect(big.push(Uint8Array.from([0x10, 0x01]))).toBe('too_big'); // 4097
    expect(big.push(stream)).toBe('too_big');
    const answer = new DnsQueryStream();
    expect(answer.push(dnsTcpFrame(dnsMessage({ id: 1, flags: 0x8180 })))).toBe('not_query');
    const empty = new DnsQueryStream();
    expect(empty.push(Uint8Array.from([0, 0]))).toBe('truncated');
    const partial = new DnsQueryStream();
    expect(partial.push(dnsTcpFrame(dnsMessage({ id: 1 })).subarray(0, 20))).toMatchObject({ queries: 0 });
  });
});

describe('DNS forwarder', () => {
  it('relays a query to the upstream and the answer back with the guest id and ports', async () => {
    const seen: number[] = [];
    const up = await stubResolver(seen);
    const { link, counters, stack } = setup([{ address: '127.0.0.1', port: up.address().port }]);
    stack.receive(guestUdpFrame({ dst: DNS_IP, sport: 5353, dport: 53, payload: query(0x1234, 'www.example.com') }), null);
    const f = await waitForValue(() => link.sent.map(parseFrame).find((x) => x.udp));
    expect(f.ipv4).toMatchObject({ src: DNS_IP, dst: GUEST_IP, checksumOk: true });
    expect(f.udp).toMatchObject({ sport: 53, dport: 5353, checksumOk: true });
    const answer = f.udp!.payload;
    expect((answer[0]! << 8) | answer[1]!).toBe(0x1234);
    expect(dnsAnswerAddress(answer)).toBe(REAL);
    expect(seen).toHaveLength(1);
    expect(counters.get('dns.tx.answers')).toBe(1);
  });

  it('tries the next upstream on timeout, and gives up after the last', async () => {
    const dead = await deadResolver();
    const seen: number[] = [];
    const up = await stubResolver(seen);
    const { link, counters, stack, clock } = setup([
      { address: '127.0.0.1', port: dead.address().port },
      { address: '127.0.0.1', port: up.address().port },
    ]);
    stack.receive(guestUdpFrame({ dst: DNS_IP, sport: 5000, dport: 53, payload: query(0x77, 'retry.test') }), null);
    await new Promise((r) => setTimeout(r, 50));
    expect(link.sent.filter((f) => parseFrame(f).udp)).toHaveLength(0);
    clock.t = 2000;
    stack.tick();
    expect(counters.get('dns.retry')).toBe(1);
    const f = await waitForValue(() => link.sent.map(parseFrame).find((x) => x.udp));
    expect((f.udp!.payload[0]! << 8) | f.udp!.payload[1]!).toBe(0x77);

    const only = setup([{ address: '127.0.0.1', port: dead.address().port }]);
    only.stack.receive(guestUdpFrame({ dst: DNS_IP, sport: 5001, dport: 53, payload: query(0x78, 'x.test') }), null);
    only.clock.t = 2000;
    only.stack.tick();
    only.clock.t = 4000;
    only.stack.tick();
    expect(only.counters.get('dns.timeout')).toBe(1);
    expect(only.stack.dns.pendingCount).toBe(0);
  });

  it('bounds the queries in flight, and their sockets, by maxDnsQueries', async () => {
    const dead = await deadResolver();
    const max = 16;
    const { counters, stack } = setup([{ address: '127.0.0.1', port: dead.address().port }], { maxDnsQueries: max });
    for (let i = 0; i < max + 50; i++) {
      stack.receive(guestUdpFrame({ dst: DNS_IP, sport: 10000 + i, dport: 53, payload: query(i, 'flood.test') }), null);
    }
    expect(stack.dns.pendingCount).toBe(max);
    expect(stack.dns.socketCount).toBe(max);
    expect(counters.get('dns.evicted')).toBe(50);
  });

  it('drops malformed queries with counted reasons', () => {
    const { link, counters, stack } = setup([{ address: '127.0.0.1', port: 9 }]);
    const noQuestion = query(1, 'a.b');
    noQuestion[5] = 0;
    stack.receive(guestUdpFrame({ dst: DNS_IP, sport: 5000, dport: 53, payload: noQuestion }), null);
    stack.receive(guestUdpFrame({ dst: DNS_IP, sport: 5000, dport: 53, payload: query(1, 'a.b', 0x8180) }), null);
    stack.receive(guestUdpFrame({ dst: DNS_IP, sport: 5000, dport: 53, payload: hex('0001 0100 0001 0000 0000 0000 c0 0c 0001 0001') }), null);
    stack.receive(guestUdpFrame({ dst: DNS_IP, sport: 5000, dport: 53, payload: hex('0001 01') }), null);
    expect(counters.get('dns.drop.bad_qdcount')).toBe(1);
    expect(counters.get('dns.drop.not_query')).toBe(1);
    expect(counters.get('dns.drop.pointer_loop')).toBe(1);
    expect(counters.get('dns.drop.truncated')).toBe(1);
    expect(stack.dns.pendingCount).toBe(0);
    expect(link.sent).toHaveLength(0);
  });

  it('drops queries when no upstream is configured', () => {
    const { counters, stack } = setup([]);
    stack.receive(guestUdpFrame({ dst: DNS_IP, sport: 5000, dport: 53, payload: query(1, 'a.b') }), null);
    expect(counters.get('dns.drop.no_upstream')).toBe(1);
  });
});

/** Whether a UDP port on 127.0.0.1 is free (no socket bound to it there or on the wildcard address). */
async function udpPortFree(port: number): Promise<boolean> {
  const probe = dgram.createSocket('udp4');
  try {
    await new Promise<void>((resolve, reject) => {
      probe.once('error', reject);
      probe.bind(port, '127.0.0.1', () => resolve());
    });
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE') return false;
    throw err;
  } finally {
    try {
      probe.close();
    } catch {
      /* never bound */
    }
  }
}

/** An upstream that answers nothing by itself: the test answers (or forges answers to) the queries it holds. */
async function heldResolver() {
  const held: { msg: Buffer; port: number }[] = [];
  const sock = await loopbackUdp(cleanups, (m, r) => held.push({ msg: m, port: r.port }));
  return { sock, held, port: sock.address().port };
}

function guestAnswers(link: { sent: Uint8Array[] }) {
  return link.sent.map(parseFrame).flatMap((f) => (f.udp && f.udp.sport === 53 ? [f.udp] : []));
}

function sendTo(sock: dgram.Socket, msg: Uint8Array, port: number): void {
  sock.send(msg, port, '127.0.0.1');
}

const ALL_IDS = 65536;

/**
 * Every id's forged answer to `question` (the guest's query: the forger made
 * the guest ask it), sent from `sock` to 127.0.0.1:`port`, 32 per event-loop
 * turn so that a receiving socket in this process reads them all (libuv
 * reads 32 datagrams per turn) rather than its receive buffer dropping
 * most. The number sent.
 */
async function floodForgedAnswers(sock: dgram.Socket, question: Uint8Array, port: number): Promise<number> {
  const batch = 32;
  for (let first = 0; first < ALL_IDS; first += batch) {
    for (let id = first; id < first + batch; id++) {
      const forged = dnsAnswer(question, FORGED);
      forged[0] = id >>> 8;
      forged[1] = id & 0xff;
      sendTo(sock, forged, port);
    }
    await new Promise((r) => setImmediate(r));
  }
  return ALL_IDS;
}

describe('hostile network: forged DNS answers', () => {
  it('sends every query from a source port of its own, and closes it once answered', async () => {
    const up = await heldResolver();
    const { link, stack } = setup([{ address: '127.0.0.1', port: up.port }]);
    for (let i = 0; i < 4; i++) {
      stack.receive(guestUdpFrame({ dst: DNS_IP, sport: 5000 + i, dport: 53, payload: query(0x100 + i, `q${i}.example.com`) }), null);
    }
    await waitFor(() => up.held.length === 4, 3000, 'four queries at the upstream');
    const ports = up.held.map((h) => h.port);
    expect(new Set(ports).size, `source ports ${ports.join(', ')}`).toBe(4);
    const first = up.held[0]!;
    sendTo(up.sock, dnsAnswer(first.msg, REAL), first.port);
    const answer = await waitForValue(() => guestAnswers(link)[0]);
    expect(answer.dport).toBe(5000);
    // That query's socket is gone: its port is free again, no later answer can land on it.
    expect(await udpPortFree(first.port)).toBe(true);
    expect(stack.dns.pendingCount).toBe(3);
  });

  it('drops answers from another source, with another id or another question (counted); the guest gets the real one', async () => {
    const up = await heldResolver();
    const forger = await loopbackUdp(cleanups, () => {});
    const { link, counters, stack } = setup([{ address: '127.0.0.1', port: up.port }]);
    stack.receive(guestUdpFrame({ dst: DNS_IP, sport: 5353, dport: 53, payload: query(0x1234, 'www.example.com') }), null);
    await waitFor(() => up.held.length === 1, 3000, 'the query at the upstream');
    const { msg, port } = up.held[0]!;
    const id = msg.readUInt16BE(0);
    // Each forgery has one thing wrong, all else right, and comes before the real answer.
    sendTo(forger, dnsAnswer(msg, FORGED), port); // the upstream's address, another port
    sendTo(up.sock, dnsAnswer(query(id ^ 0x8000, 'www.example.com'), FORGED), port);
    sendTo(up.sock, dnsAnswer(query(id, 'www.example.net'), FORGED), port);
    sendTo(up.sock, dnsAnswer(dnsMessage({ id, name: 'www.example.com', qtype: 28 }), FORGED), port);
    // The real answer, its name in other letter case (RFC 4343: the same question).
    sendTo(up.sock, dnsAnswer(query(id, 'WWW.Example.COM'), REAL), port);
    const answer = await waitForValue(() => guestAnswers(link)[0]);
    expect(answer.dport).toBe(5353);
    expect((answer.payload[0]! << 8) | answer.payload[1]!).toBe(0x1234);
    expect(dnsAnswerAddress(answer.payload), 'the address in the answer the guest got').toBe(REAL);
    expect(guestAnswers(link)).toHaveLength(1);
    expect(counters.get('dns.drop.answer_wrong_source')).toBe(1);
    expect(counters.get('dns.drop.answer_wrong_id')).toBe(1);
    expect(counters.get('dns.drop.answer_wrong_question')).toBe(2);
    expect(counters.get('dns.tx.answers')).toBe(1);
  });

  it('an off-path forger who learned the source port of an earlier query wins no round with 65,536 answers', async () => {
    // The forger sends from the upstream's own socket: on loopback that
    // stands for a forged source address, which an off-path attacker can send.
    const up = await heldResolver();
    const { link, stack } = setup([{ address: '127.0.0.1', port: up.port }]);
    const ask = async (round: number, name: string): Promise<{ guestQuery: Uint8Array; msg: Buffer; port: number }> => {
      const guestQuery = query(0x4000 + round, name);
      stack.receive(guestUdpFrame({ dst: DNS_IP, sport: 6000 + round, dport: 53, payload: guestQuery }), null);
      await waitFor(() => up.held.length === round + 1, 3000, `query ${round} at the upstream`);
      return { guestQuery, ...up.held[round]! };
    };
    const answerFor = (round: number) => waitForValue(() => guestAnswers(link).find((a) => a.dport === 6000 + round));
    // A query whose source port the forger sees (one to a name of its own).
    const seen = await ask(0, 'forger.example.org');
    sendTo(up.sock, dnsAnswer(seen.msg, REAL), seen.port);
    await answerFor(0);
    let learnedPort = seen.port;
    const rounds = 3;
    let tried = 0;
    let won = 0;
    for (let round = 1; round <= rounds; round++) {
      const victim = await ask(round, `victim${round}.example.com`);
      tried += await floodForgedAnswers(up.sock, victim.guestQuery, learnedPort);
      sendTo(up.sock, dnsAnswer(victim.msg, REAL), victim.port);
      const answer = await answerFor(round);
      if (dnsAnswerAddress(answer.payload) === FORGED) won++;
      learnedPort = victim.port;
    }
    expect({ tried, won }).toEqual({ tried: rounds * ALL_IDS, won: 0 });
  }, 30_000);
});
