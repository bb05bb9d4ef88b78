/**
 * QEMU test guests driven over the serial console.
 *
 * Theory of operation: bootGuest() starts qemu-system-x86_64 under TCG (this
 * machine's /dev/kvm cannot boot stock kernels) with the guest's ttyS0 on
 * QEMU's stdin/stdout, one virtio-net NIC per requested backend, and guest
 * RAM in a shared memfd (vhost-user maps it). Everything the guest prints is
 * appended to `log` (carriage returns dropped); waits scan that log from a
 * position, so nothing printed between two waits is lost.
 *
 * The guest built by scripts/build-guest.sh gives a root shell with echo off
 * and prints GUEST-READY. A foreign image (e.g. cirros, see guest.ts) is
 * logged into on the console and then put in the same state. run() then
 * sends one command line wrapped in numbered markers:
 *
 *   printf '@@S%d@@\n' N; ( CMD
 *   ) </dev/null 2>&1; printf '\n@@E%d:%d@@\n' N $?
 *
 * The typed text never matches the printed markers (`%d` vs digits), so
 * even with echo on, only the shell's output can complete a run. Commands run
 * one at a time (a queue) and each in a subshell (so `exit 3` ends only the
 * command, and `cd` or variables do not carry over to the next run); a
 * command that outlives its timeout gets ^C.
 *
 * NIC kinds: 'vhost-user' (our backend; `reconnect=1` by default so QEMU may
 * start before the backend listens, and reconnects after a backend restart),
 * 'slirp' (QEMU's own -netdev user, the reference), 'passt' (-netdev stream
 * to a Unix socket). Under TCG, QEMU 7.2 crashes as soon as a vhost-user NIC
 * uses MSI-X, so every NIC has vectors=0 (INTx); romfile= skips iPXE.
 *
 * Every QEMU is tracked in processes.ts and dies with the test process.
 */
import { closeSync, openSync, readSync } from 'node:fs';
import { mkdtemp, rm, appendFile, mkdir } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { killProcess, spawnTracked, type TrackedProcess } from './processes.js';

export type NicOptions =
  | {
      kind: 'vhost-user';
      /** The backend's Unix socket. */
      socket: string;
      mac?: string;
      /**
       * Seconds between reconnect attempts (QEMU `reconnect=`); default 1.
       * 0 disables: QEMU then fails at start if nothing listens.
       */
      reconnect?: number;
      /** QEMU listens on `socket` and the backend connects (`--connect`). */
      server?: boolean;
    }
  | {
      kind: 'slirp';
      /** e.g. 'tcp:127.0.0.1:5555-:22' */
      hostfwd?: string[];
      mac?: string;
      /** Extra `-netdev user` options, e.g. 'ipv6=off'. */
      extra?: string;
    }
  | { kind: 'passt'; socket: string; mac?: string };

export interface GuestImage {
  /** Kernel and initrd booted with -kernel/-initrd. */
  kernel?: string;
  initrd?: string;
  /** A disk image (qcow2 or raw), attached read-only (snapshot=on); booted by the BIOS when no kernel is given. */
  disk?: string;
  /** Kernel command line after `console=ttyS0` (kernel boots only). */
  append?: string;
  /**
   * For images that show a login prompt (cirros): the console login, then
   * `sudo -s` when sudo is true. Absent: the guest prints GUEST-READY itself.
   */
  login?: { user: string; password: string; sudo?: boolean };
  /** Free text for logs ("vun-initramfs", "cirros"...). */
  name?: string;
}

export interface BootOptions {
  /** NICs in order (eth0, eth1...). A single one may be given as `nic`. */
  nic?: NicOptions;
  nics?: NicOptions[];
  /** Defaults to guest.ts defaultGuestImage() (the built initramfs, or VUN_GUEST_* env). */
  image?: GuestImage;
  memoryMb?: number;
  cpus?: number;
  /** Extra kernel arguments. */
  append?: string;
  /** Wait for the shell (default true). */
  waitReady?: boolean;
  readyTimeoutMs?: number;
  extraArgs?: string[];
  /** Name used in logs and errors. */
  name?: string;
  /** Open a QMP socket (guest.qmp()). */
  qmp?: boolean;
  /** QEMU binary; default $VUN_QEMU or qemu-system-x86_64. */
  qemu?: string;
}

export interface RunResult {
  output: string;
  exitCode: number;
}

export interface RunOptions {
  timeoutMs?: number;
}

/** The marker the guest's shell prints when it is ready for commands. */
export const READY_MARKER = 'GUEST-READY';
const READY_RE = /GUEST-READY\n/;
const PANIC_RE = /Kernel panic - not syncing[^\n]*/;
/** ash's complaint when a command line does not parse (nothing of it runs). */
const SHELL_ERROR_RE = /(?:^|[\n ])(?:-?sh|ash): [^\n]*syntax error[^\n]*/;
/** The n_tty canonical line limit is 4095 bytes; keep a margin for the wrapper. */
const MAX_LINE = 3900;

let guestCounter = 0;

function macFor(index: number): string {
  return `52:54:00:12:34:${(0x56 + index).toString(16).padStart(2, '0')}`;
}

/** QEMU arguments for NIC number `index`. Exported for tests and debugging. */
export function nicArgs(nic: NicOptions, index: number): string[] {
  const id = `n${index}`;
  const mac = nic.mac ?? macFor(index);
  const device = ['-device', `virtio-net-pci,netdev=${id},vectors=0,romfile=,mac=${mac}`];
  switch (nic.kind) {
    case 'vhost-user': {
      let chardev = `socket,id=c${index},path=${nic.socket}`;
      if (nic.server) chardev += ',server=on,wait=off';
      else if ((nic.reconnect ?? 1) > 0) chardev += `,reconnect=${nic.reconnect ?? 1}`;
      return ['-chardev', chardev, '-netdev', `vhost-user,id=${id},chardev=c${index}`, ...device];
    }
    case 'slirp': {
      let netdev = `user,id=${id}`;
      for (const fwd of nic.hostfwd ?? []) netdev += `,hostfwd=${fwd}`;
      if (nic.extra) netdev += `,${nic.extra}`;
      return ['-netdev', netdev, ...device];
    }
    case 'passt':
      return [
        '-netdev',
        `stream,id=${id},server=off,addr.type=unix,addr.path=${nic.socket}`,
        ...device,
      ];
  }
}

/** A match in the console log: `index`/`end` are log offsets. */
interface Found {
  groups: string[];
  index: number;
  end: number;
}

interface Waiter {
  /** Looks for the awaited text in the log (from the waiter's start). */
  find: (log: string) => Found | undefined;
  /** Fails the wait when this returns a reason; sees only text not yet checked. */
  failIf?: (window: string) => string | undefined;
  /** Log offset up to which failIf and the panic check have run. */
  scanned: number;
  resolve: (f: Found) => void;
  reject: (e: Error) => void;
}

/** Overlap kept between incremental windows, longer than any line we look for. */
const WINDOW_OVERLAP = 256;

export class Guest {
  /** Everything the guest printed on its console, '\r' removed. */
  log = '';
  /** QEMU's stderr. */
  stderr = '';
  /** Where the next waitFor() starts scanning. */
  cursor = 0;
  /** Milliseconds from spawn to the first ready shell (0 until then). */
  bootMs = 0;
  readonly startedAt = Date.now();
  private waiters = new Set<Waiter>();
  private seq = 0;
  private queue: Promise<unknown> = Promise.resolve();
  private exitInfo: string | undefined;
  private qmpSocket: Socket | undefined;
  private qmpBuf = '';
  private qmpPending: { resolve: (v: unknown) => void; reject: (e: Error) => void }[] = [];
  private logFile: string | undefined;
  private logWrites: Promise<void> = Promise.resolve();

  constructor(
    readonly name: string,
    readonly proc: TrackedProcess,
    readonly args: readonly string[],
    readonly image: GuestImage,
    private readonly tmp: string,
    private readonly qmpPath: string | undefined,
  ) {
    const child = proc.child;
    child.stdout!.setEncoding('utf8');
    child.stderr!.setEncoding('utf8');
    child.stdout!.on('data', (chunk: string) => this.onConsole(chunk));
    child.stderr!.on('data', (chunk: string) => {
      this.stderr += chunk;
    });
    child.stdin!.on('error', () => {
      // QEMU gone; the exit handler reports it.
    });
    void proc.exited.then((code) => {
      this.exitInfo = `QEMU exited (${code})`;
      this.failAll(new Error(this.describe(this.exitInfo)));
    });
    const dir = process.env.VUN_GUEST_LOG_DIR;
    if (dir) this.logFile = join(dir, `${name}-${proc.pid}.log`);
  }

  get pid(): number {
    return this.proc.pid;
  }

  /** True while QEMU runs. */
  get running(): boolean {
    return this.exitInfo === undefined;
  }

  private onConsole(chunk: string): void {
    const text = chunk.replace(/\r/g, '');
    this.log += text;
    if (this.logFile) {
      const file = this.logFile;
      this.logWrites = this.logWrites
        .then(() => mkdir(process.env.VUN_GUEST_LOG_DIR!, { recursive: true }))
        .then(() => appendFile(file, text))
        .catch(() => undefined);
    }
    for (const w of [...this.waiters]) this.check(w);
  }

  private check(w: Waiter): void {
    const found = w.find(this.log);
    if (found) {
      this.waiters.delete(w);
      w.resolve(found);
      return;
    }
    const window = this.log.slice(w.scanned);
    w.scanned = Math.max(w.scanned, this.log.length - WINDOW_OVERLAP);
    const failed = w.failIf?.(window);
    if (failed !== undefined) {
      this.waiters.delete(w);
      w.reject(new Error(this.describe(`guest reported: ${failed}`)));
      return;
    }
    const panic = PANIC_RE.exec(window);
    if (panic) {
      this.waiters.delete(w);
      w.reject(new Error(this.describe(`guest kernel panic: ${panic[0]}`)));
    }
  }

  private failAll(e: Error): void {
    for (const w of [...this.waiters]) {
      this.waiters.delete(w);
      w.reject(e);
    }
    for (const p of this.qmpPending.splice(0)) p.reject(e);
  }

  /** An error text with the console tail and QEMU's stderr. */
  describe(what: string, tailChars = 4000): string {
    const tail = this.log.length > tailChars ? '...' + this.log.slice(-tailChars) : this.log;
    let s = `[${this.name}] ${what}\n--- console (last ${tailChars} chars) ---\n${tail}\n--- end console ---`;
    if (this.stderr.trim()) s += `\n--- qemu stderr ---\n${this.stderr.trim()}\n---`;
    return s;
  }

  /** The last `chars` characters of the console. */
  tail(chars = 2000): string {
    return this.log.slice(-chars);
  }

  /** Writes raw bytes to the guest's console. */
  write(data: string): void {
    if (!this.running) throw new Error(this.describe(`write after ${this.exitInfo}`));
    this.proc.child.stdin!.write(data);
  }

  /**
   * Waits until `re` matches the console output at or after `from` (default:
   * the cursor), then moves the cursor past the match. Fails on timeout,
   * QEMU exit or a guest kernel panic.
   */
  waitFor(re: RegExp, timeoutMs = 30_000, from = this.cursor): Promise<RegExpExecArray> {
    const plain = new RegExp(re.source, re.flags.replace(/[gy]/g, ''));
    let match: RegExpExecArray | undefined;
    const find = (log: string): Found | undefined => {
      const m = plain.exec(log.slice(from));
      if (!m) return undefined;
      m.index += from;
      match = m;
      return { groups: [...m].map((g) => g ?? ''), index: m.index, end: m.index + m[0].length };
    };
    return this.wait(find, timeoutMs, from, `${re}`).then(() => match!);
  }

  /**
   * Waits until find() succeeds; moves the cursor past the match. Fails on
   * timeout, QEMU exit, a guest kernel panic or when failIf() gives a reason.
   */
  private wait(
    find: (log: string) => Found | undefined,
    timeoutMs: number,
    from: number,
    what: string,
    failIf?: (window: string) => string | undefined,
  ): Promise<Found> {
    return new Promise((resolve, reject) => {
      if (!this.running && !find(this.log)) {
        return reject(new Error(this.describe(`waiting for ${what} after ${this.exitInfo}`)));
      }
      const timer = setTimeout(() => {
        this.waiters.delete(w);
        reject(new Error(this.describe(`timeout after ${timeoutMs} ms waiting for ${what}`)));
      }, timeoutMs);
      const w: Waiter = {
        find,
        ...(failIf ? { failIf } : {}),
        scanned: from,
        resolve: (f) => {
          clearTimeout(timer);
          this.cursor = Math.max(this.cursor, f.end);
          resolve(f);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      this.waiters.add(w);
      this.check(w);
    });
  }

  /** Serialises console users (run, reboot, login). */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.then(fn, fn);
    this.queue = next.catch(() => undefined);
    return next;
  }

  /**
   * Runs one shell command in the guest and returns what it printed (stdout
   * and stderr, interleaved) and its exit status. It runs in a subshell with
   * stdin from /dev/null; `cmd &` leaves a daemon running. A command may
   * span lines; each line must stay under ~3900 bytes (the tty's canonical
   * line limit).
   */
  run(cmd: string, opts: RunOptions = {}): Promise<RunResult> {
    const timeoutMs = opts.timeoutMs ?? 60_000;
    for (const line of cmd.split('\n')) {
      if (line.length > MAX_LINE) {
        return Promise.reject(new Error(`run: a command line is ${line.length} bytes (max ${MAX_LINE})`));
      }
    }
    // Control characters would be taken by the tty (^C, ^U, ^D...).
    if (/[\x00-\x08\x0b-\x1f\x7f]/.test(cmd)) {
      return Promise.reject(new Error('run: command contains control characters'));
    }
    const body = cmd.trim() === '' ? ':' : cmd;
    return this.exclusive(async () => {
      const id = ++this.seq;
      const from = this.log.length;
      // Incremental search: locate the start marker once, then look for the
      // end marker only in text that arrived since (outputs may be large).
      const startTok = `@@S${id}@@\n`;
      const endTok = `\n@@E${id}:`;
      let bodyAt = -1;
      let scanAt = from;
      const find = (log: string): Found | undefined => {
        if (bodyAt < 0) {
          const i = log.indexOf(startTok, Math.max(from, scanAt - startTok.length));
          if (i < 0) {
            scanAt = log.length;
            return undefined;
          }
          bodyAt = i + startTok.length;
          scanAt = bodyAt;
        }
        let k = Math.max(bodyAt, scanAt - endTok.length);
        for (;;) {
          const j = log.indexOf(endTok, k);
          if (j < 0) {
            scanAt = log.length;
            return undefined;
          }
          const after = log.slice(j + endTok.length, j + endTok.length + 16);
          const tail = /^(\d+)@@\n/.exec(after);
          if (tail) {
            const end = j + endTok.length + tail[0].length;
            return { groups: [log.slice(bodyAt, j), tail[1]!], index: bodyAt, end };
          }
          if (/^\d*(@@?)?$/.test(after)) {
            scanAt = j; // the rest of the end marker has not arrived yet
            return undefined;
          }
          k = j + 1; // the command printed something marker-like; look further
        }
      };
      // A wrapper line that does not parse prints an error and no start marker.
      let interrupt = true;
      const failIf = (window: string): string | undefined => {
        if (/\nGUEST-SHELL-EXITED\n/.test(window)) return 'the console shell exited';
        if (bodyAt >= 0) return undefined;
        const err = SHELL_ERROR_RE.exec(window)?.[0].trim();
        if (err !== undefined) interrupt = false; // nothing runs; ^C would only flush input
        return err;
      };
      try {
        this.write(
          `printf '@@S%d@@\\n' ${id}; ( ${body}\n) </dev/null 2>&1; printf '\\n@@E%d:%d@@\\n' ${id} $?\n`,
        );
        const f = await this.wait(find, timeoutMs, from, `the end of command ${id}`, failIf);
        const m = f.groups;
        return { output: m[0]!, exitCode: Number(m[1]) };
      } catch (e) {
        if (this.running) await this.resync(id, interrupt);
        throw new Error(`run(${JSON.stringify(cmd)}) failed: ${(e as Error).message}`);
      }
    });
  }

  /**
   * After a failed run: interrupt whatever still runs (^C, which also makes
   * the tty drop typed-ahead input), then wait until the shell has read
   * everything typed so far (e.g. the left-over lines of a command that did
   * not parse) by echoing a marker, so that the next run starts clean.
   * Best effort: three tries of 2 s.
   */
  private async resync(id: number, interrupt: boolean): Promise<void> {
    if (interrupt) {
      this.write('\x03');
      await new Promise((r) => setTimeout(r, 300));
    }
    for (let attempt = 0; attempt < 3 && this.running; attempt++) {
      const from = this.log.length;
      this.write(`printf '@@Y%d.%d@@\\n' ${id} ${attempt}\n`);
      try {
        await this.waitFor(new RegExp(`@@Y${id}\\.${attempt}@@\n`), 2000, from);
        return;
      } catch {
        // lost (flushed) or the shell is still busy: try again
      }
    }
  }

  /** run(), but throws unless the command exits 0. Returns the output. */
  async runOk(cmd: string, opts: RunOptions = {}): Promise<string> {
    const r = await this.run(cmd, opts);
    if (r.exitCode !== 0) {
      throw new Error(
        this.describe(`command exited ${r.exitCode}: ${cmd}\n--- output ---\n${r.output}`, 1500),
      );
    }
    return r.output;
  }

  /** Waits for the shell after boot or reboot; logs in first for foreign images. */
  async waitReady(timeoutMs: number): Promise<void> {
    const login = this.image.login;
    if (!login) {
      await this.waitFor(READY_RE, timeoutMs);
    } else {
      await this.login(login, Date.now() + timeoutMs);
    }
    if (this.bootMs === 0) this.bootMs = Date.now() - this.startedAt;
  }

  /**
   * Console login for foreign images, as a small state machine: answer
   * whichever prompt shows up next; if nothing shows up for a while (getty
   * and login may flush typed-ahead input), press Enter to get a new prompt.
   */
  private async login(login: NonNullable<GuestImage['login']>, deadline: number): Promise<void> {
    const left = () => Math.max(1000, deadline - Date.now());
    await this.waitFor(/login: *$/m, left());
    this.write(`${login.user}\n`);
    // Shells with line editing follow their prompt with terminal queries (ESC [6n).
    const prompts = /(login: *$)|([Pp]assword: *$)|(GUEST-READY\n)|([$#] *(?:\x1b\[[0-9;?]*[A-Za-z])*$)/m;
    let sudoSent = !(login.sudo ?? true);
    let setupSent = false;
    for (;;) {
      if (Date.now() >= deadline) {
        throw new Error(this.describe('timeout logging in on the console'));
      }
      let m: RegExpExecArray;
      try {
        m = await this.waitFor(prompts, Math.min(10_000, left()));
      } catch (e) {
        if (!this.running || !/timeout after/.test((e as Error).message)) throw e;
        this.write('\n');
        continue;
      }
      if (m[1] !== undefined) {
        this.write(`${login.user}\n`);
        sudoSent = !(login.sudo ?? true);
        setupSent = false;
      } else if (m[2] !== undefined) {
        this.write(`${login.password}\n`);
      } else if (m[3] !== undefined) {
        return;
      } else if (!sudoSent) {
        sudoSent = true;
        this.write('sudo -s\n');
      } else if (!setupSent) {
        setupSent = true;
        // The typed `READY""` never matches the printed marker.
        this.write(`stty -echo; export PS1='guest# ' PS2=''; echo GUEST-""READY\n`);
      }
    }
  }

  /**
   * Guest-initiated reboot (`reboot -f`): the kernel resets the machine,
   * QEMU resets every device (virtio reset included) and the guest boots
   * again. Resolves when the new shell is ready; returns the milliseconds it took.
   */
  reboot(timeoutMs = 180_000): Promise<number> {
    return this.exclusive(async () => {
      const t0 = Date.now();
      this.cursor = this.log.length;
      this.write('reboot -f\n');
      await this.waitReady(timeoutMs);
      return Date.now() - t0;
    });
  }

  /** Sends a QMP command (boot with `qmp: true`) and returns its `return` value. */
  async qmp(execute: string, args?: Record<string, unknown>): Promise<unknown> {
    if (!this.qmpPath) throw new Error('qmp: boot the guest with qmp: true');
    if (!this.qmpSocket) await this.openQmp();
    return new Promise((resolve, reject) => {
      this.qmpPending.push({ resolve, reject });
      this.qmpSocket!.write(JSON.stringify(args ? { execute, arguments: args } : { execute }) + '\n');
    });
  }

  private async openQmp(): Promise<void> {
    const sock = connect(this.qmpPath!);
    this.qmpSocket = sock;
    sock.setEncoding('utf8');
    let greeted: () => void;
    const greeting = new Promise<void>((r) => (greeted = r));
    let gotGreeting = false;
    sock.on('data', (chunk: string) => {
      this.qmpBuf += chunk;
      let nl: number;
      while ((nl = this.qmpBuf.indexOf('\n')) >= 0) {
        const line = this.qmpBuf.slice(0, nl).trim();
        this.qmpBuf = this.qmpBuf.slice(nl + 1);
        if (!line) continue;
        const msg = JSON.parse(line) as { QMP?: unknown; return?: unknown; error?: { desc: string }; event?: string };
        if (msg.QMP !== undefined && !gotGreeting) {
          gotGreeting = true;
          greeted!();
        } else if (msg.event !== undefined) {
          // events are ignored
        } else {
          const p = this.qmpPending.shift();
          if (!p) continue;
          if (msg.error) p.reject(new Error(`qmp: ${msg.error.desc}`));
          else p.resolve(msg.return);
        }
      }
    });
    sock.on('error', (e) => this.failQmp(e));
    sock.on('close', () => this.failQmp(new Error('qmp socket closed')));
    await new Promise<void>((resolve, reject) => {
      sock.once('connect', resolve);
      sock.once('error', reject);
    });
    await greeting;
    await new Promise((resolve, reject) => {
      this.qmpPending.push({ resolve, reject });
      sock.write('{"execute":"qmp_capabilities"}\n');
    });
  }

  private failQmp(e: Error): void {
    for (const p of this.qmpPending.splice(0)) p.reject(e);
  }

  /** Kills QEMU at once (SIGKILL) and waits for it to exit. */
  async kill(): Promise<void> {
    await this.stop('SIGKILL');
  }

  /** Stops QEMU (SIGTERM, then SIGKILL after 3 s) and cleans up. Safe to call twice. */
  async close(): Promise<void> {
    await this.stop('SIGTERM');
  }

  private async stop(signal: NodeJS.Signals): Promise<void> {
    this.qmpSocket?.destroy();
    await killProcess(this.proc, signal);
    await this.logWrites;
    await rm(this.tmp, { recursive: true, force: true });
  }
}

/** 'qcow2' when the file starts with the qcow magic, else 'raw'. */
function diskFormat(path: string): string {
  const fd = openSync(path, 'r');
  try {
    const magic = Buffer.alloc(4);
    readSync(fd, magic, 0, 4, 0);
    return magic.toString('latin1') === 'QFI\xfb' ? 'qcow2' : 'raw';
  } finally {
    closeSync(fd);
  }
}

/** The QEMU command line (without the binary) for these options. */
export function qemuArgs(opts: BootOptions, image: GuestImage, qmpPath?: string): string[] {
  const mem = opts.memoryMb ?? 512;
  const args = [
    '-accel', 'tcg',
    '-display', 'none',
    '-nodefaults',
    '-no-user-config',
    '-serial', 'stdio',
    '-smp', String(opts.cpus ?? 1),
    '-m', String(mem),
    '-object', `memory-backend-memfd,id=mem,size=${mem}M,share=on`,
    '-numa', 'node,memdev=mem',
  ];
  if (image.kernel) {
    if (!image.initrd) throw new Error('bootGuest: image.kernel needs image.initrd');
    const append = ['console=ttyS0', image.append ?? 'quiet', opts.append ?? ''].filter(Boolean).join(' ');
    args.push('-kernel', image.kernel, '-initrd', image.initrd, '-append', append);
  }
  if (image.disk) {
    args.push('-drive', `file=${image.disk},format=${diskFormat(image.disk)},if=virtio,snapshot=on`);
  }
  if (!image.kernel && !image.disk) throw new Error('bootGuest: image has neither kernel nor disk');
  if (qmpPath) args.push('-qmp', `unix:${qmpPath},server=on,wait=off`);
  const nics = [...(opts.nic ? [opts.nic] : []), ...(opts.nics ?? [])];
  nics.forEach((nic, i) => args.push(...nicArgs(nic, i)));
  args.push(...(opts.extraArgs ?? []));
  return args;
}

/**
 * Starts a guest and (unless waitReady is false) waits for its shell. On any
 * failure QEMU is killed before the error is thrown.
 */
export async function bootGuest(opts: BootOptions = {}): Promise<Guest> {
  let image = opts.image;
  if (!image) {
    const { defaultGuestImage } = await import('./guest.js');
    image = await defaultGuestImage();
  }
  const name = opts.name ?? `guest${++guestCounter}`;
  const tmp = await mkdtemp(join(tmpdir(), 'vun-qemu-'));
  const qmpPath = opts.qmp ? join(tmp, 'qmp.sock') : undefined;
  const args = qemuArgs(opts, image, qmpPath);
  const bin = opts.qemu ?? process.env.VUN_QEMU ?? 'qemu-system-x86_64';
  const proc = spawnTracked(bin, args, { name: `qemu:${name}`, stdio: ['pipe', 'pipe', 'pipe'] });
  const guest = new Guest(name, proc, args, image, tmp, qmpPath);
  if (opts.waitReady === false) return guest;
  const timeout = opts.readyTimeoutMs ?? (image.kernel && !image.login ? 120_000 : 600_000);
  try {
    await guest.waitReady(timeout);
  } catch (e) {
    await guest.kill();
    throw e;
  }
  return guest;
}
