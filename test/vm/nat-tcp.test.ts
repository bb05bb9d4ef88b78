/**
 * The TCP translator seen from a real guest (QEMU under TCG, the busybox
 * initramfs, our backend as a child process with default options): bulk
 * transfers both ways against a server on the host's 127.0.0.1 reached
 * through the gateway address 10.0.2.2, refused connections, and 100
 * connections open at the same time.
 */
import { createServer as createNetServer, type Server as NetServer } from 'node:net';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bootGuest, type Guest } from '../harness/qemu.js';
import { ensureGuestBuilt, udhcpc } from '../harness/guest.js';
import { startBackendProcess, type BackendProcess } from '../harness/backend.js';
import { killAllAfterAll } from '../harness/processes.js';
import {
  MB, closeServer, closedTcpPort, hashingSink, itemBody, listenTcp, sha256, transferHttp, type HashingSink, type TransferHttp,
} from '../helpers/loopback-peers.js';

killAllAfterAll(afterAll);

const CONCURRENT = 100;

describe('TCP through the NAT in a guest', () => {
  let dir: string;
  let backend: BackendProcess;
  let guest: Guest;
  /** /blob, /upload, /abort and /item/N (held until CONCURRENT are open) on 127.0.0.1. */
  let http: TransferHttp;
  /** Raw TCP sink: hashes what arrives until the peer half-closes, answers "LENGTH SHA256". */
  let sink: HashingSink;
  /** The same, but it stops reading for 3 s after the first MB (the guest must wait, not lose data). */
  let slowSink: HashingSink;
  /** Writes a greeting, then resets the connection (SO_LINGER 0). */
  let resetter: NetServer;
  let resetterPort = 0;
  const token = randomBytes(6).toString('hex');
  const blob = randomBytes(10 * MB);
  const blobSha = sha256(blob);

  beforeAll(async () => {
    await ensureGuestBuilt();
    dir = await mkdtemp(join(tmpdir(), 'vun-nat-tcp-'));
    http = await transferHttp('127.0.0.1', { blob, token, concurrent: CONCURRENT });
    sink = await hashingSink('127.0.0.1');
    slowSink = await hashingSink('127.0.0.1', { pauseAfterBytes: MB, pauseMs: 3000 });
    resetter = createNetServer((conn) => {
      conn.on('error', () => undefined);
      conn.write(`hello-${token}\n`);
      setTimeout(() => conn.resetAndDestroy(), 300);
    });
    resetterPort = await listenTcp(resetter, '127.0.0.1');
    const socket = join(dir, 'vu.sock');
    // A loopback DNS upstream that nobody answers: this file resolves no names.
    backend = await startBackendProcess({ socket, args: ['--dns-upstream', '127.0.0.1:9'] });
    guest = await bootGuest({ name: 'nat-tcp', nic: { kind: 'vhost-user', socket } });
    console.log(`guest boot to ready: ${guest.bootMs} ms`);
    const lease = await udhcpc(guest);
    expect(lease.cidr).toBe('10.0.2.15/24');
    // The default MTU is announced too.
    expect(lease.output).toMatch(/ router=10\.0\.2\.2 dns=10\.0\.2\.3 mtu=1500\n/);
  });

  afterAll(async () => {
    await guest?.close();
    await backend?.stop();
    await http?.close();
    await closeServer(sink?.server);
    await closeServer(slowSink?.server);
    await closeServer(resetter);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('downloads 10 MB from 127.0.0.1 through 10.0.2.2 with a matching sha256', async () => {
    const t0 = Date.now();
    const r = await guest.run(`wget -q -O - http://10.0.2.2:${http.port}/blob | sha256sum`, { timeoutMs: 150_000 });
    const ms = Date.now() - t0;
    console.log(`10 MB download: ${ms} ms (${((blob.length * 8) / 1e3 / ms).toFixed(1)} Mbit/s)`);
    expect(r.exitCode, r.output).toBe(0);
    expect(r.output.trim().split(/\s+/)[0]).toBe(blobSha);
  });

  it('uploads 10 MB to 127.0.0.1 through 10.0.2.2 with a matching sha256', async () => {
    await guest.runOk('dd if=/dev/urandom of=/tmp/up bs=1048576 count=10 2>/dev/null', { timeoutMs: 60_000 });
    const guestSha = (await guest.runOk('sha256sum /tmp/up', { timeoutMs: 60_000 })).trim().split(/\s+/)[0];
    expect(guestSha).toMatch(/^[0-9a-f]{64}$/);
    const t0 = Date.now();
    // busybox nc half-closes at the end of its input; the sink then answers with what it got.
    // (Not wget --post-file: busybox sends only up to the file's first NUL byte.)
    const r = await guest.run(`nc 10.0.2.2 ${sink.port} < /tmp/up`, { timeoutMs: 150_000 });
    const ms = Date.now() - t0;
    console.log(`10 MB upload: ${ms} ms (${((10 * MB * 8) / 1e3 / ms).toFixed(1)} Mbit/s)`);
    expect(r.exitCode, r.output).toBe(0);
    expect(r.output.trim()).toBe(`${10 * MB} ${guestSha}`);
    expect(sink.uploads.at(-1)).toEqual({ length: 10 * MB, sha: guestSha, remote: '127.0.0.1' });
    // An HTTP POST of a (NUL-free) text body of ~1 MB with busybox wget.
    const text = (await guest.runOk('seq 1 170000 > /tmp/text && wc -c < /tmp/text && sha256sum /tmp/text')).trim().split(/\s+/);
    const post = await guest.run(`wget -q -O - --post-file /tmp/text http://10.0.2.2:${http.port}/upload`, { timeoutMs: 60_000 });
    expect(post.exitCode, post.output).toBe(0);
    expect(post.output.trim()).toBe(`${text[0]} ${text[1]}`);
    expect(Number(text[0])).toBeGreaterThan(MB);
  });

  it('shows a connection to a closed port on 10.0.2.2 as refused (RST)', async () => {
    const closed = await closedTcpPort('127.0.0.1');
    const before = await backend.counters();
    const r = await guest.run(`vun-echo tcp 10.0.2.2 ${closed} hello 5000`, { timeoutMs: 20_000 });
    expect(r.exitCode).toBe(1);
    expect(r.output).toMatch(/connect: Connection refused/);
    const w = await guest.run(`wget -q -O - http://10.0.2.2:${closed}/`, { timeoutMs: 20_000 });
    expect(w.exitCode).not.toBe(0);
    expect(w.output).toMatch(/Connection refused/);
    const after = await backend.counters();
    expect((after['tcp.host.error.ECONNREFUSED'] ?? 0) - (before['tcp.host.error.ECONNREFUSED'] ?? 0)).toBe(2);
    expect(after['tcp.rst.sent']! - (before['tcp.rst.sent'] ?? 0)).toBeGreaterThanOrEqual(2);
  });

  it(`completes ${CONCURRENT} concurrent connections, each with its own content`, async () => {
    const before = await backend.counters();
    const t0 = Date.now();
    // 100 wget in the background, all held open by the server until the last one arrives.
    const r = await guest.run(
      `rm -rf /tmp/c && mkdir /tmp/c && for i in $(seq 1 ${CONCURRENT}); do ` +
        `(wget -q -O /tmp/c/$i http://10.0.2.2:${http.port}/item/$i || echo "FAIL $i") & done; wait; ` +
        `cd /tmp/c && for i in $(seq 1 ${CONCURRENT}); do echo "$i $(sha256sum < $i | cut -d' ' -f1)"; done`,
      { timeoutMs: 150_000 },
    );
    console.log(`${CONCURRENT} concurrent connections: ${Date.now() - t0} ms, peak open at the server ${http.peakOpen()}`);
    expect(r.exitCode, r.output).toBe(0);
    expect(r.output).not.toContain('FAIL');
    const lines = r.output.trim().split('\n');
    expect(lines.length).toBe(CONCURRENT);
    for (let n = 1; n <= CONCURRENT; n++) {
      expect(lines[n - 1], `item ${n}`).toBe(`${n} ${sha256(itemBody(token, n))}`);
    }
    // They were really open at the same time (the server held every response until the last arrived).
    expect(http.peakOpen()).toBe(CONCURRENT);
    const after = await backend.counters();
    expect(after['tcp.flows.opened']! - (before['tcp.flows.opened'] ?? 0)).toBe(CONCURRENT);
    expect(after['tcp.error.internal'] ?? 0).toBe(0);
  });

  it('waits for a host server that stops reading (upload, back-pressure towards the guest)', async () => {
    const guestSha = (await guest.runOk('sha256sum /tmp/up', { timeoutMs: 60_000 })).trim().split(/\s+/)[0];
    const t0 = Date.now();
    const r = await guest.run(`nc 10.0.2.2 ${slowSink.port} < /tmp/up`, { timeoutMs: 150_000 });
    const ms = Date.now() - t0;
    expect(r.exitCode, r.output).toBe(0);
    expect(r.output.trim()).toBe(`${10 * MB} ${guestSha}`);
    expect(slowSink.pauses()).toBe(1);
    expect(ms).toBeGreaterThanOrEqual(3000);
  });

  it('waits for a guest reader that stops reading (download, zero window towards the host)', async () => {
    // The pipe fills while the reader sleeps: wget blocks, the guest's receive window closes.
    const before = (await backend.counters())['tcp.zero_window_probes'] ?? 0;
    const r = await guest.run(`wget -q -O - http://10.0.2.2:${http.port}/blob | (sleep 4; sha256sum)`, { timeoutMs: 150_000 });
    expect(r.exitCode, r.output).toBe(0);
    expect(r.output.trim().split(/\s+/)[0]).toBe(blobSha);
    const c = await backend.counters();
    // The window really closed: the stack probed it while the reader slept.
    expect((c['tcp.zero_window_probes'] ?? 0) - before).toBeGreaterThan(0);
    expect(c['tcp.drop.host_overflow'] ?? 0).toBe(0);
  });

  it('passes a reset by the host server to the guest (connection reset by peer)', async () => {
    const r = await guest.run(`vun-echo tcp 10.0.2.2 ${resetterPort} x 5000`, { timeoutMs: 20_000 });
    expect(r.exitCode).toBe(1);
    expect(r.output).toContain(`hello-${token}\n`);
    expect(r.output).toMatch(/read: Connection reset by peer/);
  });

  it('passes a guest that abandons a download on to the host server (closed early)', async () => {
    // head exits after 100 kB; wget dies of SIGPIPE with unread data: the guest resets the connection.
    const r = await guest.run(`wget -q -O - http://10.0.2.2:${http.port}/abort | head -c 100000 | wc -c`, { timeoutMs: 60_000 });
    expect(r.output.trim()).toBe('100000');
    for (let i = 0; i < 40 && http.aborts.length === 0; i++) await new Promise((res) => setTimeout(res, 250));
    expect(http.aborts).toEqual(['closed early']);
  });

  it('reclaims the flows once the connections are closed', async () => {
    // Closed flows linger 2 s (TCP_TIMING), then leave the table.
    let active = -1;
    for (let i = 0; i < 40 && active !== 0; i++) {
      await new Promise((r) => setTimeout(r, 250));
      active = (await backend.counters())['tcp.flows.active'] ?? 0;
    }
    expect(active).toBe(0);
    expect(backend.log()).not.toMatch(/internal error|exception/);
  });
});
