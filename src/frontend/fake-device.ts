/**
 * A recording VirtioDevice, for testing the vhost-user layer (session,
 * server, frontend) without the virtio-net device: it records every call
 * the session makes, keeps the current memory and queue setups, and watches
 * each started ring's kick eventfd (native.watchEventfd) so tests can see
 * real kicks arrive. `signalCall(i)` interrupts the frontend as a device
 * would. It never touches ring memory.
 */
import { native, type FdWatcher } from '../native/index.js';
import type { GuestMemory } from '../virtio/guest-memory.js';
import type { QueueSetup, VirtioDevice } from '../virtio/device.js';
import { VIRTIO_F_VERSION_1, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_STATUS, VIRTIO_RING_F_EVENT_IDX } from '../virtio/features.js';

export type DeviceCall =
  | ['setAckedFeatures', bigint]
  | ['setMemory', number /* regions, 0 = null */]
  | ['startQueue', number, QueueSetup]
  | ['enableQueue', number, boolean]
  | ['setCallFd', number, number]
  | ['stopQueue', number, number]
  | ['kick', number]
  | ['reset'];

export class RecordingDevice implements VirtioDevice {
  deviceFeatures: bigint = VIRTIO_F_VERSION_1 | VIRTIO_NET_F_MRG_RXBUF | VIRTIO_RING_F_EVENT_IDX | VIRTIO_NET_F_MAC | VIRTIO_NET_F_STATUS;
  maxQueues = 2;
  readonly calls: DeviceCall[] = [];
  memory: GuestMemory | null = null;
  ackedFeatures = 0n;
  /** Running queues and their setup. */
  readonly running = new Map<number, QueueSetup>();
  readonly enabled = new Map<number, boolean>();
  /** Kicks seen per queue (through the kick eventfd or kick()). */
  readonly kicks = new Map<number, number>();
  /** What stopQueue returns per queue (default: the setup's nextAvail). */
  readonly stopBase = new Map<number, number>();
  onBroken?: (queueIndex: number, reason: string) => void;
  private readonly watchers = new Map<number, FdWatcher>();
  private readonly config: Uint8Array;

  constructor(mac: readonly number[] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56]) {
    // virtio_net_config: mac[6], status u16, max_virtqueue_pairs u16, mtu u16.
    this.config = new Uint8Array(12);
    this.config.set(mac, 0);
    const v = new DataView(this.config.buffer);
    v.setUint16(6, 1, true); // VIRTIO_NET_S_LINK_UP
    v.setUint16(8, 1, true);
    v.setUint16(10, 1500, true);
  }

  configSpace(): Uint8Array {
    return this.config;
  }
  setAckedFeatures(features: bigint): void {
    this.ackedFeatures = features;
    this.calls.push(['setAckedFeatures', features]);
  }
  setMemory(memory: GuestMemory | null): void {
    this.memory = memory;
    this.calls.push(['setMemory', memory === null ? 0 : memory.regionList.length]);
  }
  startQueue(index: number, setup: QueueSetup): void {
    if (index < 0 || index >= this.maxQueues) throw new RangeError(`bad queue ${index}`);
    this.calls.push(['startQueue', index, { ...setup }]);
    this.running.set(index, { ...setup });
    if (setup.kickFd >= 0) {
      this.watchers.set(
        index,
        native.watchEventfd(setup.kickFd, () => this.kick(index)),
      );
    }
  }
  enableQueue(index: number, enabled: boolean): void {
    this.calls.push(['enableQueue', index, enabled]);
    this.enabled.set(index, enabled);
  }
  setCallFd(index: number, callFd: number): void {
    this.calls.push(['setCallFd', index, callFd]);
    const s = this.running.get(index);
    if (s) s.callFd = callFd;
  }
  stopQueue(index: number): number {
    const s = this.running.get(index);
    const base = this.stopBase.get(index) ?? s?.nextAvail ?? 0;
    this.calls.push(['stopQueue', index, base]);
    this.watchers.get(index)?.close();
    this.watchers.delete(index);
    this.running.delete(index);
    this.enabled.delete(index);
    return base;
  }
  kick(index: number): void {
    this.kicks.set(index, (this.kicks.get(index) ?? 0) + 1);
    this.calls.push(['kick', index]);
  }
  reset(): void {
    this.calls.push(['reset']);
    for (const w of this.watchers.values()) w.close();
    this.watchers.clear();
    this.running.clear();
    this.enabled.clear();
    this.ackedFeatures = 0n;
  }
  /** Interrupt the frontend on queue `index` (signal its call eventfd). */
  signalCall(index: number): boolean {
    const s = this.running.get(index);
    if (!s || s.callFd < 0) return false;
    native.eventfdSignal(s.callFd);
    return true;
  }
  /** The names of the calls so far. */
  callNames(): string[] {
    return this.calls.map((c) => c[0]);
  }
}
