/**
 * The fd budget (src/fd-budget.ts) as pure arithmetic: what is reserved,
 * how flow limits are scaled to fit, how the soft limit is raised.
 */
import { describe, expect, it } from 'vitest';
import { FD_RESERVE, planFlowLimits, raiseFdLimit, reservedFds } from '../src/fd-budget.js';
import { CONTROL_LIMITS } from '../src/control/server.js';

describe('the fd budget', () => {
  it('keeps the asked limits when they fit, else scales them down in proportion, one of each at least', () => {
    const asked = { tcp: 4096, udp: 4096, ping: 256, dns: 512 };
    const reserve = reservedFds(2, 0, false);
    expect(reserve).toBe(62);
    expect(reservedFds(2, 3, true)).toBe(62 + 3 * FD_RESERVE.perForward + FD_RESERVE.pcap);
    // A control endpoint: its sockets and the forwards it may add at run time.
    expect(reservedFds(2, 0, false, true)).toBe(62 + 1 + CONTROL_LIMITS.maxConnections + FD_RESERVE.runtimeForwards);
    const roomy = planFlowLimits({ softLimit: 1 << 20, openFds: 30, queues: 2, forwards: 0, pcap: false, asked });
    expect(roomy).toEqual({ reserve, available: (1 << 20) - 30 - reserve, limits: asked, lowered: false });
    const tight = planFlowLimits({ softLimit: 1024, openFds: 30, queues: 2, forwards: 0, pcap: false, asked });
    expect(tight.available).toBe(1024 - 30 - reserve);
    expect(tight.lowered).toBe(true);
    expect(tight.limits.tcp + tight.limits.udp + tight.limits.ping + tight.limits.dns).toBeLessThanOrEqual(tight.available);
    expect(tight.limits.dns).toBeGreaterThanOrEqual(1);
    expect(tight.limits.tcp).toBe(tight.limits.udp);
    expect(tight.limits.ping).toBeGreaterThanOrEqual(1);
    expect(tight.limits.ping).toBeLessThan(tight.limits.tcp / 8);
    const tiny = planFlowLimits({ softLimit: 30 + reserve + 4, openFds: 30, queues: 2, forwards: 0, pcap: false, asked });
    expect(tiny.limits).toEqual({ tcp: 1, udp: 1, ping: 1, dns: 1 });
    expect(() => planFlowLimits({ softLimit: 30 + reserve + 3, openFds: 30, queues: 2, forwards: 0, pcap: false, asked })).toThrow(/too low/);
    const unlimited = planFlowLimits({ softLimit: Infinity, openFds: 30, queues: 2, forwards: 0, pcap: false, asked });
    expect(unlimited.limits).toEqual(asked);
  });

  it('raises the soft limit to the hard one (to the system ceiling when unlimited), and keeps it when refused', () => {
    let limit = { soft: 256, hard: 1024 };
    const io = { getFdLimit: () => ({ ...limit }), setFdLimit: (soft: number, hard: number) => void (limit = { soft, hard }) };
    expect(raiseFdLimit(io)).toEqual({ before: { soft: 256, hard: 1024 }, limit: { soft: 1024, hard: 1024 } });
    expect(raiseFdLimit(io)).toEqual({ before: { soft: 1024, hard: 1024 }, limit: { soft: 1024, hard: 1024 } });
    limit = { soft: 1024, hard: Infinity };
    expect(raiseFdLimit(io, () => 524288).limit).toEqual({ soft: 524288, hard: Infinity });
    const refusing = {
      getFdLimit: () => ({ soft: 256, hard: 1024 }),
      setFdLimit: () => {
        throw Object.assign(new Error('setrlimit EPERM'), { code: 'EPERM' });
      },
    };
    expect(raiseFdLimit(refusing)).toEqual({ before: { soft: 256, hard: 1024 }, limit: { soft: 256, hard: 1024 }, error: 'EPERM' });
  });
});
