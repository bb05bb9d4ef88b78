/**
 * Guest memory: the one bounds-checked path from a guest-controlled address
 * to bytes.
 *
 * Theory of operation. The frontend (QEMU, cloud-hypervisor, or our own test
 * frontend) shares guest RAM with us as a set of regions, each an fd we map.
 * Every region is known by three addresses: its guest-physical address (what
 * descriptors in the rings hold), the frontend's own virtual address (what
 * SET_VRING_ADDR holds), and the offset into the fd. This module keeps the
 * regions sorted and non-overlapping (the vhost-user layer validates that
 * before constructing it) and answers exactly two questions: "give me a view of
 * [gpa, gpa+len)" and "what guest-physical address is this frontend address".
 * A range must lie wholly inside one region; anything else is refused (null),
 * never clamped. All arithmetic is on JS numbers, which are exact below 2^53:
 * the vhost-user decoder refuses larger values before they get here.
 */

export interface GuestMemoryRegion {
  /** Guest-physical address of the first byte. */
  readonly guestAddr: number;
  /** Length in bytes (> 0). */
  readonly size: number;
  /** The frontend's virtual address of the first byte (vhost-user userspace_addr). */
  readonly userAddr: number;
  /** The mapped bytes of this region, exactly `size` long. */
  readonly bytes: Uint8Array;
}

export class GuestMemory {
  private readonly regions: readonly GuestMemoryRegion[];

  /** `regions` must not overlap in guest-physical or user address space (checked: throws RangeError). */
  constructor(regions: readonly GuestMemoryRegion[]) {
    const sorted = [...regions].sort((a, b) => a.guestAddr - b.guestAddr);
    for (let i = 0; i < sorted.length; i++) {
      const r = sorted[i]!;
      if (!(r.size > 0) || r.bytes.byteLength !== r.size) throw new RangeError('guest memory region size mismatch');
      if (!Number.isSafeInteger(r.guestAddr + r.size) || !Number.isSafeInteger(r.userAddr + r.size)) {
        throw new RangeError('guest memory region beyond 2^53');
      }
      if (i > 0) {
        const prev = sorted[i - 1]!;
        if (prev.guestAddr + prev.size > r.guestAddr) throw new RangeError('guest memory regions overlap');
      }
      for (let j = 0; j < i; j++) {
        const o = sorted[j]!;
        if (o.userAddr < r.userAddr + r.size && r.userAddr < o.userAddr + o.size) {
          throw new RangeError('guest memory regions overlap in frontend address space');
        }
      }
    }
    this.regions = sorted;
  }

  /** The regions, sorted by guest address. */
  get regionList(): readonly GuestMemoryRegion[] {
    return this.regions;
  }

  /** Find the region holding guest-physical `gpa`, or undefined. */
  private regionAt(gpa: number): GuestMemoryRegion | undefined {
    // Few regions (<= 32 in practice, usually 1-3): a linear scan is fastest.
    const regions = this.regions;
    for (let i = 0; i < regions.length; i++) {
      const r = regions[i]!;
      if (gpa >= r.guestAddr && gpa - r.guestAddr < r.size) return r;
    }
    return undefined;
  }

  /**
   * A view of guest-physical [gpa, gpa+len), or null if the range is not
   * wholly inside one region (or gpa/len are not non-negative safe integers).
   * The view aliases guest memory: no copy.
   */
  view(gpa: number, len: number): Uint8Array | null {
    if (!(gpa >= 0) || !(len >= 0) || !Number.isSafeInteger(gpa) || !Number.isSafeInteger(len)) return null;
    const r = this.regionAt(gpa);
    if (r === undefined) return null;
    const offset = gpa - r.guestAddr;
    if (len > r.size - offset) return null;
    return r.bytes.subarray(offset, offset + len);
  }

  /** Translate the frontend's virtual address range [uaddr, uaddr+len) to guest-physical, or null. */
  userToGuest(uaddr: number, len: number): number | null {
    if (!(uaddr >= 0) || !(len >= 0) || !Number.isSafeInteger(uaddr) || !Number.isSafeInteger(len)) return null;
    for (const r of this.regions) {
      if (uaddr >= r.userAddr && uaddr - r.userAddr < r.size) {
        const offset = uaddr - r.userAddr;
        if (len > r.size - offset) return null;
        return r.guestAddr + offset;
      }
    }
    return null;
  }
}
