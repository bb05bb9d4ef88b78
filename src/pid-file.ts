/**
 * `--pid-file PATH`: our pid, written once the backend serves, removed at
 * exit only if it still names us.
 *
 * Theory of operation. The pid is written to a temporary file beside PATH
 * and renamed over it, so a reader never sees a half-written file. At exit
 * PATH is read again: if it holds another pid (a second backend started
 * with the same PATH has taken it over) or is gone, it is left alone.
 */
import { readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';

export class PidFile {
  private removed = false;

  private constructor(readonly path: string, readonly pid: number) {}

  /** Write `pid` (default: ours) to `path`. Throws the fs error if it cannot. */
  static write(path: string, pid: number = process.pid): PidFile {
    const temporary = `${path}.${pid}.tmp`;
    writeFileSync(temporary, `${pid}\n`, { mode: 0o644 });
    try {
      renameSync(temporary, path);
    } catch (err) {
      try {
        unlinkSync(temporary);
      } catch {
        /* already gone */
      }
      throw err;
    }
    return new PidFile(path, pid);
  }

  /** Remove the file if it still holds our pid; true if it was removed. Idempotent. */
  remove(): boolean {
    if (this.removed) return false;
    this.removed = true;
    let text: string;
    try {
      text = readFileSync(this.path, 'latin1');
    } catch {
      return false;
    }
    if (text.trim() !== String(this.pid)) return false;
    try {
      unlinkSync(this.path);
      return true;
    } catch {
      return false;
    }
  }
}
