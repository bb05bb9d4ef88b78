/**
 * The cost of the indirect-table amplification attack on the transmit ring
 * (hardening item 6), measured in-process on the real VirtioNetDevice.
 *
 *   node --import tsx bench/chain-walk.ts [tableEntries=32768] [chains=32768]
 *
 * The guest's transmit ring has the largest accepted size (32768). Every one
 * of `chains` ring descriptors is an INDIRECT descriptor naming the same
 * table of `tableEntries` zero-length descriptors chained by NEXT: one table
 * written once, walked once per chain. The script publishes them all, kicks
 * once and lets the device's per-turn continuations run until every chain is
 * back in the used ring, then prints the process CPU time (process.cpuUsage)
 * over that, the number of event-loop turns it took and the longest turn.
 * Not part of `npm run bench`: it measures a defence, not throughput.
 */
import { DriverQueue } from '../src/virtio/driver-queue.js';
import { VIRTIO_F_VERSION_1, VIRTIO_RING_F_INDIRECT_DESC, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_SIZE } from '../src/virtio/features.js';
import { GuestMemory } from '../src/virtio/guest-memory.js';
import { TX_QUEUE, VirtioNetDevice } from '../src/virtio/net-device.js';

const QUEUE_SIZE = 32768;
const BASE = 0x4000_0000;

const tableEntries = Number(process.argv[2] ?? 32768);
const chains = Number(process.argv[3] ?? QUEUE_SIZE);
if (!(tableEntries >= 1 && tableEntries <= QUEUE_SIZE && chains >= 1 && chains <= QUEUE_SIZE)) {
  process.stderr.write('usage: chain-walk.ts [tableEntries 1..32768] [chains 1..32768]\n');
  process.exit(2);
}

const layout = DriverQueue.layout(QUEUE_SIZE, BASE);
const tableGpa = Math.ceil(layout.end / 16) * 16;
const memSize = tableGpa - BASE + tableEntries * VIRTQ_DESC_SIZE + 4096;
const bytes = new Uint8Array(memSize);
const memory = new GuestMemory([{ guestAddr: BASE, size: memSize, userAddr: 0x7f00_0000_0000, bytes }]);
let frames = 0;
const dev = new VirtioNetDevice({ mac: Uint8Array.of(0x52, 0x55, 0x0a, 0, 2, 2), mtu: 1500, sink: { receive: () => void frames++ } });
let broken: string | null = null;
dev.onBroken = (_q, reason) => (broken = reason);
dev.setAckedFeatures(VIRTIO_F_VERSION_1 | VIRTIO_RING_F_INDIRECT_DESC);
dev.setMemory(memory);
const tx = new DriverQueue(bytes, { size: QUEUE_SIZE, ...layout }, { base: BASE });

// One table of zero-length descriptors, chained; every ring descriptor points at it.
for (let k = 0; k < tableEntries; k++) {
  const last = k === tableEntries - 1;
  tx.writeDescriptorAt(tableGpa + k * VIRTQ_DESC_SIZE, tableGpa, 0, last ? 0 : VIRTQ_DESC_F_NEXT, last ? 0 : k + 1);
}
for (let i = 0; i < chains; i++) {
  tx.writeDescriptor(i, tableGpa, tableEntries * VIRTQ_DESC_SIZE, VIRTQ_DESC_F_INDIRECT, 0);
  tx.pushAvail(i);
}
tx.publish();

let turns = 0;
let longestTurnMs = 0;
const cpu0 = process.cpuUsage();
const t0 = performance.now();
let turnStart = t0;
dev.startQueue(TX_QUEUE, { size: QUEUE_SIZE, ...layout, nextAvail: 0, kickFd: -1, callFd: -1, eventIdx: false, indirect: true });
dev.kick(TX_QUEUE);
const poll = (): void => {
  const now = performance.now();
  longestTurnMs = Math.max(longestTurnMs, now - turnStart);
  turnStart = now;
  turns++;
  if (tx.readUsedIdx() !== (chains & 0xffff) && broken === null) {
    setImmediate(poll);
    return;
  }
  const cpu = process.cpuUsage(cpu0);
  const q = dev.queue(TX_QUEUE)!;
  const counters = Object.entries(dev.counters.snapshot())
    .map(([k, v]) => `${k}=${v}`)
    .join(' ');
  process.stdout.write(
    `table ${tableEntries} x ${chains} chains (queue ${QUEUE_SIZE}): ` +
      `cpu ${((cpu.user + cpu.system) / 1e6).toFixed(3)} s, wall ${((performance.now() - t0) / 1000).toFixed(3)} s, ` +
      `${turns} turns, longest turn ${longestTurnMs.toFixed(1)} ms; used ${tx.readUsedIdx()}, frames ${frames}, ` +
      `dropped ${q.droppedChains}${broken !== null ? `, broken: ${broken}` : ''}${counters ? `; ${counters}` : ''}\n`,
  );
  dev.reset();
};
setImmediate(poll);
