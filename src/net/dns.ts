/**
 * DNS forwarder for UDP queries to the stack's DNS address (10.0.2.3:53).
 *
 * Theory of operation. A guest query must be shaped like one before it is
 * relayed (checkDnsQuery in wire/dns.ts: one question, QR clear, opcode
 * QUERY, no answer or authority records, at most two additional records,
 * at most MAX_QUERY_LENGTH bytes). It is then relayed to the first upstream
 * resolver (config.dnsUpstreams: /etc/resolv.conf or --dns-upstream).
 *
 * Answers must not be forgeable off-path (RFC 5452). Each attempt gets its
 * own host UDP socket, bound to port 0 on the upstream's address family so
 * the kernel picks a fresh random source port (without SO_REUSEADDR: no
 * other local socket can bind that port meanwhile), and a fresh random DNS id
 * (the guest's id is put back in the answer): a forger has to hit the port
 * (one of ~28,000) and the id (one of 65,536) at once, instead of the id
 * alone at a port learned once. An answer is accepted only if it comes from
 * the upstream this attempt was sent to (address and port), has QR set,
 * this attempt's id, and exactly one question equal to the query's (name
 * compared case-insensitively as RFC 4343 says, type, class); anything else
 * is dropped and counted (dns.drop.answer_wrong_source, _wrong_id,
 * _wrong_question, _not_response, _truncated). The first accepted answer
 * closes the socket, so no later answer can land, and goes back to the
 * guest from 10.0.2.3:53 (fragmented if larger than the MTU).
 *
 * A query unanswered after ATTEMPT_TIMEOUT_MS is re-sent to the next
 * upstream from a new socket with a new id (at least two attempts in all),
 * then given up. A socket error ends that attempt's socket early; the timer
 * goes on as if it were unanswered. Queries waiting for an answer, and so
 * sockets (file descriptors), are bounded by config.maxDnsQueries: beyond
 * it the oldest is given up and its socket closed (dns.evicted).
 *
 * TCP DNS does not come here: the NAT maps it to the first upstream, and
 * the TCP translator relays it only as checked queries (dns-stream.ts).
 */
import type * as dgram from 'node:dgram';
import { randomBytes } from 'node:crypto';
import { isIP } from 'node:net';
import type { IpMeta, StackInternals } from './context.js';
import { type InAny, inanyOwned } from './inany.js';
import type { UdpView } from './wire/udp.js';
import { checkDnsQuery, parseDnsHeader, parseDnsQuery } from './wire/dns.js';
import { sendUdpToGuest } from './udp-output.js';

export const ATTEMPT_TIMEOUT_MS = 2000;

interface PendingQuery {
  readonly guestId: number;
  readonly guestIp: InAny;
  readonly guestPort: number;
  /** The guest's query as it came (each attempt sends a copy with its own id). */
  readonly query: Buffer;
  /** The question an answer must carry (DnsQuestion.key). */
  readonly questionKey: string;
  attempt: number;
  deadline: number;
  /** The current attempt: its upstream, its random id and its own socket (null once closed). */
  upstream: { address: string; port: number };
  upstreamId: number;
  socket: dgram.Socket | null;
}

export class DnsForwarder {
  /** In arrival order: the first is the oldest. */
  private readonly pending = new Set<PendingQuery>();
  private randomPool = Buffer.alloc(0);
  private randomPos = 0;
  private closed = false;

  constructor(private readonly s: StackInternals) {}

  /** Queries waiting for an answer. */
  get pendingCount(): number {
    return this.pending.size;
  }

  /** Host sockets open for them (at most one per query). */
  get socketCount(): number {
    let n = 0;
    for (const entry of this.pending) if (entry.socket) n++;
    return n;
  }

  input(meta: IpMeta, udp: UdpView): void {
    const s = this.s;
    const c = s.counters;
    const q = checkDnsQuery(udp.payload);
    if (typeof q === 'string') return c.count(`dns.drop.${q}`);
    const upstreams = s.config.dnsUpstreams;
    if (upstreams.length === 0) {
      s.logOnce('dns-no-upstream', 'DNS: no upstream resolver configured; queries to the DNS address are dropped');
      return c.count('dns.drop.no_upstream');
    }
    if (udp.srcPort === 0) return c.count('dns.drop.port_zero');
    if (this.closed) return c.count('dns.drop.closed');
    c.count('dns.rx.queries');
    while (this.pending.size >= s.config.maxDnsQueries) {
      this.finish(this.pending.values().next().value!);
      c.count('dns.evicted');
    }
    const entry: PendingQuery = {
      guestId: q.header.id,
      guestIp: inanyOwned(meta.src),
      guestPort: udp.srcPort,
      query: Buffer.from(udp.payload),
      questionKey: q.question.key,
      attempt: 0,
      deadline: s.clock.now() + ATTEMPT_TIMEOUT_MS,
      upstream: upstreams[0]!,
      upstreamId: 0,
      socket: null,
    };
    this.pending.add(entry);
    this.sendAttempt(entry);
  }

  /** Send `entry` to the upstream of its current attempt, from a new socket with a new id. */
  private sendAttempt(entry: PendingQuery): void {
    this.closeSocket(entry);
    const ups = this.s.config.dnsUpstreams;
    const up = ups[entry.attempt % ups.length]!;
    const socket = this.openSocket(entry, up.address);
    if (!socket) return; // counted; the timer moves on to the next attempt
    entry.upstream = up;
    entry.upstreamId = this.randomId();
    const bytes = Buffer.from(entry.query);
    bytes.writeUInt16BE(entry.upstreamId, 0);
    this.s.counters.count('dns.tx.queries');
    socket.send(bytes, up.port, up.address, (err) => {
      if (err) this.s.counters.count('dns.host.send_error');
    });
  }

  /** A socket of its own for one attempt, bound to port 0: the kernel picks a random free port. */
  private openSocket(entry: PendingQuery, address: string): dgram.Socket | null {
    const type = isIP(address) === 6 ? 'udp6' : 'udp4';
    const failed = (err: unknown): null => {
      this.s.counters.count('dns.host.socket_error');
      this.s.logOnce('dns-socket', `DNS: cannot create ${type} socket: ${String(err)}`);
      this.closeSocket(entry);
      return null;
    };
    let socket: dgram.Socket;
    try {
      socket = this.s.host.createUdpSocket(type);
    } catch (err) {
      return failed(err);
    }
    entry.socket = socket;
    socket.on('message', (msg, rinfo) => this.answer(entry, socket, msg, rinfo));
    socket.on('error', (err) => {
      this.s.counters.count('dns.host.error');
      this.s.logOnce(`dns-error-${(err as NodeJS.ErrnoException).code}`, `DNS forwarder socket error: ${err.message}`);
      if (entry.socket === socket) this.closeSocket(entry);
    });
    try {
      socket.bind({ port: 0, address: type === 'udp6' ? '::' : '0.0.0.0' });
    } catch (err) {
      return failed(err);
    }
    return socket;
  }

  /** A datagram on the socket of `entry`'s current attempt. */
  private answer(entry: PendingQuery, socket: dgram.Socket, msg: Buffer, rinfo: dgram.RemoteInfo): void {
    const s = this.s;
    const c = s.counters;
    try {
      if (entry.socket !== socket) return; // closed under an event already queued
      const address = rinfo.address.startsWith('::ffff:') ? rinfo.address.slice(7) : rinfo.address;
      if (address !== entry.upstream.address || rinfo.port !== entry.upstream.port) return c.count('dns.drop.answer_wrong_source');
      const h = parseDnsHeader(msg);
      if (typeof h === 'string') return c.count(`dns.drop.answer_${h}`);
      if (!h.qr) return c.count('dns.drop.answer_not_response');
      if (h.id !== entry.upstreamId) return c.count('dns.drop.answer_wrong_id');
      const q = parseDnsQuery(msg);
      if (typeof q === 'string' || q.question.key !== entry.questionKey) return c.count('dns.drop.answer_wrong_question');
      this.finish(entry);
      const reply = Buffer.from(msg);
      reply.writeUInt16BE(entry.guestId, 0);
      const from = typeof entry.guestIp === 'number' ? s.config.dns : s.config.dns6;
      if (sendUdpToGuest(s, from, 53, entry.guestIp, entry.guestPort, reply)) c.count('dns.tx.answers');
      else c.count('dns.drop.to_guest');
      s.out.flush();
    } catch (err) {
      c.count('dns.exception');
      s.logOnce('dns-answer', `exception relaying a DNS answer: ${String(err)}`);
    }
  }

  tick(now: number): void {
    const ups = this.s.config.dnsUpstreams;
    const attempts = Math.max(2, ups.length);
    for (const entry of [...this.pending]) {
      if (entry.deadline > now) continue;
      entry.attempt++;
      if (entry.attempt >= attempts) {
        this.finish(entry);
        this.s.counters.count('dns.timeout');
        continue;
      }
      this.s.counters.count('dns.retry');
      entry.deadline = now + ATTEMPT_TIMEOUT_MS;
      this.sendAttempt(entry);
    }
  }

  close(): void {
    this.closed = true;
    for (const entry of this.pending) this.closeSocket(entry);
    this.pending.clear();
  }

  /** Forget `entry` and close its socket. */
  private finish(entry: PendingQuery): void {
    this.pending.delete(entry);
    this.closeSocket(entry);
  }

  private closeSocket(entry: PendingQuery): void {
    const socket = entry.socket;
    if (!socket) return;
    entry.socket = null;
    try {
      socket.close();
    } catch {
      /* not running */
    }
  }

  /** A random 16-bit id (ids need not be unique: every attempt has a socket of its own). */
  private randomId(): number {
    if (this.randomPos + 2 > this.randomPool.length) {
      this.randomPool = randomBytes(512);
      this.randomPos = 0;
    }
    const id = this.randomPool.readUInt16BE(this.randomPos);
    this.randomPos += 2;
    return id;
  }
}
