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
 *
 * File descriptors. Before the stack exists the soft RLIMIT_NOFILE is raised
 * to the hard limit and the flow limits are sized to what is left after the
 * fds already open and a reserve for the vhost-user session, DNS, forwards,
 * pcap and Node (src/fd-budget.ts); one log line says what was decided, and
 * a limit the caller set explicitly that had to be lowered is warned about.
 */
import { VhostUserServer } from './vhost-user/server.js';
import type { Logger } from './vhost-user/session.js';
import { VirtioNetDevice } from './virtio/net-device.js';
import { Stack } from './net/stack.js';
import { CounterSet } from './net/counters.js';
import { PcapWriter } from './net/pcap.js';
import type { StackConfig } from './net/context.js';
import type { ForwardSpec } from './net/forward.js';
import { resolveStackConfig } from './net/config.js';
import { native } from './native/index.js';
import { planFlowLimits, raiseFdLimit, type FlowLimits } from './fd-budget.js';

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
  /** Accept only guest memory sealed against shrinking (memfd with F_SEAL_SHRINK); default false: unsealed memfds are warned about once. */
  requireSealedMemory?: boolean;
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
  // The device needs a sink at construction, the stack needs the device's
  // link: the stack is attached right after both exist.
  const device = new VirtioNetDevice({
    mac: options.mac ?? DEFAULT_GUEST_MAC,
    mtu: options.config?.mtu ?? 1500,
    sink: { receive() {} },
    counters,
    logger,
  });
  // Sized before the pcap file is opened: its fd is in the reserve.
  const config = fitFlowLimitsToFds(options, device.maxQueues, logger);
  const pcap = options.pcapPath !== undefined ? new PcapWriter(options.pcapPath) : undefined;
  const stack = new Stack({
    link: device.link,
    config,
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
    requireSealedMemory: options.requireSealedMemory ?? false,
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

const FLOW_LIMIT_FIELDS = [
  ['tcp', 'maxTcpFlows', 'TCP'],
  ['udp', 'maxUdpFlows', 'UDP'],
  ['ping', 'maxPingFlows', 'ICMP'],
  ['dns', 'maxDnsQueries', 'DNS queries'],
] as const;

/**
 * Raise the soft fd limit, size the flow limits to fit it (src/fd-budget.ts)
 * and log what was decided. Returns the caller's config with the limits set.
 * Throws when the fd limit leaves no room for flows.
 */
function fitFlowLimitsToFds(options: BackendOptions, queues: number, logger: Logger): Partial<StackConfig> {
  const config: Partial<StackConfig> = { ...(options.config ?? {}) };
  const resolved = resolveStackConfig(config);
  const raised = raiseFdLimit(native);
  const soft = raised.limit.soft;
  const asked: FlowLimits = { tcp: resolved.maxTcpFlows, udp: resolved.maxUdpFlows, ping: resolved.maxPingFlows, dns: resolved.maxDnsQueries };
  const openFds = native.openFdCount();
  const plan = planFlowLimits({
    softLimit: soft,
    openFds,
    queues,
    forwards: options.forwards?.length ?? 0,
    pcap: options.pcapPath !== undefined,
    asked,
  });
  for (const [key, field] of FLOW_LIMIT_FIELDS) config[field] = plan.limits[key];

  const raise =
    raised.limit.soft > raised.before.soft
      ? ` (soft limit raised from ${raised.before.soft})`
      : raised.error !== undefined
        ? ` (soft limit not raised to ${raised.before.hard}: ${raised.error})`
        : '';
  const list = (l: FlowLimits): string => FLOW_LIMIT_FIELDS.map(([key, , name]) => `${name} ${l[key]}`).join(', ');
  logger.info(
    `file descriptors: limit ${soft}${raise}, ${openFds} open, ${plan.reserve} reserved (vhost-user, DNS, forwards, pcap, Node); ` +
      `flow limits ${list(plan.limits)}${plan.lowered ? ` (lowered from ${list(asked)} to fit)` : ''}`,
  );
  for (const [key, field] of FLOW_LIMIT_FIELDS) {
    if (options.config?.[field] !== undefined && plan.limits[key] < asked[key]) {
      logger.warn(`${field} ${asked[key]} lowered to ${plan.limits[key]}: the file descriptor limit ${soft} has room for ${plan.available} flows in all`);
    }
  }
  return config;
}
