/**
 * Soak: the backend process holding 10,000 concurrent flows (TCP and UDP)
 * for a minute, driven by our own frontend as the guest (no QEMU: the guest
 * is test/helpers/frame-guest.ts), with the backend's RSS and open
 * descriptors sampled throughout and an ordinary bulk download running
 * beside the held flows.
 *
 * What it shows: every flow opened is still alive after the minute (each
 * echoes one more message), nothing was evicted or reset, descriptors stay
 * at one per flow over the baseline, memory does not creep while the flows
 * are merely held, the download beside them arrives whole, and closing the
 * TCP flows gives their descriptors back. The download's speed beside the
 * flows, against the same download before them, is printed (speed is the
 * benchmark's business, not an assertion here).
 */
import { createHash } from 'node:crypto';
import * as dgram from 'node:dgram';
import * as net from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { NetDriver, VhostUserFrontend } from '../../src/index.js';
import { processResources, processRss, startBackendProcess } from '../harness/backend.js';
import { killAllAfterAll } from '../harness/processes.js';
import { FrameGuest, gatewayArpRequest, type GuestTcp } from '../helpers/frame-guest.js';
import { waitFor } from '../helpers/wait.js';

killAllAfterAll(afterAll);
const dir = mkdtempSync(join(tmpdir(), 'vun-soak-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const TCP_FLOWS = Number(process.env.SOAK_TCP ?? 5000);
const UDP_FLOWS = Number(process.env.SOAK_UDP ?? 5000);
const HOLD_MS = Number(process.env.SOAK_HOLD_MS ?? 60_000);
const SAMPLE_MS = 5_000;
const DOWNLOAD_BYTES = 32 << 20;
const TCP_PORT_BASE = 20000;
const UDP_PORT_BASE = 40000;
/** Flows opened per wave, each wave waited for (the host's accept backlog and the guest's receive ring are finite). */
const WAVE = 200;

/** A loopback TCP echo server keeping every accepted socket. */
async function tcpEcho(backlog: number): Promise<{ server: net.Server; port: number; sockets: Set<net.Socket> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('data', (d) => s.write(d));
    s.on('error', () => {});
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen({ host: '127.0.0.1', port: 0, backlog }, r));
  return { server, port: (server.address() as net.AddressInfo).port, sockets };
}

/** A loopback server that sends `payload` to every client, then closes. */
async function bulkServer(payload: Uint8Array): Promise<{ server: net.Server; port: number }> {
  const server = net.createServer((s) => {
    s.on('error', () => {});
    s.end(payload);
  });
  await new Promise<void>((r) => server.listen({ host: '127.0.0.1', port: 0 }, r));
  return { server, port: (server.address() as net.AddressInfo).port };
}

describe('soak', () => {
  it(`holds ${TCP_FLOWS} TCP and ${UDP_FLOWS} UDP flows for a minute, bounded, with a download beside them`, async () => {
    const socket = join(dir, 'vm.sock');
    // Its own fd limit, so the run does not depend on the machine's: room for every flow.
    const backend = await startBackendProcess({ socket, nofile: { soft: 20000, hard: 20000 } });
    const tcpServer = await tcpEcho(8192);
    const udpServer = dgram.createSocket('udp4');
    udpServer.on('message', (m, r) => udpServer.send(m, r.port, r.address));
    await new Promise<void>((r) => udpServer.bind(0, '127.0.0.1', r));
    const udpPort = udpServer.address().port;
    const payload = new Uint8Array(DOWNLOAD_BYTES);
    for (let i = 0; i < payload.length; i++) payload[i] = (i * 2654435761) >>> 24;
    const expectedDigest = createHash('sha256').update(payload).digest('hex');
    const bulk = await bulkServer(payload);

    const fe = VhostUserFrontend.connect(socket, { style: 'qemu', memorySize: 64 << 20 });
    try {
      await fe.connectAndStart();
      await fe.sync();
      const driver = new NetDriver(fe);
      driver.start();
      const guest = new FrameGuest(driver);
      driver.send([gatewayArpRequest()]);

      let nextDownloadPort = 60000;
      const download = async (): Promise<number> => {
        const started = performance.now();
        const c = guest.connectTcp(nextDownloadPort++, bulk.port);
        await c.until(() => c.gotFin || c.state === 'reset');
        expect(c.state).toBe('established');
        expect(c.receivedBytes).toBe(DOWNLOAD_BYTES);
        expect(c.digest()).toBe(expectedDigest);
        c.reset();
        return (DOWNLOAD_BYTES * 8) / ((performance.now() - started) / 1000) / 1e6;
      };
      const baselineMbps = await download();
      const base = { ...processResources(backend.pid), rssBytes: processRss(backend.pid) };

      // Open the TCP flows in waves, then the UDP flows (each answered once).
      const conns: GuestTcp[] = [];
      for (let w = 0; w < TCP_FLOWS; w += WAVE) {
        const wave: GuestTcp[] = [];
        for (let i = w; i < Math.min(TCP_FLOWS, w + WAVE); i++) wave.push(guest.connectTcp(TCP_PORT_BASE + i, tcpServer.port));
        await Promise.all(wave.map((c) => c.established()));
        conns.push(...wave);
      }
      expect(conns.filter((c) => c.state !== 'established')).toEqual([]);
      const udpAnswers = new Array<number>(UDP_FLOWS).fill(0);
      const udpRound = async (round: number): Promise<void> => {
        // In waves, and asked again where no answer came: a burst of answers
        // larger than the guest's free receive buffers is dropped (counted,
        // udp.drop.to_guest), as a real guest's would be.
        for (let w = 0; w < UDP_FLOWS; w += WAVE) {
          const end = Math.min(UDP_FLOWS, w + WAVE);
          const unanswered = (): number[] => [...Array(end - w).keys()].map((k) => w + k).filter((i) => udpAnswers[i]! < round);
          for (let attempt = 0; ; attempt++) {
            const ask = unanswered();
            if (ask.length === 0) break;
            if (attempt === 20) {
              const c = await backend.counters();
              throw new Error(`UDP flows ${ask.join(',')} unanswered (round ${round}); backend counters: ${JSON.stringify(Object.fromEntries(Object.entries(c).filter(([k]) => k.startsWith('udp'))))}`);
            }
            for (const i of ask) guest.sendUdp(UDP_PORT_BASE + i, udpPort, Buffer.from(`flow ${i} round ${round}`));
            await waitFor(() => unanswered().length === 0, 500, 'answers').catch(() => {});
          }
        }
      };
      // The echo names its flow and round: a late answer to an earlier round does not count for a later one.
      for (let i = 0; i < UDP_FLOWS; i++) {
        guest.bindUdp(UDP_PORT_BASE + i, (payload) => {
          const m = /^flow (\d+) round (\d+)$/.exec(Buffer.from(payload).toString());
          if (m && Number(m[1]) === i) udpAnswers[i] = Math.max(udpAnswers[i]!, Number(m[2]));
        });
      }
      await udpRound(1);
      await waitFor(() => tcpServer.sockets.size === TCP_FLOWS, 10_000, 'every TCP flow accepted on the host');

      // Hold: sample the backend while a download runs beside the flows.
      const samples: { rss: number; fds: number }[] = [];
      const sample = (): void => {
        samples.push({ rss: processRss(backend.pid), fds: processResources(backend.pid).fds });
      };
      sample();
      const holdEnd = Date.now() + HOLD_MS;
      const loadedMbpsPromise = download();
      while (Date.now() < holdEnd) {
        await new Promise((r) => setTimeout(r, Math.min(SAMPLE_MS, holdEnd - Date.now())));
        sample();
      }
      const loadedMbps = await loadedMbpsPromise;

      // Every flow is still alive: one more echo each way.
      for (const c of conns) c.write(Buffer.from('x'));
      await waitFor(() => conns.every((c) => c.receivedBytes === 1), 30_000, 'every TCP flow echoed');
      await udpRound(2);

      const counters = await backend.counters();
      const peakRss = Math.max(...samples.map((s) => s.rss));
      const fdsHeld = samples[0]!.fds - base.fds;
      // One host socket per flow, nothing else growing with them.
      expect(fdsHeld).toBeGreaterThanOrEqual(TCP_FLOWS + UDP_FLOWS - 4); // less a socket or two of the baseline download still closing
      expect(fdsHeld).toBeLessThanOrEqual(TCP_FLOWS + UDP_FLOWS + 16);
      for (const s of samples) expect(s.fds - samples[0]!.fds).toBeLessThanOrEqual(8); // the download's socket, little else
      // Held flows cost memory once, not over time.
      expect(samples.at(-1)!.rss - samples[0]!.rss).toBeLessThan(64 << 20);
      expect(peakRss).toBeLessThan(768 << 20);
      // Nothing evicted, expired or reset by the backend (the guest's own RSTs of the downloads are tcp.rst.received).
      expect(Object.entries(counters).filter(([k, v]) => /^(udp\.flows\.(evicted|expired)|tcp\.rst\.sent|tcp\.drop\.host_overflow|tcp\.timeout\.)/.test(k) && v > 0)).toEqual([]);

      // Closing the TCP flows gives their descriptors back.
      for (const c of conns) c.reset();
      await waitFor(() => processResources(backend.pid).fds <= base.fds + UDP_FLOWS + 16, 30_000, 'TCP descriptors released');

      console.log(
        `soak: ${TCP_FLOWS} TCP + ${UDP_FLOWS} UDP flows held ${HOLD_MS / 1000} s; backend RSS ${(base.rssBytes / 2 ** 20).toFixed(0)} MiB before, ` +
          `${(samples[0]!.rss / 2 ** 20).toFixed(0)} MiB with the flows, peak ${(peakRss / 2 ** 20).toFixed(0)} MiB; fds ${base.fds} -> ${samples[0]!.fds}; ` +
          `download ${baselineMbps.toFixed(0)} Mbit/s alone, ${loadedMbps.toFixed(0)} Mbit/s beside the flows (${(loadedMbps / baselineMbps).toFixed(2)}x)`,
      );
    } finally {
      await fe.close();
      await backend.stop();
      tcpServer.server.close();
      for (const s of tcpServer.sockets) s.destroy();
      bulk.server.close();
      udpServer.close();
    }
  }, 300_000);
});
