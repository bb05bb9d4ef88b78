/**
 * Named counters (gVisor style): every drop has a reason, every protocol
 * event a name 'proto.metric[.reason]' (e.g. 'ipv4.drop.bad_checksum',
 * 'dhcp.ack', 'udp.flows.active'). Gauges are counters moved up and down.
 */
import type { Counters } from './context.js';

export class CounterSet implements Counters {
  private readonly values = new Map<string, number>();

  count(name: string, n = 1): void {
    this.values.set(name, (this.values.get(name) ?? 0) + n);
  }

  get(name: string): number {
    return this.values.get(name) ?? 0;
  }

  /** Sum of every counter whose name starts with `prefix`. */
  sum(prefix: string): number {
    let s = 0;
    for (const [k, v] of this.values) if (k.startsWith(prefix)) s += v;
    return s;
  }

  snapshot(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const k of [...this.values.keys()].sort()) out[k] = this.values.get(k)!;
    return out;
  }

  /** Aligned text, grouped by protocol, zero counters left out. */
  format(): string {
    const entries = Object.entries(this.snapshot()).filter(([, v]) => v !== 0);
    if (entries.length === 0) return '(no counters)';
    const width = Math.max(...entries.map(([k]) => k.length));
    const lines: string[] = [];
    let group = '';
    for (const [k, v] of entries) {
      const g = k.split('.')[0]!;
      if (g !== group) {
        if (group) lines.push('');
        group = g;
      }
      lines.push(`${k.padEnd(width)}  ${v.toLocaleString('en-US')}`);
    }
    return lines.join('\n');
  }
}
