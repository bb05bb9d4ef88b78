import { describe, it, expect, afterEach } from 'vitest';
import * as dgram from 'node:dgram';
import type { Stack, StackOptions } from '../src/net/stack.js';
import { defaultUdpBatchReader, hostUdpSocket, MAX_QUOTES_PER_FLOW, type UdpHostSocket } from '../src/net/udp.js';
import { DATAGRAM_RECORD, DatagramField, native, type UdpQueuedError } from '../src/native/index.js';
import { CounterSet } from '../src/net/counters.js';
import { FakeLink } from './helpers/fake-link.js';
import { Reassembler } from '../src/net/ip/ipv4-fragments.js';
import { parseIPv4Packet } from '../src/net/wire/ipv4.js';
import { GATEWAY_IP, GUEST_IP, ETH_IPV4, bytes, ethernetFrame, guestUdpFrame, ip, parseFrame, type ParsedFrame } from './helpers/packets.js';
import { fakeLinkStack, loopbackUdp } from './helpers/stack-rig.js';
import { waitForValue } from './helpers/wait.js';

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

function setup(extra: Partial<StackOptions> = {}, config: StackOptions['config'] = {}) {
  return fakeLinkStack(cleanups, extra, config);
}

function udpServer(handler?: (msg: Buffer, rinfo: dgram.RemoteInfo, sock: dgram.Socket) => void): Promise<dgram.Socket> {
  return loopbackUdp(cleanups, (m, r, sock) => (handler ? handler(m, r, sock) : sock.send(m, r.port, r.address)));
}

async function freePort(): Promise<number> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
  const p = s.address().port;
  await new Promise<void>((r) => s.close(r));
  return p;
}

function udpFrames(link: FakeLink): ParsedFrame[] {
  return link.sent.map(parseFrame).filter((f) => f.udp || f.icmp);
}

describe('UDP NAT', () => {
  it('echoes through a real host socket reached via the gateway (127.0.0.1 appears as 10.0.2.2)', async () => {
    const { link, counters, stack } = setup();
    const server = await udpServer();
    const port = server.address().port;
    stack.receive(guestUdpFrame({ dst: GATEWAY_IP, sport: 40000, dport: port, payload: bytes('hello') }), null);
    const [f] = await waitForValue(() => udpFrames(link).length > 0 && udpFrames(link));
    expect(f!.ipv4).toMatchObject({ src: GATEWAY_IP, dst: GUEST_IP, checksumOk: true });
    expect(f!.udp).toMatchObject({ sport: port, dport: 40000, checksumOk: true });
    expect(new TextDecoder().decode(f!.udp!.payload)).toBe('hello');
    expect(f!.eth.dst).toBe('52:54:00:12:34:56');
    expect(counters.get('udp.flows.active')).toBe(1);
    expect(stack.udp.flowCount).toBe(1);
  });

  it('keeps one mapping per guest port and delivers replies from another remote port', async () => {
    const { link, stack } = setup();
    const other = await udpServer(() => {});
    const seen: number[] = [];
    const server = await udpServer((m, r, sock) => {
      seen.push(r.port);
      sock.send(m, r.port, r.address);
      other.send(Buffer.from('from-other'), r.port, r.address);
    });
    const port = server.address().port;
    stack.receive(guestUdpFrame({ dst: GATEWAY_IP, sport: 40001, dport: port, payload: bytes('a') }), null);
    stack.receive(guestUdpFrame({ dst: GATEWAY_IP, sport: 40001, dport: port, payload: bytes('b') }), null);
    const frames = await waitForValue(() => udpFrames(link).length >= 4 && udpFrames(link));
    expect(new Set(seen).size).toBe(1); // same host port for the flow
    const fromOther = frames.filter((f) => f.udp!.sport === other.address().port);
    expect(fromOther).toHaveLength(2);
    expect(new TextDecoder().decode(fromOther[0]!.udp!.payload)).toBe('from-other');
    expect(fromOther[0]!.ipv4!.src).toBe(GATEWAY_IP);
    expect(stack.udp.flowCount).toBe(1);
  });

  it('sends ICMP port unreachable when nothing listens on the gateway port', async () => {
    const { link, counters, stack } = setup();
    const port = await freePort();
    stack.receive(guestUdpFrame({ dst: GATEWAY_IP, sport: 40002, dport: port, payload: bytes('anyone?') }), null);
    const icmp = await waitForValue(() => link.sent.map(parseFrame).find((f) => f.icmp));
    expect(icmp.ipv4).toMatchObject({ src: GATEWAY_IP, dst: GUEST_IP });
    expect(icmp.icmp).toMatchObject({ type: 3, code: 3, checksumOk: true });
    // The quote: the guest's IPv4 header + UDP header.
    const quote = icmp.icmp!.payload;
    const qv = new DataView(quote.buffer, quote.byteOffset, quote.length);
    expect(qv.getUint32(12, false)).toBe(GUEST_IP);
    expect(qv.getUint32(16, false)).toBe(GATEWAY_IP);
    expect(quote[9]).toBe(17);
    expect(qv.getUint16(20, false)).toBe(40002); // quoted UDP source port
    expect(qv.getUint16(22, false)).toBe(port);
    expect(icmp.icmp!.payload.length).toBe(28);
    expect(counters.get('udp.port_unreachable')).toBeGreaterThanOrEqual(1);
  });

  it('bounds flows with LRU eviction and expires idle flows with the injected clock', async () => {
    const { counters, stack, clock } = setup({}, { maxUdpFlows: 3, udpIdleTimeoutMs: 1000 });
    const server = await udpServer(() => {});
    const port = server.address().port;
    for (let i = 0; i < 5; i++) stack.receive(guestUdpFrame({ dst: GATEWAY_IP, sport: 41000 + i, dport: port, payload: bytes('x') }), null);
    expect(stack.udp.flowCount).toBe(3);
    expect(counters.get('udp.flows.evicted')).toBe(2);
    expect(counters.get('udp.flows.active')).toBe(3);
    clock.t = 500;
    stack.receive(guestUdpFrame({ dst: GATEWAY_IP, sport: 41004, dport: port, payload: bytes('y') }), null);
    clock.t = 1000;
    stack.tick();
    expect(stack.udp.flowCount).toBe(1);
    expect(counters.get('udp.flows.expired')).toBe(2);
    clock.t = 1500;
    stack.tick();
    expect(stack.udp.flowCount).toBe(0);
    expect(counters.get('udp.flows.active')).toBe(0);
  });

  it('verifies checksums when nonzero and accepts zero', async () => {
    const { link, counters, stack } = setup();
    const server = await udpServer();
    const port = server.address().port;
    stack.receive(guestUdpFrame({ dst: GATEWAY_IP, sport: 40003, dport: port, payload: bytes('bad'), checksum: 'bad' }), null);
    expect(counters.get('udp.drop.bad_checksum')).toBe(1);
    stack.receive(guestUdpFrame({ dst: GATEWAY_IP, sport: 40003, dport: port, payload: bytes('none'), checksum: 'zero' }), null);
    const [f] = await waitForValue(() => udpFrames(link).length > 0 && udpFrames(link));
    expect(new TextDecoder().decode(f!.udp!.payload)).toBe('none');
    stack.receive(guestUdpFrame({ dst: GATEWAY_IP, sport: 40003, dport: port, payload: bytes('x'), length: 7 }), null);
    stack.receive(guestUdpFrame({ dst: GATEWAY_IP, sport: 40003, dport: port, payload: bytes('x'), length: 50 }), null);
    expect(counters.get('udp.drop.bad_length')).toBe(1);
    expect(counters.get('udp.drop.truncated')).toBe(1);
  });

  it('refuses restricted and in-network destinations', () => {
    const { link, counters, stack } = setup({}, { restrict: true });
    stack.receive(guestUdpFrame({ dst: GATEWAY_IP, sport: 40004, dport: 9999, payload: bytes('x') }), null);
    stack.receive(guestUdpFrame({ dst: ip('192.0.2.1'), sport: 40004, dport: 9999, payload: bytes('x') }), null);
    stack.receive(guestUdpFrame({ dst: ip('10.0.2.99'), sport: 40004, dport: 9999, payload: bytes('x') }), null);
    expect(counters.get('udp.drop.nat_restricted')).toBe(2);
    expect(counters.get('udp.drop.nat_guest_network')).toBe(1);
    const icmps = link.sent.map(parseFrame).filter((f) => f.icmp);
    expect(icmps).toHaveLength(2);
    expect(icmps[0]!.icmp).toMatchObject({ type: 3, code: 13 });
    expect(stack.udp.flowCount).toBe(0);
  });

  it('fragments a large host datagram to the guest MTU', async () => {
    const { link, stack } = setup();
    const big = Buffer.alloc(4000, 7);
    const server = await udpServer((_m, r, sock) => sock.send(big, r.port, r.address));
    stack.receive(guestUdpFrame({ dst: GATEWAY_IP, sport: 40005, dport: server.address().port, payload: bytes('give') }), null);
    const frames = await waitForValue(() => link.sent.length >= 3 && link.sent);
    const r = new Reassembler(new CounterSet());
    let whole: Uint8Array | null = null;
    for (const f of frames) {
      expect(f.length).toBeLessThanOrEqual(1514);
      const p = parseIPv4Packet(f.subarray(14));
      if (typeof p === 'string') throw new Error(p);
      whole = r.input(p, 0) ?? whole;
    }
    const parsed = parseFrame(ethernetFrame({ etherType: ETH_IPV4, payload: whole! }));
    expect(parsed.udp?.checksumOk).toBe(true);
    expect(parsed.udp?.payload.length).toBe(4000);
  });
});

/**
 * A real flow socket whose error queue is scripted (such errors cannot be
 * provoked on loopback): set `queue`, then `raise(code)` makes the socket
 * report an error as a failed recvmsg would, and the flow reads the queue.
 */
function scriptedErrors() {
  const s: { host?: UdpHostSocket; queue: UdpQueuedError[]; udpSocket: () => UdpHostSocket; raise: (code: string) => void } = {
    queue: [],
    udpSocket: () => {
      const real = hostUdpSocket();
      s.host = { socket: real.socket, readErrors: (max) => s.queue.splice(0, max) };
      return s.host;
    },
    raise: (code) => {
      s.host!.socket.emit('error', Object.assign(new Error(`recvmsg ${code}`), { code }));
    },
  };
  return s;
}

/** The host port of a flow, from describeFlows(). */
function flowPorts(stack: Stack): number[] {
  return stack.udp.describeFlows().map((d) => Number(/host port (\d+)$/.exec(d)![1]));
}

/** Bind `port` on 0.0.0.0 with a fresh socket; resolves to the error code, or null if it bound. */
async function tryBind(port: number, reuseAddr: boolean): Promise<string | null> {
  const s = dgram.createSocket({ type: 'udp4', reuseAddr });
  const r = await new Promise<string | null>((resolve) => {
    s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
    s.bind(port, '0.0.0.0', () => resolve(null));
  });
  s.close();
  return r;
}

function quotedDport(f: ParsedFrame): number {
  const q = f.icmp!.payload;
  return new DataView(q.buffer, q.byteOffset, q.length).getUint16(22, false);
}

describe('UDP flow sockets received in batches (one pollSet, recvmmsg)', () => {
  it('delivers many datagrams from many flows that arrive at once in one readiness batch, published once', async () => {
    const { link, counters, stack } = setup();
    const silent = await udpServer(() => {});
    const FLOWS = 8;
    const PER_FLOW = 16;
    for (let i = 0; i < FLOWS; i++) {
      stack.receive(guestUdpFrame({ dst: GATEWAY_IP, sport: 41000 + i, dport: silent.address().port, payload: bytes('open') }), null);
    }
    const ports = flowPorts(stack);
    expect(ports).toHaveLength(FLOWS);
    const reader = defaultUdpBatchReader()!;
    const batchesBefore = reader.batches;
    // All datagrams queued on the flows' sockets within this one JS turn (loopback delivers inside sendmmsg).
    const sender = native.udpSocket(4);
    cleanups.push(() => native.close(sender));
    native.udpBind(sender, '127.0.0.1', 0);
    const views = Array.from({ length: PER_FLOW }, (_, k) => bytes(`datagram ${k}`));
    const records = new Uint32Array(PER_FLOW * DATAGRAM_RECORD);
    const recordBytes = new Uint8Array(records.buffer);
    for (const port of ports) {
      for (let k = 0; k < PER_FLOW; k++) {
        const at = k * DATAGRAM_RECORD;
        records[at + DatagramField.segments] = 1;
        records[at + DatagramField.family] = 4;
        records[at + DatagramField.port] = port;
        recordBytes.set([127, 0, 0, 1], (at + DatagramField.address) * 4);
      }
      expect(native.sendmmsg(sender, views, PER_FLOW, records)).toBe(PER_FLOW);
    }
    const framesBefore = udpFrames(link).length;
    await waitForValue(() => counters.get('udp.rx.host_datagrams') === FLOWS * PER_FLOW);
    expect(counters.get('udp.rx.batches')).toBe(1);
    expect(reader.batches - batchesBefore).toBe(1);
    const frames = udpFrames(link).slice(framesBefore);
    expect(frames).toHaveLength(FLOWS * PER_FLOW);
    expect(new Set(frames.map((f) => f.udp!.dport))).toEqual(new Set(Array.from({ length: FLOWS }, (_, i) => 41000 + i)));
  });
});

describe('UDP ICMP errors (IP_RECVERR on the flow socket)', () => {
  it('reports port unreachable for two different closed destinations of one flow', async () => {
    const { link, counters, stack } = setup();
    const p1 = await freePort();
    const p2 = await freePort();
    // Same tick: the first ICMP error fails the second send, which is retried.
    stack.receive(guestUdpFrame({ dst: GATEWAY_IP, sport: 40010, dport: p1, payload: bytes('one') }), null);
    stack.receive(guestUdpFrame({ dst: GATEWAY_IP, sport: 40010, dport: p2, payload: bytes('two') }), null);
    const icmps = await waitForValue(() => {
      const found = link.sent.map(parseFrame).filter((f) => f.icmp);
      return found.length >= 2 && found;
    });
    expect(icmps.map((f) => f.icmp!.type)).toEqual([3, 3]);
    expect(icmps.map((f) => f.icmp!.code)).toEqual([3, 3]);
    expect(icmps.map(quotedDport).sort()).toEqual([p1, p2].sort());
    for (const f of icmps) {
      expect(f.ipv4).toMatchObject({ src: GATEWAY_IP, dst: GUEST_IP });
      expect(f.icmp!.checksumOk).toBe(true);
    }
    expect(counters.get('udp.port_unreachable')).toBe(2);
    expect(stack.udp.flowCount).toBe(1);
    // A third destination later on still works (no per-flow limit of companions any more).
    const p3 = await freePort();
    stack.receive(guestUdpFrame({ dst: GATEWAY_IP, sport: 40010, dport: p3, payload: bytes('three') }), null);
    const third = await waitForValue(() => link.sent.map(parseFrame).filter((f) => f.icmp).find((f) => quotedDport(f) === p3));
    expect(third.icmp).toMatchObject({ type: 3, code: 3 });
  });

  it('still sends a datagram that right follows one to a closed port (same tick)', async () => {
    const { link, counters, stack } = setup();
    const closed = await freePort();
    const server = await udpServer();
    stack.receive(guestUdpFrame({ dst: GATEWAY_IP, sport: 40011, dport: closed, payload: bytes('nobody') }), null);
    stack.receive(guestUdpFrame({ dst: GATEWAY_IP, sport: 40011, dport: server.address().port, payload: bytes('echo me') }), null);
    const echoed = await waitForValue(() => udpFrames(link).find((f) => f.udp?.sport === server.address().port));
    expect(new TextDecoder().decode(echoed.udp!.payload)).toBe('echo me');
    await waitForValue(() => link.sent.map(parseFrame).find((f) => f.icmp));
    expect(counters.get('udp.port_unreachable')).toBe(1);
    expect(counters.get('udp.host.send_error')).toBe(0);
  });

  it('binds each flow socket without SO_REUSEADDR: nobody else can bind its port', async () => {
    const { link, stack } = setup();
    const server = await udpServer();
    stack.receive(guestUdpFrame({ dst: GATEWAY_IP, sport: 40012, dport: server.address().port, payload: bytes('x') }), null);
    await waitForValue(() => udpFrames(link).length > 0);
    const [port] = flowPorts(stack);
    expect(port).toBeGreaterThan(0);
    expect(await tryBind(port!, false)).toBe('EADDRINUSE');
    expect(await tryBind(port!, true)).toBe('EADDRINUSE');
  });

  it('uses one fd per flow', async () => {
    const { link, stack } = setup();
    const server = await udpServer();
    const before = native.openFdCount();
    for (let i = 0; i < 5; i++) {
      stack.receive(guestUdpFrame({ dst: GATEWAY_IP, sport: 40020 + i, dport: server.address().port, payload: bytes('x') }), null);
    }
    await waitForValue(() => udpFrames(link).length >= 5);
    expect(stack.udp.flowCount).toBe(5);
    expect(native.openFdCount()).toBe(before + 5);
    expect(new Set(flowPorts(stack)).size).toBe(5);
    stack.close();
    expect(native.openFdCount()).toBe(before);
  });

  it('translates other ICMP errors (frag needed with the MTU, time exceeded from a router) and drops those about destinations it never sent to', async () => {
    const errors = scriptedErrors();
    const { link, counters, stack } = setup({ udpSocket: errors.udpSocket });
    const server = await udpServer(() => {});
    const port = server.address().port;
    stack.receive(guestUdpFrame({ dst: GATEWAY_IP, sport: 40030, dport: port, payload: bytes('big') }), null);
    const entry = { address: '127.0.0.1', port, origin: 2, errno: 0, info: 0, offender: '127.0.0.1' };
    errors.queue = [
      { ...entry, type: 3, code: 4, errno: 90, info: 1400 },
      { ...entry, type: 11, code: 0, errno: 113, offender: '203.0.113.9' },
      { ...entry, port: 7777, type: 3, code: 1, errno: 113 }, // never sent there: dropped
      { ...entry, type: 3, code: 3, origin: 1 }, // local origin: ignored
      { ...entry, type: 12, code: 0, errno: 71 }, // parameter problem: not forwarded
      { ...entry, address: '192.0.2.1', port: 1, type: 3, code: 1 }, // never sent there: dropped
    ];
    errors.raise('EMSGSIZE');
    const icmps = link.sent.map(parseFrame).filter((f) => f.icmp);
    expect(icmps).toHaveLength(2);
    const [frag, ttl] = icmps;
    expect(frag!.icmp).toMatchObject({ type: 3, code: 4, checksumOk: true, rest: 1400 });
    expect(frag!.ipv4).toMatchObject({ src: GATEWAY_IP, dst: GUEST_IP });
    expect(quotedDport(frag!)).toBe(port);
    expect(frag!.icmp!.payload.length).toBe(28);
    expect(ttl!.icmp).toMatchObject({ type: 11, code: 0, checksumOk: true });
    expect(ttl!.ipv4!.src).toBe(ip('203.0.113.9'));
    expect(counters.get('udp.icmp_error.rx')).toBe(6);
    expect(counters.get('udp.icmp_error.ignored')).toBe(2);
    expect(counters.get('udp.icmp_error.unknown_destination')).toBe(2);
    expect(counters.get('udp.host.error')).toBe(0);
  });

  it('remembers quotes for a bounded number of destinations per flow (least recently used forgotten)', async () => {
    const errors = scriptedErrors();
    const { link, counters, stack } = setup({ udpSocket: errors.udpSocket });
    // Silent servers: no real ICMP error comes back (the scripted queue stands in for the kernel's).
    const ports: number[] = [];
    for (let i = 0; i <= MAX_QUOTES_PER_FLOW; i++) ports.push((await udpServer(() => {})).address().port);
    const first = ports[0]!;
    const last = ports[MAX_QUOTES_PER_FLOW]!;
    // TTL 33 marks the guest's datagrams to the first destination; the others use 64.
    stack.receive(guestUdpFrame({ dst: GATEWAY_IP, sport: 40031, dport: first, payload: bytes('x'), ttl: 33 }), null);
    for (const p of ports.slice(1)) stack.receive(guestUdpFrame({ dst: GATEWAY_IP, sport: 40031, dport: p, payload: bytes('x') }), null);
    const entry = { address: '127.0.0.1', origin: 2, type: 3, code: 3, errno: 111, info: 0, offender: '127.0.0.1' };
    errors.queue = [{ ...entry, port: first }, { ...entry, port: last }];
    errors.raise('ECONNREFUSED');
    const icmps = link.sent.map(parseFrame).filter((f) => f.icmp);
    expect(icmps.map(quotedDport)).toEqual([last]);
    expect(icmps[0]!.icmp!.payload[8]).toBe(64);
    expect(counters.get('udp.icmp_error.unknown_destination')).toBe(1); // the first one was forgotten
    // Sending to the first again makes it the most recent (and its quote the new datagram's).
    stack.receive(guestUdpFrame({ dst: GATEWAY_IP, sport: 40031, dport: first, payload: bytes('x'), ttl: 33 }), null);
    errors.queue = [{ ...entry, port: first }];
    errors.raise('ECONNREFUSED');
    const again = link.sent.map(parseFrame).filter((f) => f.icmp);
    expect(again.map(quotedDport)).toEqual([last, first]);
    expect(again[1]!.icmp!.payload[8]).toBe(33);
  });

  it('works without error reporting when the factory gives a plain socket', async () => {
    const logs: string[] = [];
    const udpSocket = (): UdpHostSocket => {
      const socket = dgram.createSocket('udp4');
      socket.bind(0, '0.0.0.0');
      return { socket, readErrors: null };
    };
    const { link, stack } = setup({ udpSocket, logger: (m) => logs.push(m) });
    const server = await udpServer();
    stack.receive(guestUdpFrame({ dst: GATEWAY_IP, sport: 40040, dport: server.address().port, payload: bytes('plain') }), null);
    stack.receive(guestUdpFrame({ dst: GATEWAY_IP, sport: 40041, dport: server.address().port, payload: bytes('plain') }), null);
    await waitForValue(() => udpFrames(link).length >= 2);
    expect(logs.filter((l) => /no ICMP errors/.test(l))).toHaveLength(1);
    expect(flowPorts(stack).every((p) => p > 0)).toBe(true);
  });
});

describe('UDP inbound forward', () => {
  it('delivers host datagrams to the guest port from 10.0.2.2 and relays replies back', async () => {
    const hostPort = await freePort();
    const { link, counters, stack } = setup({ forwards: [{ protocol: 'udp', hostAddress: '127.0.0.1', hostPort, guestPort: 7000 }] });
    await stack.start();
    // The guest must be known (MAC learned) to receive: it sends something first.
    stack.receive(guestUdpFrame({ dst: ip('10.0.2.99'), sport: 1, dport: 1, payload: bytes('') }), null);
    const client = await udpServer(() => {});
    const got = new Promise<Buffer>((resolve) => client.once('message', (m) => resolve(m)));
    client.send(Buffer.from('ping'), hostPort, '127.0.0.1');
    const f = await waitForValue(() => udpFrames(link).find((x) => x.udp?.dport === 7000));
    expect(f.ipv4).toMatchObject({ src: GATEWAY_IP, dst: GUEST_IP });
    expect(f.udp!.sport).toBe(client.address().port);
    expect(new TextDecoder().decode(f.udp!.payload)).toBe('ping');
    stack.receive(guestUdpFrame({ dst: GATEWAY_IP, sport: 7000, dport: client.address().port, payload: bytes('pong') }), null);
    expect((await got).toString()).toBe('pong');
    expect(counters.get('udp.inbound.rx')).toBe(1);
    expect(counters.get('udp.inbound.tx')).toBe(1);
    expect(stack.udp.flowCount).toBe(0);
  });

  it('rejects start() when the forward port is taken', async () => {
    const taken = await udpServer(() => {});
    const { stack } = setup({ forwards: [{ protocol: 'udp', hostAddress: '127.0.0.1', hostPort: taken.address().port, guestPort: 7 }] });
    await expect(stack.start()).rejects.toThrow(/forward udp/);
  });
});
