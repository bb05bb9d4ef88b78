/**
 * Device-level benchmark: frames per second and throughput of our virtio-net
 * device + stack, driven by our own vhost-user frontend (no VM, no guest
 * kernel: what is measured is the backend's own per-frame cost).
 *
 * Theory of operation. The backend runs as a child process (src/cli.ts
 * --socket), so its CPU time is its own (/proc/PID/stat). This process plays
 * the VM monitor and the guest driver: VhostUserFrontend negotiates like
 * QEMU and starts both rings, NetDriver moves frames. The guest resolves the
 * gateway with ARP (the stack also learns the guest's MAC from that frame),
 * then sends ICMP echo requests to the gateway, which the stack answers
 * itself: each request is one frame device-bound (tx ring) and each reply
 * one frame guest-bound (rx ring), with the whole stack in between (Ethernet,
 * IPv4 header checksum, ICMP checksum, reply construction).
 *
 * Load: batches of BATCH requests (one avail-index publish and at most one
 * kick per batch), with at most WINDOW requests outstanding; every time
 * replies come back the window is refilled, so the rings never run empty
 * and the device never meets a full receive ring. A request whose reply
 * does not come within STALL_MS is written off as lost (so a drop cannot
 * stall the run). Each size runs for a fixed time after a short warm-up; the
 * figures are deltas over the measured interval only.
 *
 * Frame sizes are Ethernet frames without FCS: 64 bytes (the classic
 * minimum with FCS; IPv4 50, ICMP 30) and 1514 (a full 1500-byte MTU packet).
 */
import { join } from 'node:path';
import { VhostUserFrontend } from '../src/frontend/frontend.js';
import { NetDriver } from '../src/frontend/net-driver.js';
import { killProcess } from '../test/harness/processes.js';
import { fmt, makeTempDir, processCpuSeconds, removeTempDir, selfCpuSeconds, sleep, startBackendChild, table, withTimeout } from './common.js';

export interface DeviceOptions {
  /** Measured seconds per frame size (default 3). */
  seconds?: number;
  /** Frames per batch (default 64). */
  batch?: number;
  /** Ring size (default 256, QEMU's default). */
  queueSize?: number;
  sizes?: number[];
}

export interface DeviceResult {
  frameBytes: number;
  seconds: number;
  /** Echo requests the frontend handed to the device, per second. */
  txFps: number;
  /** Echo replies the device delivered to the frontend, per second. */
  rxFps: number;
  /** Ethernet bytes x 8 per second, each way. */
  txGbps: number;
  rxGbps: number;
  /** Requests without a reply (written off after STALL_MS, or still missing at the end). */
  lost: number;
  /** Backend process CPU over the interval: percent of one core, µs per frame moved (in + out). */
  backendCpuPercent: number;
  backendUsPerFrame: number;
  /** This process (frontend + driver) CPU, percent of one core. */
  frontendCpuPercent: number;
}

export interface DeviceReport {
  ok: boolean;
  error?: string;
  batch: number;
  window: number;
  queueSize: number;
  results: DeviceResult[];
}

const GUEST_MAC = Uint8Array.from([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
const GUEST_IP = 0x0a00020f; // 10.0.2.15
const GATEWAY_IP = 0x0a000202; // 10.0.2.2
const STALL_MS = 300;
const WARMUP_MS = 300;

function checksum16(bytes: Uint8Array, start: number, end: number): number {
  let sum = 0;
  for (let i = start; i + 1 < end; i += 2) sum += (bytes[i]! << 8) | bytes[i + 1]!;
  if ((end - start) & 1) sum += bytes[end - 1]! << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** ARP who-has GATEWAY_IP tell GUEST_IP, padded to 60 bytes. */
function arpRequest(): Uint8Array {
  const f = new Uint8Array(60);
  const v = new DataView(f.buffer);
  f.fill(0xff, 0, 6);
  f.set(GUEST_MAC, 6);
  v.setUint16(12, 0x0806, false);
  v.setUint16(14, 1, false); // Ethernet
  v.setUint16(16, 0x0800, false); // IPv4
  f[18] = 6;
  f[19] = 4;
  v.setUint16(20, 1, false); // request
  f.set(GUEST_MAC, 22);
  v.setUint32(28, GUEST_IP, false);
  v.setUint32(38, GATEWAY_IP, false);
  return f;
}

/** An ICMP echo request to the gateway in an Ethernet frame of exactly `frameBytes` bytes. */
function echoRequest(frameBytes: number, gatewayMac: Uint8Array, id: number, seq: number): Uint8Array {
  const f = new Uint8Array(frameBytes);
  const v = new DataView(f.buffer);
  f.set(gatewayMac, 0);
  f.set(GUEST_MAC, 6);
  v.setUint16(12, 0x0800, false);
  const ipLen = frameBytes - 14;
  f[14] = 0x45;
  v.setUint16(16, ipLen, false);
  v.setUint16(18, seq & 0xffff, false); // IP id
  v.setUint16(20, 0x4000, false); // DF
  f[22] = 64; // TTL
  f[23] = 1; // ICMP
  v.setUint32(26, GUEST_IP, false);
  v.setUint32(30, GATEWAY_IP, false);
  v.setUint16(24, checksum16(f, 14, 34), false);
  f[34] = 8; // echo request
  v.setUint16(38, id, false);
  v.setUint16(40, seq & 0xffff, false);
  for (let i = 42; i < frameBytes; i++) f[i] = i & 0xff;
  v.setUint16(36, checksum16(f, 34, frameBytes), false);
  return f;
}

function isArpReplyFromGateway(f: Uint8Array): Uint8Array | null {
  if (f.byteLength < 42) return null;
  const v = new DataView(f.buffer, f.byteOffset, f.byteLength);
  if (v.getUint16(12, false) !== 0x0806 || v.getUint16(20, false) !== 2 || v.getUint32(28, false) !== GATEWAY_IP) return null;
  return f.slice(22, 28);
}

function isEchoReply(f: Uint8Array): boolean {
  return f.byteLength >= 42 && f[12] === 0x08 && f[13] === 0x00 && f[23] === 1 && f[34] === 0;
}

/** Runs echo load of one frame size for `seconds` and reports deltas. */
async function runSize(driver: NetDriver, backendPid: number, gatewayMac: Uint8Array, frameBytes: number, seconds: number, batch: number, window: number): Promise<DeviceResult> {
  const frames = Array.from({ length: batch }, (_, i) => echoRequest(frameBytes, gatewayMac, 0x4242, i));
  let sent = 0;
  let received = 0;
  let bad = 0;
  let writtenOff = 0;
  let lastReplyAt = performance.now();
  let running = true;
  let scheduled = false;
  let failure: Error | null = null;

  const pump = (): void => {
    scheduled = false;
    if (!running) return;
    const now = performance.now();
    const outstanding = sent - received - writtenOff;
    if (outstanding > 0 && now - lastReplyAt > STALL_MS) {
      writtenOff += outstanding;
      lastReplyAt = now;
    }
    try {
      while (sent - received - writtenOff + batch <= window) {
        driver.send(frames);
        sent += batch;
      }
    } catch (err) {
      // The frontend closed under us (backend gone): end the run, report it.
      failure = err as Error;
      running = false;
    }
  };
  const schedule = (): void => {
    if (!scheduled) {
      scheduled = true;
      setImmediate(pump);
    }
  };
  driver.onFrame((f) => {
    if (isEchoReply(f)) {
      received++;
      lastReplyAt = performance.now();
    } else {
      bad++;
    }
    schedule();
  });
  // Stall watchdog: also refills after a write-off.
  const watchdog = setInterval(schedule, STALL_MS / 3);

  try {
    pump();
    await sleep(WARMUP_MS);
    const t0 = performance.now();
    const s0 = { sent, received, cpu: processCpuSeconds(backendPid), self: selfCpuSeconds() };
    await sleep(seconds * 1000);
    const t1 = performance.now();
    const s1 = { sent, received, cpu: processCpuSeconds(backendPid), self: selfCpuSeconds() };
    running = false;
    const failed = failure as Error | null; // assigned in pump(), which TypeScript cannot see
    if (failed) throw new Error(`sending failed: ${failed.message}`);
    // Let the replies in flight come home before counting losses.
    const drainEnd = Date.now() + 1000;
    while (sent - received > 0 && Date.now() < drainEnd) await sleep(10);
    const dt = (t1 - t0) / 1000;
    const tx = s1.sent - s0.sent;
    const rx = s1.received - s0.received;
    const backendCpu = s0.cpu !== null && s1.cpu !== null ? s1.cpu - s0.cpu : NaN;
    return {
      frameBytes,
      seconds: dt,
      txFps: tx / dt,
      rxFps: rx / dt,
      txGbps: (tx * frameBytes * 8) / dt / 1e9,
      rxGbps: (rx * frameBytes * 8) / dt / 1e9,
      lost: sent - received + bad,
      backendCpuPercent: (backendCpu / dt) * 100,
      backendUsPerFrame: (backendCpu * 1e6) / Math.max(1, tx + rx),
      frontendCpuPercent: ((s1.self - s0.self) / dt) * 100,
    };
  } finally {
    running = false;
    clearInterval(watchdog);
    driver.onFrame(null);
  }
}

/** The device benchmark: backend child, our frontend, echo load per frame size. */
export async function runDeviceBench(options: DeviceOptions = {}): Promise<DeviceReport> {
  const seconds = options.seconds ?? 3;
  const batch = options.batch ?? 64;
  const queueSize = options.queueSize ?? 256;
  // Keep a batch of receive buffers in hand so a full window never meets a full rx ring.
  const window = Math.max(batch, Math.floor(queueSize / batch) * batch - batch);
  const sizes = options.sizes ?? [64, 1514];
  const report: DeviceReport = { ok: false, batch, window, queueSize, results: [] };

  const dir = makeTempDir('vun-bench-dev-');
  const socket = join(dir, 'backend.sock');
  let backend: Awaited<ReturnType<typeof startBackendChild>> | undefined;
  let fe: VhostUserFrontend | undefined;
  try {
    backend = await startBackendChild(socket);
    fe = VhostUserFrontend.connect(socket, { style: 'qemu', memorySize: 16 * 1024 * 1024, queueSize });
    await withTimeout(fe.connectAndStart(), 10_000, 'vhost-user negotiation');
    await withTimeout(fe.sync(), 5000, 'vhost-user sync');
    const driver = new NetDriver(fe);
    driver.start();

    // ARP: resolve the gateway (and let the stack learn our MAC).
    let gatewayMac: Uint8Array | null = null;
    for (let attempt = 0; attempt < 5 && gatewayMac === null; attempt++) {
      driver.send([arpRequest()]);
      const end = Date.now() + 1000;
      while (gatewayMac === null && Date.now() < end) {
        const f = await driver.receive(Math.max(1, end - Date.now())).catch(() => null);
        if (f) gatewayMac = isArpReplyFromGateway(f);
      }
    }
    if (gatewayMac === null) throw new Error(`no ARP reply from the gateway 10.0.2.2; backend stderr: ${backend.stderr().trim()}`);

    for (const size of sizes) {
      const r = await runSize(driver, backend.proc.pid, gatewayMac, size, seconds, batch, window);
      if (r.rxFps === 0) throw new Error(`no echo replies with ${size}-byte frames (sent ${fmt(r.txFps * r.seconds, 0)}); backend stderr: ${backend.stderr().trim()}`);
      report.results.push(r);
    }
    report.ok = true;
  } catch (err) {
    report.error = (err as Error).message;
  } finally {
    if (fe?.isOpen) await fe.close().catch(() => undefined);
    if (backend) await killProcess(backend.proc, 'SIGTERM', 2000);
    removeTempDir(dir);
  }
  return report;
}

export function formatDeviceReport(r: DeviceReport): string {
  const title =
    `Device level: our backend only (child process) driven by our own vhost-user frontend, ICMP echo to the gateway 10.0.2.2\n` +
    `(batches of ${r.batch}, up to ${r.window} outstanding, ring size ${r.queueSize}; no other vhost-user-net backend on this host to compare with)`;
  const rows = r.results.map((x) => [
    `${x.frameBytes} B frames`,
    fmt(x.txFps, 0),
    fmt(x.rxFps, 0),
    fmt(x.txGbps, 3),
    fmt(x.rxGbps, 3),
    String(x.lost),
    fmt(x.backendCpuPercent, 0),
    fmt(x.backendUsPerFrame, 2),
    fmt(x.frontendCpuPercent, 0),
  ]);
  const t = table(
    ['', 'req/s in (↑)', 'replies/s out (↑)', 'Gbit/s in (↑)', 'Gbit/s out (↑)', 'lost', 'backend CPU %', 'backend µs/frame (↓)', 'frontend CPU %'],
    rows,
  );
  return `${title}\n${t}${r.ok ? '' : `\nFAILED: ${r.error}`}`;
}
