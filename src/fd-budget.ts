/**
 * File descriptors: the process's limit, and how many guest flows fit in it.
 *
 * Theory of operation. Every guest flow holds one host fd (a TCP flow its
 * socket, a UDP flow its socket, a ping flow its ICMP socket), and the flow
 * tables' default bounds (4096 TCP + 4096 UDP + 256 ping) are far above an
 * RLIMIT_NOFILE of 1024, a limit still met (`ulimit -n 1024`,
 * LimitNOFILE=1024 in a service unit, `prlimit --nofile=1024`). Unchecked,
 * a guest opening a thousand UDP flows would take every fd: new TCP flows
 * would get RST, the DNS forwarder would fail with EMFILE and a VM
 * reconnecting would be refused. So, once, when the backend starts
 * (startBackend, before the stack exists):
 *
 *  1. `raiseFdLimit` raises the soft limit to the hard one (to
 *     /proc/sys/fs/nr_open when the hard limit is unlimited): the hard limit
 *     is what the administrator allows; Node polls with epoll, never
 *     select(), so fds above 1024 are fine. The `node` binary already does
 *     this at start-up (PlatformInit in node.cc), so for the CLI it usually
 *     finds nothing to do; it matters for a program that embeds the backend
 *     with a lower soft limit (an embedder that kept Node from adjusting
 *     limits, or code that lowered it). A low hard limit stays low: then
 *     step 2 does the work.
 *  2. `planFlowLimits` takes from that limit the fds open at that moment
 *     (stdio, Node's and libuv's own, whatever an embedding program holds)
 *     and a reserve for everything that is not a flow (FD_RESERVE, below).
 *     What is left is the flows' budget. If the flow limits asked for (the
 *     defaults, or the caller's config) add up to more, all four are
 *     scaled down in proportion, each to at least 1; fewer than 4 fds left
 *     is an error (the backend could not carry a single flow of each kind).
 *  3. The runtime logs the limit, the reserve and the resulting flow limits,
 *     and warns when a limit the caller gave explicitly was lowered.
 *
 * At run time the flow tables never pass their limits (UDP and ping flows
 * evict the least recently used, TCP refuses a SYN with RST), so a guest
 * can never spend the reserve: DNS and a reconnecting VM keep their fds.
 * The DNS forwarder's bound on queries in flight (maxDnsQueries) is
 * sized with the flows: each query waits for its answer on a socket of its
 * own (a fresh source port, see src/net/dns.ts); TCP DNS is an ordinary TCP
 * flow.
 *
 * The reserve, per item (fds):
 *  - vhost-user: the listening (or connecting) socket 1, the session's
 *    connection 1, a second frontend accepted only to be refused 1; the fds
 *    one control message may carry, held until it is handled
 *    (MAX_FDS_PER_MESSAGE = 32: a memory table's region fds, closed once
 *    mapped); kick, call and err eventfds per virtqueue (3 x the device's
 *    queues: 6 for virtio-net); the backend channel 1.
 * *  - transient: 4 (a /proc read while checking a frontend's fd, an fs read,
 *    the new socket of a flow made just before the least recent one is
 *    evicted).
 *  - Node's own, opened after start: 16 (the signal pipe for SIGUSR1/
 *    SIGTERM handlers, libuv's io_uring and thread pool, a tsx/esbuild
 *    service when run from source).
 *  - one per forwarded port (its listening TCP or bound UDP socket), one
 *    for the pcap file.
 *  - with a control endpoint (--control): its listening socket and its
 *    connections (1 + CONTROL_LIMITS.maxConnections = 17), and 16 ports
 *    of forwards added at run time (`runtimeForwards`; a range counts each
 *    of its ports): the control endpoint refuses a forward that would
 *    pass 16 live ports (409) rather than take fds from the flows.
 * With virtio-net's two queues that is 62 fds, plus forwards, pcap and
 * control.
 *
 * What this cannot see: fds an embedding program opens after start. A TCP
 * flow closed cleanly by both sides while Node still holds bytes for a slow
 * host reader keeps its socket (not its flow slot) until they drain or
 * TCP_TIMING.finTimeout passes.
 */
import { readFileSync } from 'node:fs';
import { errnoCode, type FdLimit } from './native/index.js';
import { MAX_FDS_PER_MESSAGE } from './vhost-user/messages.js';

/** The fds kept for everything but flows (see the theory of operation). */
export const FD_RESERVE = {
  vhostUserSockets: 3,
  messageFds: MAX_FDS_PER_MESSAGE,
  perQueue: 3,
  backendChannel: 1,
  transient: 4,
  node: 16,
  perForward: 1,
  pcap: 1,
  /** The control endpoint's listener and its connections (CONTROL_LIMITS.maxConnections). */
  control: 17,
  /** Ports of the forwards the control endpoint may add at run time (one fd each). */
  runtimeForwards: 16,
} as const;

/** The limits of everything a guest can make hold a host fd, as in StackConfig (maxTcpFlows, maxUdpFlows, maxPingFlows, maxDnsQueries). */
export interface FlowLimits {
  tcp: number;
  udp: number;
  ping: number;
  /** DNS queries relayed over UDP and not yet answered: one socket each. */
  dns: number;
}

export interface FdPlanInput {
  /** The soft RLIMIT_NOFILE in force (after raiseFdLimit); Infinity when unlimited. */
  softLimit: number;
  /** fds open now. */
  openFds: number;
  /** The device's virtqueues. */
  queues: number;
  /** Forwarded ports (TCP and UDP; every port of a range). */
  forwards: number;
  pcap: boolean;
  /** A control endpoint (its sockets and the runtime forwards' reserve). */
  control?: boolean;
  /** The limits asked for (config or defaults). */
  asked: FlowLimits;
}

export interface FdPlan {
  /** fds kept for everything but flows. */
  reserve: number;
  /** fds left for flows: softLimit - openFds - reserve. */
  available: number;
  /** The limits to use: `asked`, or scaled down to fit `available`. */
  limits: FlowLimits;
  /** True when `limits` differ from `asked`. */
  lowered: boolean;
}

/** fds kept for everything but flows. */
export function reservedFds(queues: number, forwards: number, pcap: boolean, control = false): number {
  const r = FD_RESERVE;
  return r.vhostUserSockets + r.messageFds + r.perQueue * queues + r.backendChannel + r.transient + r.node +
    r.perForward * forwards + (pcap ? r.pcap : 0) + (control ? r.control + r.perForward * r.runtimeForwards : 0);
}

/** The flow limits that fit the fd limit. Throws when fewer than 4 fds are left for flows. */
export function planFlowLimits(input: FdPlanInput): FdPlan {
  const reserve = reservedFds(input.queues, input.forwards, input.pcap, input.control ?? false);
  const available = input.softLimit - input.openFds - reserve;
  const { asked } = input;
  const total = asked.tcp + asked.udp + asked.ping + asked.dns;
  if (total <= available) return { reserve, available, limits: { ...asked }, lowered: false };
  if (available < 4) {
    throw new Error(
      `file descriptor limit ${input.softLimit} too low: ${input.openFds} open and ${reserve} reserved leave ${available} for guest flows (at least 4 needed)`,
    );
  }
  // One of each first, the rest in proportion to what was asked (the sum stays within `available`).
  const share = (n: number): number => Math.min(n, 1 + Math.floor(((available - 4) * n) / total));
  const limits = { tcp: share(asked.tcp), udp: share(asked.udp), ping: share(asked.ping), dns: share(asked.dns) };
  return { reserve, available, limits, lowered: true };
}

/** Linux's ceiling for any RLIMIT_NOFILE (/proc/sys/fs/nr_open; 1048576 if unreadable). */
export function systemFdCeiling(): number {
  try {
    const n = Number(readFileSync('/proc/sys/fs/nr_open', 'latin1').trim());
    return Number.isInteger(n) && n > 0 ? n : 1048576;
  } catch {
    return 1048576;
  }
}

export interface FdLimitIO {
  getFdLimit(): FdLimit;
  setFdLimit(soft: number, hard: number): void;
}

export interface RaisedFdLimit {
  /** The limit before. */
  before: FdLimit;
  /** The limit in force now. */
  limit: FdLimit;
  /** Why the soft limit could not be raised (the errno code), if it could not. */
  error?: string;
}

/** Raise the soft RLIMIT_NOFILE to the hard one (or to `ceiling` when the hard one is unlimited). Never throws for a refusal. */
export function raiseFdLimit(io: FdLimitIO, ceiling: () => number = systemFdCeiling): RaisedFdLimit {
  const before = io.getFdLimit();
  const target = before.hard === Infinity ? ceiling() : before.hard;
  if (before.soft >= target) return { before, limit: before };
  try {
    io.setFdLimit(target, before.hard);
  } catch (err) {
    return { before, limit: before, error: errnoCode(err) ?? String(err) };
  }
  return { before, limit: io.getFdLimit() };
}
