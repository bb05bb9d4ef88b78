/**
 * The contract between the vhost-user session (src/vhost-user/) and a virtio
 * device implementation (src/virtio/net-device.ts).
 *
 * The session owns the socket, the memory table and the per-ring settings the
 * frontend sends; it validates them and then tells the device what to do
 * through this interface. The device owns the rings while they run: it
 * watches the kick fd, processes descriptors, signals the call fd. A device
 * never throws for guest-caused problems; a corrupt ring makes it stop that
 * ring (and report through `onBroken`), never the process.
 */
import type { GuestMemory } from './guest-memory.js';

/** Everything needed to run one split virtqueue. Addresses are guest-physical (already translated from frontend addresses by the session). */
export interface QueueSetup {
  /** Queue size (power of two, 1..32768), from SET_VRING_NUM. */
  size: number;
  descAddr: number;
  availAddr: number;
  usedAddr: number;
  /** Where to resume: the next available-ring index to consume (SET_VRING_BASE). */
  nextAvail: number;
  /** Kick eventfd from the frontend (the device watches it), or -1 when polling was requested (invalid-fd flag): then the device processes on `kick()` calls only. */
  kickFd: number;
  /** Call eventfd to interrupt the guest, or -1 (no interrupts). */
  callFd: number;
  /** Whether VIRTIO_RING_F_EVENT_IDX was negotiated. */
  eventIdx: boolean;
  /** Whether VIRTIO_RING_F_INDIRECT_DESC was negotiated. */
  indirect: boolean;
}

export interface VirtioDevice {
  /** Device feature bits offered (virtio feature bits; the session adds VHOST_USER_F_PROTOCOL_FEATURES). */
  readonly deviceFeatures: bigint;
  /** Maximum number of virtqueues the frontend may configure. */
  readonly maxQueues: number;
  /** Config space bytes (little-endian fields), whole; the session slices for GET_CONFIG. */
  configSpace(): Uint8Array;
  /** The frontend acknowledged these features (SET_FEATURES). Called before queues start. */
  setAckedFeatures(features: bigint): void;
  /** Memory table replaced (SET_MEM_TABLE / ADD_MEM_REG / REM_MEM_REG). Running rings must re-resolve their views. The old memory may be unmapped right after this returns. */
  setMemory(memory: GuestMemory | null): void;
  /** Start processing queue `index` with the given setup. Ownership of kickFd/callFd stays with the session (the device must not close them). */
  startQueue(index: number, setup: QueueSetup): void;
  /** SET_VRING_ENABLE: a started ring that is disabled must not pass frames. */
  enableQueue(index: number, enabled: boolean): void;
  /** SET_VRING_CALL while running: new call fd (or -1). */
  setCallFd(index: number, callFd: number): void;
  /** Stop queue `index` (GET_VRING_BASE) and return the next available index to resume from. Stops watching its kick fd before returning. Returns the configured base if the queue never started. */
  stopQueue(index: number): number;
  /** Process queue `index` as if it had been kicked (in-band kick, or polling). */
  kick(index: number): void;
  /** Device reset (RESET_OWNER, disconnect, status 0): stop all queues, forget negotiated state. */
  reset(): void;
  /** Called by the device when a ring turned out corrupt and was stopped. The session may then answer with a device status of NEEDS_RESET, and logs it. */
  onBroken?: (queueIndex: number, reason: string) => void;
}
