/**
 * VhostUserServer: gets frontends connected to a device, one at a time.
 *
 * Theory of operation. Two ways to meet a frontend:
 *
 * - listen mode (`--socket PATH`): we create PATH, mode 0600 (a stale
 *   socket file is replaced; a socket another backend listens on, or a file
 *   that is not a socket, is refused: see listen-socket.ts), accept one
 *   frontend and serve it with a VhostUserSession. A second connection while
 *   one is being served is closed at once with a log line (vhost-user has no
 *   way to say "busy"; QEMU then retries or fails) and counted
 *   (`vhost_user.accept.refused_busy`). But "being served" is checked with
 *   the kernel first: a frontend that closed its socket and reconnected at
 *   once may be accepted before the event loop has delivered the old
 *   connection's end of stream (both are ready in the same turn, or several
 *   connections wait in the accept queue). If the current frontend has
 *   already closed its end, its session is ended there and then and the
 *   newcomer is served (`vhost_user.accept.replaced_closed`). When the
 *   frontend goes away the next one is accepted, unless `oneOff`.
 *   When accept fails for want of a file descriptor (EMFILE/ENFILE) the
 *   listening socket is not polled for `retryMs` (it would stay readable
 *   and spin the loop); the error is logged once until an accept succeeds.
 * - one frontend, and only one, with `oneOff`: the server closes after the
 *   first session in which the frontend sent at least one request. A
 *   connection that closes or times out without a request (a probe such as
 *   a second backend checking whether PATH is live, see listen-socket.ts)
 *   does not use up the one session.
 * - a connection that delivers no request within `handshakeTimeoutMs` is
 *   closed (`vhost_user.handshake_timeout`, see session.ts), so a silent
 *   connection cannot hold the only session slot.
 * - connect mode (`--connect PATH`): the frontend listens (QEMU
 *   `server=on`, cloud-hypervisor `vhost_mode=server`); we connect, retrying
 *   every `retryMs` (1 s) until the socket appears, and reconnect the same
 *   way after the frontend goes away, unless `oneOff`.
 *
 * The device is either one instance reused across sessions (the session
 * resets it on disconnect) or a factory called once per session; the
 * factory's `onBroken` argument routes a corrupt-ring report to whichever
 * session is current. Events: 'listening' (path), 'session'
 * (VhostUserSession), 'disconnect' (reason | null), 'error' (Error, only
 * emitted when someone listens for it; otherwise logged), 'close'.
 * `close()` ends the session, stops listening/retrying and removes the
 * socket file this server created, if PATH is still that file.
 * `requireSealedMemory` goes to every session; the warning about unsealed
 * guest memory is given once per server.
 */
import { EventEmitter } from 'node:events';
import { native, errnoCode, type FdWatcher } from '../native/index.js';
import type { Counters } from '../net/context.js';
import { CounterSet } from '../net/counters.js';
import type { VirtioDevice } from '../virtio/device.js';
import { closeQuietly } from './connection.js';
import { UnixListener } from './listen-socket.js';
import { DEFAULT_HANDSHAKE_TIMEOUT_MS, VhostUserSession, nullLogger, warnOnce, type Logger } from './session.js';

/** Connections accepted per readiness callback of the listening socket. */
export const ACCEPT_BUDGET = 16;

export type BrokenHandler = (queueIndex: number, reason: string) => void;
export type DeviceFactory = (onBroken: BrokenHandler) => VirtioDevice;

export interface ServerOptions {
  mode: 'listen' | 'connect';
  /** Socket path: created in listen mode, connected to in connect mode. */
  path: string;
  /** A device reused by every session, or a factory called once per session. */
  device: VirtioDevice | DeviceFactory;
  logger?: Logger;
  /** Serve one frontend, then close. */
  oneOff?: boolean;
  /** Connect-mode retry interval, and the accept retry when out of fds (default 1000 ms). */
  retryMs?: number;
  /** Accept only guest memory sealed against shrinking (see session.ts); default false. */
  requireSealedMemory?: boolean;
  /** A connection that sends no request within this many ms is closed (default 10 s; 0: never). */
  handshakeTimeoutMs?: number;
  /** Where accept refusals and handshake timeouts are counted (default: counters of its own). */
  counters?: Counters;
}

export class VhostUserServer extends EventEmitter {
  readonly mode: 'listen' | 'connect';
  readonly path: string;
  private readonly log: Logger;
  private readonly oneOff: boolean;
  private readonly retryMs: number;
  private readonly deviceSource: VirtioDevice | DeviceFactory;
  private readonly requireSealedMemory: boolean;
  /** The unsealed-memory warning is given once per server, not once per session. */
  private readonly warnUnsealedMemory: (message: string) => void;
  private readonly handshakeTimeoutMs: number;
  readonly counters: Counters;
  private listener: UnixListener | null = null;
  private listenWatcher: FdWatcher | null = null;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private current: VhostUserSession | null = null;
  private closing = false;
  private isClosed = false;
  private served = 0;
  private lastConnectError: string | null = null;
  /** accept(2) failed with EMFILE/ENFILE and has not succeeded since (logged once). */
  private acceptOutOfFds = false;

  constructor(options: ServerOptions) {
    super();
    this.mode = options.mode;
    this.path = options.path;
    this.log = options.logger ?? nullLogger;
    this.oneOff = options.oneOff ?? false;
    this.retryMs = options.retryMs ?? 1000;
    this.deviceSource = options.device;
    this.requireSealedMemory = options.requireSealedMemory ?? false;
    this.warnUnsealedMemory = warnOnce(this.log);
    this.handshakeTimeoutMs = options.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS;
    this.counters = options.counters ?? new CounterSet();
    if (typeof this.deviceSource !== 'function') {
      this.deviceSource.onBroken = (q, r) => this.current?.deviceBroken(q, r);
    }
  }

  /** The session being served, if any. */
  get session(): VhostUserSession | null {
    return this.current;
  }

  /** How many sessions have been started. */
  get sessionCount(): number {
    return this.served;
  }

  get closed(): boolean {
    return this.isClosed;
  }

  /**
   * Start listening or connecting. Listen mode throws if the socket cannot
   * be created, e.g. SocketPathInUseError when another backend listens on
   * the path.
   */
  start(): this {
    if (this.mode === 'listen') {
      const listener = UnixListener.open(this.path, 4);
      try {
        this.listenWatcher = native.watch(listener.fd, 'r', (ready) => this.onAcceptable(ready));
      } catch (e) {
        listener.close();
        throw e;
      }
      this.listener = listener;
      this.log.info(`vhost-user: listening on ${this.path}`);
      this.emit('listening', this.path);
    } else {
      this.tryConnect();
    }
    return this;
  }

  /** Stop everything: end the session, stop listening or retrying, remove the socket file we created. */
  close(): void {
    if (this.isClosed || this.closing) return;
    this.closing = true;
    if (this.retryTimer !== null) {
      clearTimeout(this.retryTimer);
      this.retryTimer = null;
    }
    this.current?.close();
    this.current = null;
    if (this.listenWatcher !== null) {
      this.listenWatcher.close();
      this.listenWatcher = null;
    }
    if (this.listener !== null) {
      if (this.listener.close() === 'replaced') this.log.info(`vhost-user: ${this.path} is another process's socket now: left in place`);
      this.listener = null;
    }
    this.isClosed = true;
    this.emit('close');
  }

  private reportError(err: Error): void {
    this.log.error(`vhost-user: ${err.message}`);
    if (this.listenerCount('error') > 0) this.emit('error', err);
  }

  private makeDevice(): VirtioDevice {
    const src = this.deviceSource;
    if (typeof src !== 'function') return src;
    const onBroken: BrokenHandler = (q, r) => this.current?.deviceBroken(q, r);
    const device = src(onBroken);
    // A factory that did not wire the callback itself still gets reports routed.
    if (device.onBroken === undefined) device.onBroken = onBroken;
    return device;
  }

  private startSession(fd: number): void {
    let device: VirtioDevice;
    try {
      device = this.makeDevice();
    } catch (e) {
      closeQuietly(fd);
      this.reportError(new Error(`device creation failed: ${e instanceof Error ? e.message : String(e)}`));
      this.afterSession(true);
      return;
    }
    this.served++;
    let session: VhostUserSession | null = null;
    try {
      session = new VhostUserSession(fd, device, {
        logger: this.log,
        requireSealedMemory: this.requireSealedMemory,
        onUnsealedMemory: this.warnUnsealedMemory,
        handshakeTimeoutMs: this.handshakeTimeoutMs,
        onClose: (reason) => {
          if (this.current === session) this.current = null;
          if (session!.stats.handshakeTimedOut) this.counters.count('vhost_user.handshake_timeout');
          this.emit('disconnect', reason);
          this.afterSession(session!.stats.messages > 0);
        },
      });
    } catch (e) {
      // The socket could not be watched (the session took nothing): never a crash of the accept/connect path.
      closeQuietly(fd);
      this.reportError(new Error(`session start failed: ${e instanceof Error ? e.message : String(e)}`));
      this.afterSession(true);
      return;
    }
    this.current = session;
    this.emit('session', session);
  }

  /**
   * After a session (or a failed start): serve the next frontend, or close
   * when one-off and `countsAsServed` (the frontend sent a request, or the
   * start failed on our side).
   */
  private afterSession(countsAsServed: boolean): void {
    if (this.closing) return;
    if (this.oneOff && countsAsServed) {
      this.close();
      return;
    }
    if (this.mode === 'connect') this.scheduleConnect(0);
  }

  // ---- listen mode -----------------------------------------------------------

  private onAcceptable(ready: 'r' | 'w' | 'rw' | 'error'): void {
    if (this.closing) return;
    if (ready === 'error') {
      this.reportError(new Error(`listening socket ${this.path} failed`));
      return;
    }
    for (let budget = ACCEPT_BUDGET; budget > 0 && !this.closing; budget--) {
      let fd: number | null;
      try {
        fd = native.unixAccept(this.listener!.fd);
      } catch (e) {
        const code = errnoCode(e);
        if (code === 'EMFILE' || code === 'ENFILE') {
          this.pauseAccepting(code);
          return;
        }
        this.reportError(new Error(`accept failed: ${code ?? String(e)}`));
        return;
      }
      if (fd === null) return;
      this.acceptOutOfFds = false;
      // A frontend that restarts at once: its old connection's end of stream
      // may not have been read yet. Ending that session may close a one-off server.
      if (this.current?.endIfFrontendClosed()) this.counters.count('vhost_user.accept.replaced_closed');
      if (this.closing) {
        closeQuietly(fd);
        return;
      }
      if (this.current !== null) {
        this.counters.count('vhost_user.accept.refused_busy');
        this.log.warn('vhost-user: refusing a second frontend connection while one is being served');
        closeQuietly(fd);
        continue;
      }
      this.log.info('vhost-user: frontend connected');
      this.startSession(fd);
    }
  }

  /**
   * accept(2) failed for want of a file descriptor. The connection stays in
   * the listen queue and the socket stays readable: polling it now would spin
   * (and log) on every loop turn. Stop watching it for `retryMs`, then try
   * again; logged once until an accept succeeds.
   */
  private pauseAccepting(code: string): void {
    if (!this.acceptOutOfFds) {
      this.acceptOutOfFds = true;
      this.log.error(`vhost-user: cannot accept a frontend: out of file descriptors (${code}); retrying every ${this.retryMs} ms`);
    }
    this.listenWatcher?.setEvents('');
    if (this.retryTimer !== null) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      if (!this.closing) this.listenWatcher?.setEvents('r');
    }, this.retryMs);
  }

  // ---- connect mode ----------------------------------------------------------

  private scheduleConnect(delayMs: number): void {
    if (this.closing || this.retryTimer !== null) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.tryConnect();
    }, delayMs);
  }

  private tryConnect(): void {
    if (this.closing || this.current !== null) return;
    let fd: number;
    try {
      fd = native.unixConnect(this.path);
    } catch (e) {
      const code = errnoCode(e) ?? String(e);
      if (code !== this.lastConnectError) {
        const why = code === 'EMFILE' || code === 'ENFILE' ? `out of file descriptors (${code})` : code;
        this.log.info(`vhost-user: cannot connect to ${this.path} (${why}); retrying every ${this.retryMs} ms`);
        this.lastConnectError = code;
      }
      this.scheduleConnect(this.retryMs);
      return;
    }
    this.lastConnectError = null;
    this.log.info(`vhost-user: connected to ${this.path}`);
    this.startSession(fd);
  }
}
