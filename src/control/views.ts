/**
 * What the control endpoint shows, as plain data: counters (JSON and the
 * Prometheus text exposition format), the live flows, the DHCP lease.
 *
 * Theory of operation. One source for every view of the counters: the
 * backend's CounterSet. `counters.format()` is the text SIGUSR1 prints,
 * `counters.snapshot()` the JSON of /stats, and `prometheusText` is built
 * from that same snapshot, so the three agree by construction. A counter
 * whose name ends in `.active` is moved up and down (a gauge); every other
 * one only grows (a counter). Prometheus names (text format 0.0.4):
 * `vhost_user_net_` + the counter name with every character outside
 * [a-zA-Z0-9_] turned into `_`, counters with the suffix `_total`; the
 * `# HELP` line carries the original dotted name. Two names that sanitise
 * to the same metric are summed (none do today).
 *
 * Flows come from the stack's one flow table (FlowTable.entries()): both
 * sides, the protocol's state where it has one (TCP), bytes and frames each
 * way, age and idle time. Times in the table are the stack's clock (ms);
 * they are turned into seconds here, and the lease's expiry into wall time.
 */
import type { CounterSet } from '../net/counters.js';
import type { Stack } from '../net/stack.js';
import { inanyToString } from '../net/inany.js';
import { ipv4ToString } from '../net/ip-address.js';
import { macToString } from '../net/wire/ethernet.js';

export const METRIC_PREFIX = 'vhost_user_net_';

/** Whether a counter goes up and down (a gauge) rather than only up. */
export function isGauge(name: string): boolean {
  return name.endsWith('.active');
}

/** The Prometheus metric name of a counter. */
export function metricName(counter: string): string {
  const base = METRIC_PREFIX + counter.replace(/[^a-zA-Z0-9_]/g, '_');
  return isGauge(counter) ? base : `${base}_total`;
}

/** Every counter in the Prometheus text exposition format 0.0.4 (one sample per metric, no timestamps). */
export function prometheusText(counters: CounterSet): string {
  const metrics = new Map<string, { counter: string; value: number; gauge: boolean }>();
  for (const [counter, value] of Object.entries(counters.snapshot())) {
    const name = metricName(counter);
    const seen = metrics.get(name);
    if (seen) seen.value += value;
    else metrics.set(name, { counter, value, gauge: isGauge(counter) });
  }
  const lines: string[] = [];
  for (const [name, m] of metrics) {
    lines.push(`# HELP ${name} ${m.gauge ? 'gauge' : 'counter'} ${m.counter}`);
    lines.push(`# TYPE ${name} ${m.gauge ? 'gauge' : 'counter'}`);
    lines.push(`${name} ${m.value}`);
  }
  return lines.join('\n') + '\n';
}

const PROTOCOL_NAMES: Record<number, string> = { 1: 'icmp', 6: 'tcp', 17: 'udp', 58: 'icmpv6' };

export interface FlowView {
  protocol: string;
  /** The flow table class: tcp, udp, udp_inbound, ping. */
  kind: string;
  state: string;
  guest: { address: string; port: number };
  /** What the guest's packets name as the other end (the gateway for a forwarded connection). */
  remote: { address: string; port: number };
  /** The host socket's peer ('' when endpoint-independent) and our local port. */
  host: { address: string; port: number; localPort: number };
  bytesFromGuest: number;
  bytesToGuest: number;
  framesFromGuest: number;
  framesToGuest: number;
  ageSeconds: number;
  idleSeconds: number;
}

/** The live flows of the stack's flow table. */
export function flowViews(stack: Stack): FlowView[] {
  const now = stack.clock.now();
  const seconds = (ms: number): number => Math.max(0, Math.round(ms) / 1000);
  const out: FlowView[] = [];
  for (const e of stack.flows.entries()) {
    const value = e.value as { state?: unknown } | undefined;
    out.push({
      protocol: PROTOCOL_NAMES[e.protocol] ?? String(e.protocol),
      kind: e.klass?.options.name ?? '',
      state: typeof value?.state === 'string' ? value.state : 'active',
      guest: { address: inanyToString(e.guestAddr), port: e.guestPort },
      remote: { address: inanyToString(e.remoteAddr), port: e.remotePort },
      host: { address: e.hostAddr, port: e.hostPort, localPort: e.localPort },
      bytesFromGuest: e.bytesFromGuest,
      bytesToGuest: e.bytesToGuest,
      framesFromGuest: e.framesFromGuest,
      framesToGuest: e.framesToGuest,
      ageSeconds: seconds(now - e.created),
      idleSeconds: seconds(now - e.lastUsed),
    });
  }
  return out;
}

export interface LeasesView {
  /** What DHCP gave, while a lease is held. */
  dhcp: { address: string; mac: string; hostname: string | null; expires: string; expiresInSeconds: number } | null;
  /** The guest as the stack knows it: the address it is given, the MAC learned from its frames. */
  guest: { ipv4: string; mac: string | null };
}

export function leasesView(stack: Stack, wallNow: number = Date.now()): LeasesView {
  const lease = stack.dhcp.lease;
  const guestIp = ipv4ToString(stack.config.guestIp);
  const mac = stack.guestMac;
  let dhcp: LeasesView['dhcp'] = null;
  if (lease) {
    const remainingMs = Math.max(0, lease.expires - stack.clock.now());
    dhcp = {
      address: guestIp,
      mac: lease.mac,
      hostname: lease.hostname ?? null,
      expires: new Date(wallNow + remainingMs).toISOString(),
      expiresInSeconds: Math.round(remainingMs / 1000),
    };
  }
  return { dhcp, guest: { ipv4: guestIp, mac: mac ? macToString(mac) : null } };
}
