/**
 * A classic libpcap file writer (the format tcpdump/wireshark read):
 * a 24-byte global header (magic 0xa1b2c3d4 written little-endian, version
 * 2.4, snaplen 65535, LINKTYPE_ETHERNET) then per frame a 16-byte record
 * header (seconds, microseconds, captured length, original length) and the
 * bytes, truncated to the snaplen.
 *
 * Records are appended to an in-memory buffer and written with one
 * fs.writeSync when it fills (64 KiB), on `flush()` (the stack calls it at
 * the end of each batch) and on `close()`: bounded memory, few syscalls.
 *
 * Nothing throws: the writer sits on the per-packet path and in timers. A
 * failed write (disk full, EAGAIN on a non-blocking pipe, a bad fd) stops
 * the capture for good and keeps the error in `error` for the owner to
 * report (the stack counts 'pcap.error' and logs it once).
 */
import { closeSync, openSync, writeSync } from 'node:fs';

export const PCAP_MAGIC = 0xa1b2c3d4;
export const LINKTYPE_ETHERNET = 1;
export const PCAP_SNAPLEN = 65535;
const BUFFER_SIZE = 64 * 1024;

export class PcapWriter {
  private fd: number | null;
  private readonly buf = new Uint8Array(BUFFER_SIZE);
  private readonly dv = new DataView(this.buf.buffer);
  private used = 0;
  private readonly ownsFd: boolean;
  frames = 0;
  /** The write failure that stopped the capture, or null. */
  error: Error | null = null;

  /** Open (truncate) `path` (throws at construction if it cannot), or take an already open fd. */
  constructor(target: string | number) {
    this.ownsFd = typeof target !== 'number';
    this.fd = typeof target === 'number' ? target : openSync(target, 'w');
    this.dv.setUint32(0, PCAP_MAGIC, true);
    this.dv.setUint16(4, 2, true);
    this.dv.setUint16(6, 4, true);
    this.dv.setInt32(8, 0, true); // thiszone
    this.dv.setUint32(12, 0, true); // sigfigs
    this.dv.setUint32(16, PCAP_SNAPLEN, true);
    this.dv.setUint32(20, LINKTYPE_ETHERNET, true);
    this.used = 24;
  }

  /** Append one frame with its timestamp in milliseconds (fractions kept to the microsecond). */
  writeFrame(frame: Uint8Array, timestampMs: number): void {
    if (this.fd === null) return;
    const caplen = Math.min(frame.length, PCAP_SNAPLEN);
    if (this.used + 16 + caplen > BUFFER_SIZE) this.flush();
    const micros = Math.max(0, Math.round(timestampMs * 1000));
    const sec = Math.floor(micros / 1e6);
    this.dv.setUint32(this.used, sec >>> 0, true);
    this.dv.setUint32(this.used + 4, micros - sec * 1e6, true);
    this.dv.setUint32(this.used + 8, caplen, true);
    this.dv.setUint32(this.used + 12, frame.length, true);
    this.used += 16;
    if (caplen > BUFFER_SIZE - this.used) {
      // Larger than the buffer: write through.
      this.flush();
      if (this.fd === null) return;
      try {
        writeAll(this.fd, frame, caplen);
      } catch (err) {
        this.fail(err);
        return;
      }
    } else {
      this.buf.set(frame.subarray(0, caplen), this.used);
      this.used += caplen;
    }
    this.frames++;
  }

  flush(): void {
    if (this.fd === null || this.used === 0) return;
    try {
      writeAll(this.fd, this.buf, this.used);
    } catch (err) {
      this.fail(err);
      return;
    }
    this.used = 0;
  }

  close(): void {
    if (this.fd === null) return;
    this.flush();
    const fd = this.fd;
    this.fd = null;
    if (fd === null) return;
    try {
      closeSync(fd);
    } catch (err) {
      this.error ??= err instanceof Error ? err : new Error(String(err));
    }
  }

  private fail(err: unknown): void {
    this.error = err instanceof Error ? err : new Error(String(err));
    const fd = this.fd;
    this.fd = null;
    this.used = 0;
    if (fd !== null && this.ownsFd) {
      try {
        closeSync(fd);
      } catch {
        /* already failing */
      }
    }
  }
}

function writeAll(fd: number, bytes: Uint8Array, length: number): void {
  let off = 0;
  while (off < length) off += writeSync(fd, bytes, off, length - off);
}
