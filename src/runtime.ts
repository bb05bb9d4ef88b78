/**
 * The backend assembled: a vhost-user server serving a virtio-net device whose
 * frames go to the NAT stack. This is what the CLI runs and what a library
 * user embeds.
 *
 * Lifetimes. One device and one stack live as long as the backend; frontends
 * come and go (QEMU restarts, cloud-hypervisor reconnects), and each session
 * resets the device when it ends. The stack keeps its flows and forwarded
 * ports across sessions, as libslirp does across a guest reboot: stale flows
 * die by their own timers or by the new guest's RSTs.
 */
import { VhostUserServer } from './vhost-user/server.js';
import type { Logger } from './vhost-user/session.js';
import { VirtioNetDevice } from './virtio/net-device.js';
import { Stack } from './net/stack.js';
import { CounterSet } from './net/counters.js';
import { PcapWriter } from './net/pcap.js';
import type { StackConfig } from './net/context.js';
import type { ForwardSpec } from './net/forward.js';

export interface BackendOptions {
  /** Listen on this socket path (the VMM connects), or connect to it. */
  socket: string;
  mode?: 'listen' | 'connect';
  oneOff?: boolean;
  /** A connection that sends no request within this many ms is closed (default 10 s; 0: never). */
  handshakeTimeoutMs?: number;
  mac?: Uint8Array;
  config?: Partial<StackConfig>;
  forwards?: ForwardSpec[];
  /** Capture every frame at the device boundary to this file. */
  pcapPath?: string;
  logger?: Logger;
  /** How often the stack's timers run (ms, default 50). */
  tickMs?: number;
}

export interface Backend {
  readonly server: VhostUserServer;
  readonly device: VirtioNetDevice;
  readonly stack: Stack;
  readonly counters: CounterSet;
  /** Counters of every layer, formatted for people. */
  formatCounters(): string;
  /** Resolves when the server closes (one-off session over, or close()). */
  readonly closed: Promise<void>;
  close(): Promise<void>;
}

/** QEMU's default NIC MAC; the guest's own MAC as seen in config space. */
export const DEFAULT_GUEST_MAC = Uint8Array.from([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);

export const consoleLogger = (level: 'quiet' | 'normal' | 'verbose'): Logger => ({
  debug: (m) => {
    if (level === 'verbose') console.error(`debug: ${m}`);
  },
  info: (m) => {
    if (level !== 'quiet') console.error(m);
  },
  warn: (m) => {
    if (level !== 'quiet') console.error(`warning: ${m}`);
  },
  error: (m) => console.error(`error: ${m}`),
});

/**
 * Start serving. Binds forwarded ports and the vhost-user socket before
 * resolving. Rejects, with everything it opened closed again, if either
 * cannot be bound (e.g. SocketPathInUseError: another backend serves the
 * socket path).
 */
export async function startBackend(options: BackendOptions): Promise<Backend> {
  const logger = options.logger ?? consoleLogger('normal');
  const counters = new CounterSet();
  const pcap = options.pcapPath !== undefined ? new PcapWriter(options.pcapPath) : undefined;
  // The device needs a sink at construction, the stack needs the device's
  // link: the stack is attached right after both exist.
  const device = new VirtioNetDevice({
    mac: options.mac ?? DEFAULT_GUEST_MAC,
    mtu: options.config?.mtu ?? 1500,
    sink: { receive() {} },
    counters,
    logger,
  });
  const stack = new Stack({
    link: device.link,
    config: options.config ?? {},
    counters,
    logger: (m) => logger.info(m),
    forwards: options.forwards ?? [],
    ...(pcap ? { pcap } : {}),
  });
  device.attach(stack);
  await stack.start();

  const tick = setInterval(() => stack.tick(), options.tickMs ?? 50);
  tick.unref();

  const server = new VhostUserServer({
    mode: options.mode ?? 'listen',
    path: options.socket,
    device,
    logger,
    oneOff: options.oneOff ?? false,
    counters,
    ...(options.handshakeTimeoutMs !== undefined ? { handshakeTimeoutMs: options.handshakeTimeoutMs } : {}),
  });
  let resolveClosed!: () => void;
  const closed = new Promise<void>((resolve) => (resolveClosed = resolve));
  let finished = false;
  const finish = (): void => {
    if (finished) return;
    finished = true;
    clearInterval(tick);
    stack.close();
    pcap?.close();
    resolveClosed();
  };
  server.on('close', finish);
  server.on('error', (err: Error) => logger.error(err.message));
  try {
    server.start();
  } catch (err) {
    finish();
    throw err;
  }

  return {
    server,
    device,
    stack,
    counters,
    formatCounters: () => counters.format(),
    closed,
    async close() {
      server.close();
      finish();
      await closed;
    },
  };
}
