/**
 * A host-side UDP socket with no network behind it, for driving the UDP NAT
 * and the DNS forwarder frame by frame: the test (or fuzz target) decides
 * what datagrams arrive, from where, and which ICMP errors the kernel
 * reports. It implements the part of dgram.Socket the stack uses (bind with
 * 'listening', send with a completion callback, close, address, the
 * 'message', 'error' and 'close' events) and, through `host()`, the
 * UdpHostSocket shape of a flow socket with an IP_RECVERR error queue.
 * Callbacks a real socket runs later are queued as microtasks.
 */
import { EventEmitter } from 'node:events';
import type * as dgram from 'node:dgram';
import type { UdpQueuedError } from '../../src/native/index.js';
import type { UdpHostSocket } from '../../src/net/udp.js';

let nextPort = 0;

export class FakeUdpSocket extends EventEmitter {
  port = 0;
  closed = false;
  /** Datagrams sent to the host side, in order. */
  readonly sent: Array<{ data: Uint8Array; port: number; address: string }> = [];
  /** The error queue read through `host().readErrors`. */
  readonly errors: UdpQueuedError[] = [];

  bind(...args: unknown[]): this {
    const first = args[0];
    const requested = typeof first === 'number' ? first : typeof first === 'object' && first !== null ? ((first as { port?: number }).port ?? 0) : 0;
    this.port = requested > 0 ? requested : 40000 + (nextPort++ % 20000);
    const done = args.find((a) => typeof a === 'function') as (() => void) | undefined;
    queueMicrotask(() => {
      if (this.closed) return;
      this.emit('listening');
      done?.();
    });
    return this;
  }

  send(data: Uint8Array, port: number, address: string, done?: (err: Error | null) => void): void {
    if (this.closed) throw Object.assign(new Error('Not running'), { code: 'ERR_SOCKET_DGRAM_NOT_RUNNING' });
    this.sent.push({ data: Uint8Array.from(data), port, address });
    if (done) queueMicrotask(() => done(null));
  }

  close(done?: () => void): this {
    if (this.closed) throw Object.assign(new Error('Not running'), { code: 'ERR_SOCKET_DGRAM_NOT_RUNNING' });
    this.closed = true;
    queueMicrotask(() => {
      this.emit('close');
      done?.();
    });
    return this;
  }

  address(): { address: string; family: string; port: number } {
    return { address: '0.0.0.0', family: 'IPv4', port: this.port };
  }

  ref(): this {
    return this;
  }

  unref(): this {
    return this;
  }

  // ---- what the host side does -----------------------------------------------

  /** A datagram arrives from `address`:`port` (ignored once closed). */
  receive(data: Uint8Array, address: string, port: number): void {
    if (this.closed) return;
    this.emit('message', Buffer.from(data), { address, family: 'IPv4', port, size: data.length });
  }

  /** The kernel reports an error (after queueing `queued` on the error queue). */
  fail(code: string, queued: UdpQueuedError[] = []): void {
    if (this.closed) return;
    this.errors.push(...queued);
    this.emit('error', Object.assign(new Error(code), { code }));
  }

  asSocket(): dgram.Socket {
    return this as unknown as dgram.Socket;
  }

  /** As a flow socket with an error queue (what hostUdpSocket makes with the addon). */
  host(): UdpHostSocket {
    return { socket: this.asSocket(), readErrors: (max) => this.errors.splice(0, max) };
  }
}
