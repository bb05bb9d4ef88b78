/**
 * The control endpoint (`--control PATH`): HTTP/1.1 with JSON on a Unix
 * socket, for operators (`curl --unix-socket PATH http://x/stats`) and the
 * `vhost-user-net ctl` client.
 *
 * Theory of operation. The socket path is claimed as the vhost-user one is
 * (UnixListener: a live socket refused, a stale one replaced, mode 0600 set
 * before it accepts, only our own file removed at exit); its listening fd
 * is handed to Node's http server (`listen({ fd })`), which then owns and
 * closes it, so there is no moment the socket accepts with another mode.
 * Who may connect is the file's mode: its owner (and root).
 *
 * Routes:
 *   GET    /forwards          the forwards (ForwardTable)
 *   POST   /forwards          {"spec":"tcp:8080:80"} (or a range, tcp:8000-8010:80-90): add one (201)
 *   DELETE /forwards/{id}     remove one (a range whole); ?close=1 also ends its connections
 *   GET    /stats             every counter (CounterSet.snapshot)
 *   GET    /flows             the live flows (FlowTable.entries)
 *   GET    /leases            the DHCP lease and the guest's addresses
 *   GET    /metrics           Prometheus text format 0.0.4
 * Errors are `{"error": "..."}` with 400 (bad JSON or spec), 403 (port not
 * allowed), 404 (no such route or forward), 405 (wrong method, with Allow),
 * 408 (too slow), 409 (port in use, overlaps a forward, reserve spent), 413
 * (body too large), 431 (headers too large), 500 (our bug).
 *
 * A client cannot hurt the backend: every response closes its connection
 * (no keep-alive), headers and body are bounded (CONTROL_LIMITS), a client
 * that takes longer than `timeoutMs` to send its request or sits idle is
 * dropped (Node's headersTimeout/requestTimeout, checked every
 * `timeoutMs / 4`, answered 408, and the socket timeout of twice that), at most `maxConnections` are
 * open at once (Node closes any more at once), malformed HTTP is answered
 * by the clientError handler, and every handler is synchronous but for a
 * forward's bind, with one guard that answers 500 rather than throwing.
 * Nothing here runs on the per-packet path; a listing is built in one turn
 * of the event loop (a few ms for thousands of flows).
 */
import * as http from 'node:http';
import type { Socket } from 'node:net';
import type { CounterSet } from '../net/counters.js';
import type { Stack } from '../net/stack.js';
import { parseForwardSpec } from '../net/forward.js';
import { UnixListener } from '../vhost-user/listen-socket.js';
import { ForwardError, type ForwardTable } from './forwards.js';
import { flowViews, leasesView, prometheusText } from './views.js';

export interface ControlLimits {
  maxConnections: number;
  maxBodyBytes: number;
  maxHeaderBytes: number;
  timeoutMs: number;
}

export const CONTROL_LIMITS: Readonly<ControlLimits> = {
  /** Connections open at once. */
  maxConnections: 16,
  /** Request body, bytes. */
  maxBodyBytes: 16 * 1024,
  /** Request line and headers, bytes. */
  maxHeaderBytes: 16 * 1024,
  /** To send a whole request, and to sit idle, ms. */
  timeoutMs: 10_000,
};

export interface ControlServerOptions {
  path: string;
  stack: Stack;
  counters: CounterSet;
  forwards: ForwardTable;
  limits?: Partial<ControlLimits>;
}

class HttpError extends Error {
  constructor(readonly status: number, message: string, readonly headers: Record<string, string> = {}) {
    super(message);
  }
}

const ROUTES: { pattern: RegExp; methods: string[] }[] = [
  { pattern: /^\/forwards$/, methods: ['GET', 'POST'] },
  { pattern: /^\/forwards\/[^/]+$/, methods: ['DELETE'] },
  { pattern: /^\/(stats|flows|leases|metrics)$/, methods: ['GET'] },
];

export class ControlServer {
  private readonly http: http.Server;
  private readonly limits: ControlLimits;
  private listener: UnixListener | null = null;

  constructor(private readonly options: ControlServerOptions) {
    this.limits = { ...CONTROL_LIMITS, ...options.limits };
    const timeout = this.limits.timeoutMs;
    this.http = http.createServer(
      {
        maxHeaderSize: this.limits.maxHeaderBytes,
        headersTimeout: timeout,
        requestTimeout: timeout,
        connectionsCheckingInterval: Math.max(50, Math.floor(timeout / 4)),
        keepAlive: false,
      },
      (req, res) => void this.serve(req, res),
    );
    this.http.maxConnections = this.limits.maxConnections;
    // A connection that sent part of a request is answered 408 by the request timeouts; one idle past twice that is dropped.
    this.http.setTimeout(2 * timeout, (socket: Socket) => socket.destroy());
    this.http.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => this.clientError(err, socket));
  }

  get path(): string {
    return this.options.path;
  }

  /** Claim the path and listen. Throws SocketPathInUseError for a live socket there. */
  async start(): Promise<void> {
    const listener = UnixListener.open(this.options.path, 64);
    this.listener = listener;
    await new Promise<void>((resolve, reject) => {
      this.http.once('error', reject);
      this.http.listen({ fd: listener.fd }, () => {
        this.http.off('error', reject);
        resolve();
      });
    }).catch((err: unknown) => {
      listener.close();
      this.listener = null;
      throw err;
    });
  }

  /** Stop listening, drop every connection, remove the socket file if it is still ours. */
  async close(): Promise<void> {
    const listener = this.listener;
    if (!listener) return;
    this.listener = null;
    const closed = new Promise<void>((resolve) => this.http.close(() => resolve()));
    this.http.closeAllConnections();
    await closed;
    listener.releasePath();
  }

  private async serve(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const counters = this.options.counters;
    counters.count('control.requests');
    res.shouldKeepAlive = false;
    try {
      const { status, body } = await this.route(req);
      if (typeof body === 'string') send(res, status, body, 'text/plain; version=0.0.4; charset=utf-8');
      else send(res, status, JSON.stringify(body, null, 2) + '\n', 'application/json');
    } catch (err) {
      const e = err instanceof HttpError || err instanceof ForwardError ? err : new HttpError(500, `internal error: ${(err as Error)?.message ?? String(err)}`);
      counters.count(`control.error.${e.status}`);
      if (e instanceof HttpError) for (const [k, v] of Object.entries(e.headers)) res.setHeader(k, v);
      send(res, e.status, JSON.stringify({ error: e.message }) + '\n', 'application/json');
      // A refused body is not read: the connection ends with the response.
      if (e.status === 413) res.once('finish', () => req.socket.destroySoon());
    }
  }

  private async route(req: http.IncomingMessage): Promise<{ status: number; body: unknown }> {
    const url = new URL(req.url ?? '/', 'http://control');
    const path = url.pathname.replace(/\/+$/, '') || '/';
    const method = req.method ?? 'GET';
    const route = ROUTES.find((r) => r.pattern.test(path));
    if (!route) throw new HttpError(404, `no route ${path}`);
    if (!route.methods.includes(method)) throw new HttpError(405, `${method} not allowed on ${path}`, { Allow: route.methods.join(', ') });
    const { stack, counters, forwards } = this.options;
    switch (path) {
      case '/forwards':
        if (method === 'GET') return { status: 200, body: forwards.list() };
        return { status: 201, body: await forwards.add(this.specFrom(await this.readJson(req))) };
      case '/stats':
        return { status: 200, body: counters.snapshot() };
      case '/flows':
        return { status: 200, body: flowViews(stack) };
      case '/leases':
        return { status: 200, body: leasesView(stack) };
      case '/metrics':
        return { status: 200, body: prometheusText(counters) };
    }
    const id = decodeURIComponent(path.slice('/forwards/'.length));
    const close = url.searchParams.get('close');
    return { status: 200, body: await forwards.remove(id, close === '1' || close === 'true') };
  }

  private specFrom(body: unknown): ReturnType<typeof parseForwardSpec> {
    const spec = (body as { spec?: unknown } | null)?.spec;
    if (typeof spec !== 'string') throw new HttpError(400, 'body must be {"spec": "tcp:[HOSTADDR:]HOSTPORT:GUESTPORT"}');
    try {
      return parseForwardSpec(spec);
    } catch (err) {
      throw new HttpError(400, (err as Error).message);
    }
  }

  private readJson(req: http.IncomingMessage): Promise<unknown> {
    const max = this.limits.maxBodyBytes;
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > max) return Promise.reject(new HttpError(413, `body larger than ${max} bytes`));
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      req.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > max) {
          req.removeAllListeners('data');
          req.pause();
          reject(new HttpError(413, `body larger than ${max} bytes`));
          return;
        }
        chunks.push(chunk);
      });
      req.on('error', reject);
      req.on('end', () => {
        try {
          resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')));
        } catch {
          reject(new HttpError(400, 'body is not JSON'));
        }
      });
    });
  }

  /** Malformed HTTP, headers too large, too slow: answered if the socket still takes it, then closed. */
  private clientError(err: NodeJS.ErrnoException, socket: Socket): void {
    this.options.counters.count('control.error.client');
    if (err.code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
    const body = JSON.stringify({ error: status === 431 ? 'headers too large' : status === 408 ? 'request too slow' : `bad request (${err.code ?? 'malformed'})` }) + '\n';
    socket.end(
      `HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
  }
}

function send(res: http.ServerResponse, status: number, body: string, type: string): void {
  res.writeHead(status, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body), Connection: 'close' });
  res.end(body);
}
