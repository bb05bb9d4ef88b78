/**
 * Peers on the host's loopback for the VM tests: the servers a guest
 * reaches through the gateway (10.0.2.2 -> 127.0.0.1, fec0::2 -> ::1), and
 * the clients that reach a guest through a forwarded port.
 *
 * Every peer takes the loopback address to use, '127.0.0.1' or '::1', so
 * one test body runs over either family; each records who reached it (the
 * remote address the host saw), which is how a test shows that traffic
 * came through the backend's host socket of the right family.
 *
 *  - transferHttp: /blob (a fixed body), /upload (POST, answers "LENGTH
 *    SHA256"), /abort (200 MB written as fast as the connection drains)
 *    and /item/N (a distinct body per N, every response held until
 *    `concurrent` requests are open at once, so "concurrent" is proven by
 *    the server, not assumed);
 *  - hashingSink: a raw TCP sink that answers "LENGTH SHA256" when the
 *    peer half-closes (optionally pausing its reads once);
 *  - udpEcho: echoes every datagram to its sender;
 *  - testDns: an authoritative DNS server over UDP and TCP (same port) for
 *    a few names with A and AAAA records, NXDOMAIN for everything else;
 *  - fetchLocal, tcpExchange, udpExchange: host-side clients for forwards.
 */
import { createSocket, type Socket as DgramSocket } from 'node:dgram';
import {
  createServer as createHttpServer, get as httpGet, type IncomingMessage, type Server as HttpServer, type ServerResponse,
} from 'node:http';
import { connect, createServer as createNetServer, type AddressInfo, type Server as NetServer } from 'node:net';
import { createHash } from 'node:crypto';
import { parseIPv6 } from '../../src/net/ipv6-address.js';

export type LoopbackHost = '127.0.0.1' | '::1';

export const MB = 1024 * 1024;

export const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

const udpType = (host: LoopbackHost): 'udp4' | 'udp6' => (host === '::1' ? 'udp6' : 'udp4');

/** Listens on host:0 (or host:port) and returns the port. */
export async function listenTcp(server: NetServer | HttpServer, host: LoopbackHost, port = 0, backlog?: number): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port, host, ...(backlog === undefined ? {} : { backlog }) }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return (server.address() as AddressInfo).port;
}

/** Closes a server (or nothing), waiting for it. */
export function closeServer(server: NetServer | HttpServer | undefined): Promise<void> {
  return new Promise((resolve) => (server ? server.close(() => resolve()) : resolve()));
}

/** A TCP port on `host` that nothing listens on (bound, then closed). */
export async function closedTcpPort(host: LoopbackHost): Promise<number> {
  const s = createNetServer();
  const port = await listenTcp(s, host);
  await closeServer(s);
  return port;
}

/** A UDP port on `host` that nothing listens on (bound, then closed). */
export async function closedUdpPort(host: LoopbackHost): Promise<number> {
  const s = createSocket(udpType(host));
  await new Promise<void>((resolve) => s.bind(0, host, resolve));
  const port = s.address().port;
  await new Promise<void>((r) => s.close(r));
  return port;
}

/** Distinct ports on `host` free for both TCP and UDP (bound, then released). */
export async function freePorts(n: number, host: LoopbackHost): Promise<number[]> {
  const ports: number[] = [];
  const held: { close(cb: () => void): void }[] = [];
  while (ports.length < n) {
    const s = createNetServer();
    const port = await listenTcp(s, host);
    held.push(s);
    const u = createSocket(udpType(host));
    const udpFree = await new Promise<boolean>((resolve) => {
      u.once('error', () => resolve(false));
      u.bind(port, host, () => resolve(true));
    });
    if (udpFree) held.push(u);
    else u.close();
    if (udpFree) ports.push(port);
  }
  await Promise.all(held.map((h) => new Promise<void>((r) => h.close(() => r()))));
  return ports;
}

/** The first of `n` consecutive ports on `host` free for both TCP and UDP right now (all bound at once, then released). */
export async function freePortRange(n: number, host: LoopbackHost): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const first = 20000 + Math.floor(Math.random() * (30000 - n));
    const held: { close(cb: () => void): void }[] = [];
    let free = true;
    for (let port = first; port < first + n && free; port++) {
      const s = createNetServer();
      free = await new Promise<boolean>((resolve) => {
        s.once('error', () => resolve(false));
        s.listen({ port, host }, () => resolve(true));
      });
      if (!free) break;
      held.push(s);
      const u = createSocket(udpType(host));
      free = await new Promise<boolean>((resolve) => {
        u.once('error', () => resolve(false));
        u.bind(port, host, () => resolve(true));
      });
      if (free) held.push(u);
      else u.close();
    }
    await Promise.all(held.map((h) => new Promise<void>((r) => h.close(() => r()))));
    if (free) return first;
  }
  throw new Error(`no ${n} consecutive free ports on ${host}`);
}

/** What an upload brought: its length, its sha256 and the remote address the host saw. */
export interface Upload {
  length: number;
  sha: string;
  remote: string | undefined;
}

/** The distinct body of /item/N (a few KB, so each takes several segments). */
export function itemBody(token: string, n: number): Buffer {
  return Buffer.from(`item ${n} ${token} `.repeat(150 + n));
}

export interface TransferHttpOptions {
  /** The body of /blob. */
  blob: Buffer;
  /** Part of every /item/N body. */
  token: string;
  /** /item/N responses are held until this many are open (default 100). */
  concurrent?: number;
}

export interface TransferHttp {
  server: HttpServer;
  port: number;
  /** /upload bodies, in order. */
  uploads: Upload[];
  /** How /abort responses ended: 'finished' or 'closed early'. */
  aborts: string[];
  /** Remote addresses of every request, in order. */
  remotes: string[];
  /** Most /item/N requests open at the same time. */
  peakOpen(): number;
  close(): Promise<void>;
}

/** The HTTP server of the transfer tests (see the file comment) on host:PORT. */
export async function transferHttp(host: LoopbackHost, opts: TransferHttpOptions): Promise<TransferHttp> {
  const { blob, token } = opts;
  const concurrent = opts.concurrent ?? 100;
  const uploads: Upload[] = [];
  const aborts: string[] = [];
  const remotes: string[] = [];
  let held: { n: number; res: ServerResponse }[] = [];
  let peakOpen = 0;
  let open = 0;
  let releaseTimer: NodeJS.Timeout | undefined;
  const releaseHeld = (): void => {
    clearTimeout(releaseTimer);
    releaseTimer = undefined;
    for (const { n, res } of held) {
      const body = itemBody(token, n);
      res.writeHead(200, { 'content-length': String(body.length) });
      res.end(body);
    }
    held = [];
  };
  const server = createHttpServer((req: IncomingMessage, res) => {
    remotes.push(req.socket.remoteAddress ?? '');
    const item = /^\/item\/(\d+)$/.exec(req.url ?? '');
    if (req.url === '/blob') {
      res.writeHead(200, { 'content-length': String(blob.length) });
      res.end(blob);
    } else if (req.url === '/abort') {
      // 200 MB, written as fast as the connection drains: far more than any buffer on the way.
      const total = 200 * MB;
      let sent = 0;
      res.writeHead(200, { 'content-length': String(total) });
      res.on('close', () => aborts.push(res.writableFinished ? 'finished' : 'closed early'));
      const pump = (): void => {
        while (sent < total && !res.destroyed) {
          const chunk = blob.subarray(0, Math.min(64 * 1024, total - sent));
          sent += chunk.length;
          if (sent >= total) res.end(chunk);
          else if (!res.write(chunk)) return void res.once('drain', pump);
        }
      };
      pump();
    } else if (req.url === '/upload' && req.method === 'POST') {
      const hash = createHash('sha256');
      let length = 0;
      req.on('data', (d: Buffer) => {
        hash.update(d);
        length += d.length;
      });
      req.on('end', () => {
        const sha = hash.digest('hex');
        uploads.push({ length, sha, remote: req.socket.remoteAddress });
        res.writeHead(200);
        res.end(`${length} ${sha}\n`);
      });
    } else if (item) {
      open++;
      peakOpen = Math.max(peakOpen, open);
      res.on('close', () => open--);
      held.push({ n: Number(item[1]), res });
      if (held.length >= concurrent) releaseHeld();
      // Fallback so a lost request fails the test instead of hanging it.
      else releaseTimer ??= setTimeout(releaseHeld, 60_000);
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  const port = await listenTcp(server, host, 0, 511);
  return {
    server,
    port,
    uploads,
    aborts,
    remotes,
    peakOpen: () => peakOpen,
    close: () => {
      clearTimeout(releaseTimer);
      server.closeAllConnections();
      return closeServer(server);
    },
  };
}

export interface HashingSink {
  server: NetServer;
  port: number;
  /** One entry per connection the peer half-closed. */
  uploads: Upload[];
  /** How many times it paused its reads. */
  pauses(): number;
}

/**
 * A raw TCP sink on host:PORT: hashes what arrives until the peer
 * half-closes, then answers "LENGTH SHA256\n". With `pauseAfterBytes`, it
 * stops reading for `pauseMs` once a connection has brought that much (the
 * sender must wait, not lose data).
 */
export async function hashingSink(host: LoopbackHost, opts: { pauseAfterBytes?: number; pauseMs?: number } = {}): Promise<HashingSink> {
  const uploads: Upload[] = [];
  let pauses = 0;
  const server = createNetServer({ allowHalfOpen: true }, (conn) => {
    const hash = createHash('sha256');
    let length = 0;
    let paused = false;
    conn.on('data', (d: Buffer) => {
      hash.update(d);
      length += d.length;
      if (opts.pauseAfterBytes !== undefined && !paused && length >= opts.pauseAfterBytes) {
        paused = true;
        pauses++;
        conn.pause();
        setTimeout(() => conn.resume(), opts.pauseMs ?? 3000);
      }
    });
    conn.on('end', () => {
      const sha = hash.digest('hex');
      uploads.push({ length, sha, remote: conn.remoteAddress });
      conn.end(`${length} ${sha}\n`);
    });
    conn.on('error', () => undefined);
  });
  const port = await listenTcp(server, host);
  return { server, port, uploads, pauses: () => pauses };
}

export interface UdpEcho {
  socket: DgramSocket;
  port: number;
  /** Every datagram echoed: its length and the sender's address. */
  echoed: { length: number; from: string }[];
}

/** A UDP echo server on host:PORT. */
export async function udpEcho(host: LoopbackHost): Promise<UdpEcho> {
  const socket = createSocket(udpType(host));
  const echoed: UdpEcho['echoed'] = [];
  socket.on('message', (msg, rinfo) => {
    echoed.push({ length: msg.length, from: rinfo.address });
    socket.send(msg, rinfo.port, rinfo.address);
  });
  await new Promise<void>((resolve) => socket.bind(0, host, resolve));
  return { socket, port: socket.address().port, echoed };
}

/** DNS record types testDns knows. */
export const DNS_TYPE_A = 1;
export const DNS_TYPE_AAAA = 28;

export interface DnsQuery {
  id: number;
  name: string;
  type: number;
  /** The sender's address; 'tcp:ADDRESS' for queries over TCP. */
  from: string;
}

/** The records of one name: a dotted IPv4 address, an IPv6 address. */
export interface DnsRecords {
  a?: string;
  aaaa?: string;
}

/**
 * The answer of a minimal authoritative server to `query`: the records of
 * the asked type for a known name (an empty NOERROR answer for its other
 * types), NXDOMAIN for unknown names; null for what is no query. Logs the
 * query.
 */
export function dnsAnswerFor(query: Buffer, records: Record<string, DnsRecords>, log: DnsQuery[], from: string): Buffer | null {
  if (query.length < 12) return null;
  const id = query.readUInt16BE(0);
  let at = 12;
  const labels: string[] = [];
  for (;;) {
    const len = query[at];
    if (len === undefined || len > 63) return null;
    at += 1;
    if (len === 0) break;
    labels.push(query.subarray(at, at + len).toString('latin1'));
    at += len;
  }
  if (at + 4 > query.length) return null;
  const type = query.readUInt16BE(at);
  const question = query.subarray(12, at + 4);
  const name = labels.join('.').toLowerCase();
  log.push({ id, name, type, from });
  const known = records[name];
  let rdata: Uint8Array | undefined;
  if (type === DNS_TYPE_A && known?.a) rdata = Uint8Array.from(known.a.split('.').map(Number));
  if (type === DNS_TYPE_AAAA && known?.aaaa) rdata = parseIPv6(known.aaaa) ?? undefined;
  const header = Buffer.alloc(12);
  header.writeUInt16BE(id, 0);
  header.writeUInt16BE(0x8400 | (query.readUInt16BE(2) & 0x0100) | (known ? 0 : 3), 2); // QR AA (RD copied) rcode
  header.writeUInt16BE(1, 4);
  header.writeUInt16BE(rdata ? 1 : 0, 6);
  const parts = [header, question];
  if (rdata) {
    const rr = Buffer.alloc(12 + rdata.length);
    rr.writeUInt16BE(0xc00c, 0); // name: pointer to the question
    rr.writeUInt16BE(type, 2);
    rr.writeUInt16BE(1, 4); // IN
    rr.writeUInt32BE(60, 6); // TTL
    rr.writeUInt16BE(rdata.length, 10);
    rr.set(rdata, 12);
    parts.push(rr);
  }
  return Buffer.concat(parts);
}

export interface TestDns {
  port: number;
  /** Every query, over UDP and TCP. */
  queries: DnsQuery[];
  /** Remote addresses of the TCP connections. */
  tcpPeers: string[];
  /** Every byte each TCP connection brought. */
  tcpStreams: Buffer[];
  close(): Promise<void>;
}

/**
 * testDns on host:PORT, UDP and TCP on the same port number. Over TCP it
 * answers the first length-prefixed query, then closes (and drops a
 * connection whose first message is no query).
 */
export async function testDns(host: LoopbackHost, records: Record<string, DnsRecords>): Promise<TestDns> {
  const queries: DnsQuery[] = [];
  const tcpPeers: string[] = [];
  const tcpStreams: Buffer[] = [];
  const udp = createSocket(udpType(host));
  udp.on('message', (msg, rinfo) => {
    const reply = dnsAnswerFor(msg, records, queries, rinfo.address);
    if (reply) udp.send(reply, rinfo.port, rinfo.address);
  });
  await new Promise<void>((resolve) => udp.bind(0, host, resolve));
  const port = udp.address().port;
  const tcp = createNetServer((conn) => {
    tcpPeers.push(conn.remoteAddress ?? '');
    const stream = tcpStreams.push(Buffer.alloc(0)) - 1;
    conn.on('error', () => {});
    conn.on('data', (d: Buffer) => {
      const got = (tcpStreams[stream] = Buffer.concat([tcpStreams[stream]!, d]));
      if (got.length < 2 || got.length < 2 + got.readUInt16BE(0)) return;
      const reply = dnsAnswerFor(got.subarray(2, 2 + got.readUInt16BE(0)), records, queries, `tcp:${conn.remoteAddress}`);
      if (!reply) return void conn.destroy();
      const length = Buffer.alloc(2);
      length.writeUInt16BE(reply.length);
      conn.end(Buffer.concat([length, reply]));
    });
  });
  try {
    await listenTcp(tcp, host, port);
  } catch (e) {
    udp.close();
    throw e;
  }
  return {
    port,
    queries,
    tcpPeers,
    tcpStreams,
    close: async () => {
      udp.close();
      await closeServer(tcp);
    },
  };
}

/** GET http://host:port/path: status and body. */
export function fetchLocal(port: number, path: string, host = '127.0.0.1'): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = httpGet({ host, port, path, timeout: 30_000, agent: false }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (d: Buffer) => parts.push(d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(parts) }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${host}:${port}${path}: timeout`)));
    req.on('error', reject);
  });
}

/** Connect to host:port, send `msg`, half-close, collect the reply until the peer closes. */
export function tcpExchange(port: number, msg: Buffer, timeoutMs = 60_000, host: LoopbackHost = '127.0.0.1'): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const sock = connect({ host, port, allowHalfOpen: true });
    const parts: Buffer[] = [];
    const timer = setTimeout(() => sock.destroy(new Error(`exchange on port ${port}: timeout`)), timeoutMs);
    sock.on('connect', () => sock.end(msg));
    sock.on('data', (d: Buffer) => parts.push(d));
    sock.on('end', () => {
      clearTimeout(timer);
      sock.end();
      resolve(Buffer.concat(parts));
    });
    sock.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

/** Send one datagram from a fresh socket to host:port and wait for one reply. */
export async function udpExchange(
  port: number, msg: string, timeoutMs = 10_000, host: LoopbackHost = '127.0.0.1',
): Promise<{ reply: string; from: string; fromPort: number }> {
  const s = createSocket(udpType(host));
  try {
    return await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`udp exchange on ${port}: timeout`)), timeoutMs);
      s.on('message', (m, rinfo) => {
        clearTimeout(timer);
        resolve({ reply: m.toString(), from: rinfo.address, fromPort: rinfo.port });
      });
      s.on('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
      s.send(msg, port, host);
    });
  } finally {
    s.close();
  }
}
