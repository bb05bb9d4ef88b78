/**
 * Every fuzz target, with the number of inputs it gets in the bounded run
 * (`npm run fuzz`, part of `npm test`). The counts add up to 8.3 million
 * and are sized so the whole bounded run takes about two minutes on two
 * cores: the parsers take 10^5-10^6 inputs a second, the stack, the split
 * ring and the vhost-user session a few thousand, so those get fewer.
 */
import type { FuzzTarget } from '../engine/input.js';

export interface TargetEntry {
  name: string;
  /** Inputs in the bounded run. */
  ciRuns: number;
  load(): Promise<FuzzTarget>;
}

export const TARGETS: readonly TargetEntry[] = [
  { name: 'ethernet', ciRuns: 500_000, load: async () => (await import('./ethernet.js')).target },
  { name: 'arp', ciRuns: 500_000, load: async () => (await import('./arp.js')).target },
  { name: 'ipv4', ciRuns: 1_000_000, load: async () => (await import('./ipv4.js')).target },
  { name: 'icmp', ciRuns: 1_000_000, load: async () => (await import('./icmp.js')).target },
  { name: 'udp', ciRuns: 1_000_000, load: async () => (await import('./udp.js')).target },
  { name: 'tcp', ciRuns: 1_000_000, load: async () => (await import('./tcp.js')).target },
  { name: 'dhcp', ciRuns: 1_000_000, load: async () => (await import('./dhcp.js')).target },
  { name: 'dns', ciRuns: 1_000_000, load: async () => (await import('./dns.js')).target },
  { name: 'stack', ciRuns: 150_000, load: async () => (await import('./stack.js')).target },
  { name: 'vhost-user-messages', ciRuns: 1_000_000, load: async () => (await import('./vhost-user-messages.js')).target },
  { name: 'split-queue', ciRuns: 150_000, load: async () => (await import('./split-queue.js')).target },
  { name: 'vhost-user-session', ciRuns: 40_000, load: async () => (await import('./vhost-user-session.js')).target },
];

export function findTarget(name: string): TargetEntry | undefined {
  return TARGETS.find((t) => t.name === name);
}
