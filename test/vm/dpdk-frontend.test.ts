/**
 * DPDK's testpmd as the vhost-user frontend (test/harness/testpmd.ts): a
 * second frontend written independently of QEMU, against our real backend
 * process, in both socket roles:
 *   - listen: the backend listens (`--socket`), testpmd connects;
 *   - connect: testpmd listens (virtio-user `server=1`), the backend
 *     connects (`--connect`).
 * DPDK's memory is a memfd without seals (`--no-huge`), and the addresses
 * in its memory table and descriptors are its own virtual addresses: the
 * backend must serve that as it serves a VM.
 *
 * In each role, one backend process, two testpmd instances one after the
 * other:
 *   1. guest -> host: testpmd (txonly) sends 64-byte UDP frames from
 *      10.0.2.15 and the port's MAC to the gateway MAC and 10.0.2.2:SINK;
 *      a UDP sink on the host's 127.0.0.1:SINK counts them (22-byte payloads);
 *      the backend learns the "guest's" MAC from them;
 *   2. host -> guest: a host sender sends datagrams to a forwarded port
 *      (`--forward udp:PORT:5000`); testpmd (rxonly, verbose) sees each as a
 *      UDP frame from the gateway MAC to the port's MAC;
 *   3. testpmd quits: the session ends, the backend is back to the fds and
 *      memfd mappings it held before the first frontend (plus the one host
 *      socket of the guest's UDP flow, which outlives the session by design);
 *   4. a second testpmd attaches to the same backend and passes traffic.
 * Skipped, with the reason, where dpdk-testpmd is not installed.
 */
import { createSocket, type Socket as DgramSocket } from 'node:dgram';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { processResources, startBackendProcess, type BackendProcess } from '../harness/backend.js';
import { killAllAfterAll, pidAlive } from '../harness/processes.js';
import { launchTestpmd, testpmdUnavailable, type Testpmd } from '../harness/testpmd.js';
import { waitFor } from '../helpers/wait.js';

killAllAfterAll(afterAll);

const noTestpmd = testpmdUnavailable();

/** The testpmd port's MAC: the "guest's". */
const GUEST_MAC = '52:54:00:12:34:56';
/** The gateway's MAC in our stack (52:55 then the gateway address). */
const GATEWAY_MAC = '52:55:0a:00:02:02';
const GUEST_UDP_PORT = 5000;
/** testpmd's txonly frames: 64 bytes, so 22 bytes of UDP payload. */
const TX_FRAME_BYTES = 64;
/** Host -> guest datagrams: 100 bytes of payload, 142-byte frames. */
const INBOUND_PAYLOAD = 100;
const INBOUND_FRAME_BYTES = 14 + 20 + 8 + INBOUND_PAYLOAD;
const INBOUND_COUNT = 100;

const ENDED = /vhost-user: (?:frontend disconnected|session ended: [^\n]*)\n/g;

function countIn(text: string, re: RegExp): number {
  return text.match(new RegExp(re.source, 'g'))?.length ?? 0;
}

/** A UDP port on 127.0.0.1 that is free now (bound, then closed). */
async function freeUdpPort(): Promise<number> {
  const s = createSocket('udp4');
  await new Promise<void>((resolve) => s.bind(0, '127.0.0.1', resolve));
  const port = s.address().port;
  await new Promise<void>((r) => s.close(r));
  return port;
}

/** One line of testpmd's verbose rxonly output per frame: UDP from the gateway MAC to the guest's, `length` bytes. */
const inboundFrameLine = new RegExp(
  `src=${GATEWAY_MAC.toUpperCase()} - dst=${GUEST_MAC.toUpperCase()} - [^\\n]*type=0x0800 - length=${INBOUND_FRAME_BYTES} - [^\\n]*L2_ETHER L3_IPV4 L4_UDP`,
  'g',
);

for (const role of ['listen', 'connect'] as const) {
  const title =
    role === 'listen' ? 'DPDK testpmd as the frontend: backend listens (--socket), testpmd connects' : 'DPDK testpmd as the frontend: testpmd listens (server=1), backend connects (--connect)';
  describe.skipIf(noTestpmd !== undefined)(title, () => {
    let dir: string;
    let socket: string;
    let backend: BackendProcess;
    let testpmd: Testpmd | undefined;
    let baseline: { fds: number; memfdMappings: number };
    let sink: DgramSocket;
    let sinkPort = 0;
    let forwardPort = 0;
    const received: { length: number; from: string }[] = [];

    /** Starts a testpmd on the socket, as the role wants, and waits until it has attached. */
    async function attach(): Promise<Testpmd> {
      const t = launchTestpmd({
        socket,
        server: role === 'connect',
        mac: GUEST_MAC,
        txIp: { src: '10.0.2.15', dst: '10.0.2.2' },
        txUdp: { src: 40000, dst: sinkPort },
        ethPeer: GATEWAY_MAC,
        txFrameBytes: TX_FRAME_BYTES,
      });
      testpmd = t;
      // In server mode testpmd waits for the backend (retrying every second) before its prompt.
      await t.ready(60_000);
      expect(t.log()).toMatch(/Port 0: 52:54:00:12:34:56/i);
      return t;
    }

    /** txonly until the sink has `count` more datagrams; returns the counter deltas. */
    async function guestToHost(t: Testpmd, count: number): Promise<{ fromGuest: number; toHost: number }> {
      const before = await backend.counters();
      const first = received.length;
      await t.command('set fwd txonly');
      await t.command('start');
      await waitFor(() => received.length - first >= count, 30_000, `${count} datagrams at the sink`);
      await t.command('stop');
      const after = await backend.counters();
      const mine = received.slice(first);
      expect(mine.every((d) => d.length === TX_FRAME_BYTES - 42 && d.from === '127.0.0.1'), JSON.stringify(mine.slice(0, 3))).toBe(true);
      return {
        fromGuest: (after['udp.rx.datagrams'] ?? 0) - (before['udp.rx.datagrams'] ?? 0),
        toHost: (after['udp.tx.datagrams'] ?? 0) - (before['udp.tx.datagrams'] ?? 0),
      };
    }

    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), `vun-dpdk-${role}-`));
      socket = join(dir, 'vu.sock');
      sink = createSocket('udp4');
      sink.on('message', (msg, rinfo) => received.push({ length: msg.length, from: rinfo.address }));
      await new Promise<void>((resolve) => sink.bind(0, '127.0.0.1', resolve));
      sinkPort = sink.address().port;
      forwardPort = await freeUdpPort();
      backend = await startBackendProcess({ socket, connect: role === 'connect', args: ['--forward', `udp:${forwardPort}:${GUEST_UDP_PORT}`] });
      // Let the child finish its start-up (lazy module loads, timers) before the baseline.
      await new Promise((r) => setTimeout(r, 500));
      baseline = processResources(backend.pid);
    });

    afterAll(async () => {
      await testpmd?.quit().catch(() => undefined);
      await backend?.stop();
      sink?.close();
      if (dir) await rm(dir, { recursive: true, force: true });
    });

    beforeEach(({ onTestFailed }) => {
      onTestFailed(() => {
        console.log(`--- backend log (tail) ---\n${backend?.log().slice(-3000)}`);
        console.log(`--- testpmd log (tail) ---\n${testpmd?.log().slice(-3000)}`);
      });
    });

    it('attaches and passes UDP guest -> host into a sink and host -> guest from a forwarded port', async () => {
      const t = await attach();
      expect(backend.log()).toMatch(role === 'listen' ? /vhost-user: frontend connected\n/ : /vhost-user: connected to /);
      // DPDK's memory (one unsealed memfd) is mapped, with the warning for unsealed memory.
      expect(processResources(backend.pid).memfdMappings).toBeGreaterThan(baseline.memfdMappings);
      expect(backend.log()).toMatch(/not sealed against shrinking/);

      // Guest -> host: every datagram testpmd's frames carried left through a host socket.
      const up = await guestToHost(t, 2000);
      expect(up.fromGuest).toBeGreaterThanOrEqual(2000);
      expect(up.toHost).toBe(up.fromGuest);
      const c = await backend.counters();
      expect(c['eth.guest_mac_learned']).toBe(1);

      // Host -> guest through the forward, to the MAC learned above.
      await t.command('set fwd rxonly');
      await t.command('set verbose 1');
      const stats0 = await t.portStats();
      const logMark = t.log().length;
      await t.command('start');
      const sender = createSocket('udp4');
      try {
        for (let i = 0; i < INBOUND_COUNT; i++) {
          await new Promise<void>((resolve, reject) => sender.send(Buffer.alloc(INBOUND_PAYLOAD, i), forwardPort, '127.0.0.1', (err) => (err ? reject(err) : resolve())));
        }
      } finally {
        sender.close();
      }
      await waitFor(() => countIn(t.log().slice(logMark), inboundFrameLine) >= INBOUND_COUNT, 20_000, `${INBOUND_COUNT} frames at testpmd`);
      await t.command('stop');
      await t.command('set verbose 0');
      const stats1 = await t.portStats();
      expect(countIn(t.log().slice(logMark), inboundFrameLine)).toBe(INBOUND_COUNT);
      expect(stats1.rxPackets - stats0.rxPackets).toBeGreaterThanOrEqual(INBOUND_COUNT);
      expect(stats1.rxErrors).toBe(0);
      const c2 = await backend.counters();
      expect((c2['udp.inbound.rx'] ?? 0) - (c['udp.inbound.rx'] ?? 0)).toBe(INBOUND_COUNT);
    });

    it('quits cleanly: the session ends, the backend is back to its baseline and serves the next testpmd', async () => {
      const ended = countIn(backend.log(), ENDED);
      expect(await testpmd!.quit()).toBe(0);
      testpmd = undefined;
      await backend.waitForLog(ENDED, { count: ended + 1, timeoutMs: 10_000 });
      // The stack keeps its flows across sessions (src/runtime.ts): the
      // guest's UDP flow to the sink keeps its host socket until its timeout,
      // and the UDP flows' readiness set its epoll fd while any flow is open
      // (src/net/udp-raw.ts).
      const flows = (await backend.counters())['udp.flows.active'] ?? 0;
      expect(flows).toBe(1);
      const expected = { fds: baseline.fds + flows + 1, memfdMappings: baseline.memfdMappings };
      await waitFor(
        () => {
          const now = processResources(backend.pid);
          return now.fds === expected.fds && now.memfdMappings === expected.memfdMappings;
        },
        5000,
        `fds and memfd mappings back to ${JSON.stringify(expected)} (now ${JSON.stringify(processResources(backend.pid))})`,
      );
      expect(backend.log()).not.toMatch(/error:|exception/);

      // The next frontend on the same backend process.
      const t = await attach();
      expect(processResources(backend.pid).memfdMappings).toBeGreaterThan(baseline.memfdMappings);
      const up = await guestToHost(t, 500);
      expect(up.toHost).toBeGreaterThanOrEqual(500);
      expect(await t.quit()).toBe(0);
      testpmd = undefined;
      await backend.waitForLog(ENDED, { count: ended + 2, timeoutMs: 10_000 });
      await waitFor(() => processResources(backend.pid).memfdMappings === baseline.memfdMappings, 5000, 'memfd mappings released');
      expect(pidAlive(backend.pid)).toBe(true);
    });
  });
}

if (noTestpmd !== undefined) {
  it.skip(`DPDK testpmd frontend tests: ${noTestpmd}`, () => undefined);
}
