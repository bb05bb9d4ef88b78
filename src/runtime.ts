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
 *
 * Control. With `control` set, a ControlServer (src/control/server.ts)
 * listens there once the stack and the vhost-user server run; the forwards
 * given at start are the first entries of its ForwardTable, and up to
 * FD_RESERVE.runtimeForwards more may be added at run time (their fds are
 * in the reserve). It closes with the backend.
 *
 * Logs. `consoleLogger` writes one line per message: an ISO 8601 timestamp,
 * the level, the message. One summary line says what started (socket,
 * guest addresses, forwards, control path); the device logs what each
 * frontend negotiated.
 */
import { VhostUserServer } from './vhost-user/server.js';
import type { Logger } from './vhost-user/session.js';
import { VirtioNetDevice } from './virtio/net-device.js';
import { Stack } from './net/stack.js';
import { CounterSet } from './net/counters.js';
import { PcapWriter } from './net/pcap.js';
import type { StackConfig } from './net/context.js';
import { type ForwardSpec, forwardPortCount } from './net/forward.js';
import { resolveStackConfig } from './net/config.js';
import { native } from './native/index.js';
import { FD_RESERVE, planFlowLimits, raiseFdLimit, type FlowLimits } from './fd-budget.js';
import { ControlServer, type ControlLimits } from './control/server.js';
import { ForwardTable } from './control/forwards.js';
import { ipv4ToString } from './net/ip-address.js';

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
  /** Serve the control endpoint (HTTP/1.1 + JSON) on this Unix socket path. */
  control?: string;
  /** The control endpoint's bounds (tests shorten the timeout). */
  controlLimits?: Partial<ControlLimits>;
}

export interface Backend {
  readonly server: VhostUserServer;
  readonly device: VirtioNetDevice;
  readonly stack: Stack;
  readonly counters: CounterSet;
  /** The forwarded ports by id (those of the options, then those added through the control endpoint). */
  readonly forwards: ForwardTable;
  /** The control endpoint, when `control` was given. */
  readonly control: ControlServer | null;
  /** Counters of every layer, formatted for people. */
  formatCounters(): string;
  /** Resolves when the server closes (one-off session over, or close()). */
  readonly closed: Promise<void>;
  close(): Promise<void>;
}

/** QEMU's default NIC MAC; the guest's own MAC as seen in config space. */
export const DEFAULT_GUEST_MAC = Uint8Array.from([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);

/** Log lines on stderr: `2025-01-31T12:00:00.000Z info: message` (levels debug, info, warning, error). */
export const consoleLogger = (level: 'quiet' | 'normal' | 'verbose'): Logger => {
  const line = (tag: string, m: string): void => console.error(`${new Date().toISOString()} ${tag}: ${m}`);
  return {
    debug: (m) => {
      if (level === 'verbose') line('debug', m);
    },
    info: (m) => {
      if (level !== 'quiet') line('info', m);
    },
    warn: (m) => {
      if (level !== 'quiet') line('warning', m);
    },
    error: (m) => line('error', m),
  };
};

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
  try {
    await stack.start();
  } catch (err) {
    // Whatever was bound before the failure is let go again.
    stack.close();
    pcap?.close();
    throw err;
  }

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

  const forwards = new ForwardTable(stack, options.forwards ?? [], options.control !== undefined ? FD_RESERVE.runtimeForwards : 0);
  let control: ControlServer | null = null;
  if (options.control !== undefined) {
    control = new ControlServer({
      path: options.control,
      stack,
      counters,
      forwards,
      ...(options.controlLimits ? { limits: options.controlLimits } : {}),
    });
    try {
      await control.start();
    } catch (err) {
      server.close();
      finish();
      throw err;
    }
    const started = control;
    void closed.then(() => started.close());
  }

  const cfg = stack.config;
  const forwardList = forwards.list().map((f) => f.spec).join(' ') || 'none';
  logger.info(
    `started: vhost-user ${options.mode ?? 'listen'} ${options.socket}; guest ${ipv4ToString(cfg.guestIp)}/${cfg.prefixLength} gateway ${ipv4ToString(cfg.gateway)} ` +
      `dns ${ipv4ToString(cfg.dns)}; forwards ${forwardList}; control ${options.control ?? 'off'}`,
  );

  return {
    server,
    device,
    stack,
    counters,
    forwards,
    control,
    formatCounters: () => counters.format(),
    closed,
    async close() {
      server.close();
      finish();
      await closed;
      await control?.close();
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
    forwards: (options.forwards ?? []).reduce((ports, f) => ports + forwardPortCount(f), 0),
    pcap: options.pcapPath !== undefined,
    control: options.control !== undefined,
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
    `file descriptors: limit ${soft}${raise}, ${openFds} open, ${plan.reserve} reserved (vhost-user, DNS, forwards, pcap, control, Node); ` +
      `flow limits ${list(plan.limits)}${plan.lowered ? ` (lowered from ${list(asked)} to fit)` : ''}`,
  );
  for (const [key, field] of FLOW_LIMIT_FIELDS) {
    if (options.config?.[field] !== undefined && plan.limits[key] < asked[key]) {
      logger.warn(`${field} ${asked[key]} lowered to ${plan.limits[key]}: the file descriptor limit ${soft} has room for ${plan.available} flows in all`);
    }
  }
  return config;
}
