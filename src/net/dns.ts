/**
 * DNS forwarder for UDP queries to the stack's DNS address (10.0.2.3:53).
 *
 * Theory of operation. A guest query must be shaped like one before it is
 * relayed (the upstream is often a resolver on the host's loopback, which
 * the guest must not reach with anything else): at most MAX_QUERY_LENGTH
 * bytes, QR clear, opcode QUERY, exactly one question whose name parses, no
 * answer or authority records, at most MAX_ADDITIONAL additional records
 * (EDNS OPT, TSIG) that parse and end exactly at the end of the message.
 * It is then relayed to the first
 * upstream resolver (config.dnsUpstreams: /etc/resolv.conf or
 * --dns-upstream) through one shared host UDP socket per address family,
 * with the DNS id replaced by a fresh random one: the pending table maps
 * that id back to the guest's id, address and port. An answer is accepted
 * only from an upstream we use, with a pending id and QR set; its id is
 * restored and it goes back to the guest from 10.0.2.3:53 (fragmented if
 * larger than the MTU). A query unanswered after ATTEMPT_TIMEOUT_MS is
 * re-sent to the next upstream (at least two attempts in all), then given
 * up. The table is bounded (MAX_PENDING, oldest evicted first); ids are
 * chosen by us, never by the guest, so the numeric Map keys are not
 * attacker-controlled. TCP DNS does not come here: the NAT maps it to the
 * first upstream and the TCP translator carries it.
 */
import type * as dgram from 'node:dgram';
import { randomBytes } from 'node:crypto';
import { isIP } from 'node:net';
import type { IPv4Meta } from './context.js';
import type { StackInternals } from './stack.js';
import type { UdpView } from './wire/udp.js';
import { parseDnsHeader, parseDnsQuery, skipDnsRecords } from './wire/dns.js';
import { sendUdpToGuest } from './udp.js';

export const ATTEMPT_TIMEOUT_MS = 2000;
export const MAX_PENDING = 512;
/** Largest query relayed (a query is a header, one name and an OPT record: far below this). */
export const MAX_QUERY_LENGTH = 4096;
const MAX_ADDITIONAL = 2;
const OPCODE_QUERY = 0;

interface PendingQuery {
  upstreamId: number;
  guestId: number;
  guestIp: number;
  guestPort: number;
  query: Buffer;
  attempt: number;
  deadline: number;
}

export class DnsForwarder {
  private readonly pending = new Map<number, PendingQuery>();
  private sockets: { udp4?: dgram.Socket; udp6?: dgram.Socket } = {};
  private randomPool = Buffer.alloc(0);
  private randomPos = 0;
  private closed = false;

  constructor(private readonly s: StackInternals) {}

  get pendingCount(): number {
    return this.pending.size;
  }

  input(meta: IPv4Meta, udp: UdpView): void {
    const s = this.s;
    const c = s.counters;
    const msg = udp.payload;
    if (msg.length > MAX_QUERY_LENGTH) return c.count('dns.drop.too_big');
    const q = parseDnsQuery(msg);
    if (typeof q === 'string') return c.count(`dns.drop.${q}`);
    if (q.header.qr) return c.count('dns.drop.not_query');
    if (q.header.opcode !== OPCODE_QUERY) return c.count('dns.drop.bad_opcode');
    if (q.header.ancount !== 0 || q.header.nscount !== 0 || q.header.arcount > MAX_ADDITIONAL) return c.count('dns.drop.bad_sections');
    const end = skipDnsRecords(msg, q.question.end, q.header.arcount);
    if (typeof end === 'string') return c.count(`dns.drop.${end}`);
    if (end !== msg.length) return c.count('dns.drop.trailing_bytes');
    const upstreams = s.config.dnsUpstreams;
    if (upstreams.length === 0) {
      s.logOnce('dns-no-upstream', 'DNS: no upstream resolver configured; queries to the DNS address are dropped');
      return c.count('dns.drop.no_upstream');
    }
    if (udp.srcPort === 0) return c.count('dns.drop.port_zero');
    c.count('dns.rx.queries');
    while (this.pending.size >= MAX_PENDING) {
      const oldest = this.pending.keys().next().value as number;
      this.pending.delete(oldest);
      c.count('dns.evicted');
    }
    const upstreamId = this.freshId();
    if (upstreamId < 0) return c.count('dns.drop.no_id');
    const query = Buffer.from(udp.payload);
    query.writeUInt16BE(upstreamId, 0);
    const entry: PendingQuery = {
      upstreamId,
      guestId: q.header.id,
      guestIp: meta.src,
      guestPort: udp.srcPort,
      query,
      attempt: 0,
      deadline: s.clock.now() + ATTEMPT_TIMEOUT_MS,
    };
    this.pending.set(upstreamId, entry);
    this.sendAttempt(entry);
  }

  private sendAttempt(entry: PendingQuery): void {
    const ups = this.s.config.dnsUpstreams;
    const up = ups[entry.attempt % ups.length]!;
    const socket = this.socketFor(up.address);
    if (!socket) return;
    this.s.counters.count('dns.tx.queries');
    socket.send(entry.query, up.port, up.address, (err) => {
      if (err) this.s.counters.count('dns.host.send_error');
    });
  }

  private socketFor(address: string): dgram.Socket | null {
    const type = isIP(address) === 6 ? 'udp6' : 'udp4';
    const existing = this.sockets[type];
    if (existing) return existing;
    if (this.closed) return null;
    let socket: dgram.Socket;
    try {
      socket = this.s.host.createUdpSocket(type);
    } catch (err) {
      this.s.counters.count('dns.host.socket_error');
      this.s.logOnce('dns-socket', `DNS: cannot create ${type} socket: ${String(err)}`);
      return null;
    }
    socket.on('message', (msg, rinfo) => this.answer(msg, rinfo.address, rinfo.port));
    socket.on('error', (err) => {
      this.s.counters.count('dns.host.error');
      this.s.logOnce(`dns-error-${(err as NodeJS.ErrnoException).code}`, `DNS forwarder socket error: ${err.message}`);
    });
    socket.bind({ port: 0, address: type === 'udp6' ? '::' : '0.0.0.0' });
    this.sockets[type] = socket;
    return socket;
  }

  /** An answer from the host side. */
  private answer(msg: Buffer, address: string, port: number): void {
    const s = this.s;
    const c = s.counters;
    try {
      const addr = address.startsWith('::ffff:') ? address.slice(7) : address;
      if (!s.config.dnsUpstreams.some((u) => u.address === addr && u.port === port)) return c.count('dns.drop.unknown_source');
      const h = parseDnsHeader(msg);
      if (typeof h === 'string') return c.count(`dns.drop.answer_${h}`);
      if (!h.qr) return c.count('dns.drop.answer_not_response');
      const entry = this.pending.get(h.id);
      if (!entry) return c.count('dns.drop.answer_unknown_id');
      this.pending.delete(h.id);
      const reply = Buffer.from(msg);
      reply.writeUInt16BE(entry.guestId, 0);
      if (sendUdpToGuest(s, s.config.dns, 53, entry.guestIp, entry.guestPort, reply)) c.count('dns.tx.answers');
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
    for (const entry of [...this.pending.values()]) {
      if (entry.deadline > now) continue;
      entry.attempt++;
      if (entry.attempt >= attempts) {
        this.pending.delete(entry.upstreamId);
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
    this.pending.clear();
    for (const sock of [this.sockets.udp4, this.sockets.udp6]) {
      try {
        sock?.close();
      } catch {
        /* not running */
      }
    }
    this.sockets = {};
  }

  /** A random 16-bit id not in use (-1 if none found quickly: the table is nearly full of ids). */
  private freshId(): number {
    for (let i = 0; i < 16; i++) {
      if (this.randomPos + 2 > this.randomPool.length) {
        this.randomPool = randomBytes(512);
        this.randomPos = 0;
      }
      const id = this.randomPool.readUInt16BE(this.randomPos);
      this.randomPos += 2;
      if (!this.pending.has(id)) return id;
    }
    return -1;
  }
}
