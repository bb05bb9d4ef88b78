/**
 * vhost-user-net as a library.
 *
 * - `startBackend` runs the whole thing (what the CLI does) inside your process.
 * - The pieces compose on their own: a `VhostUserServer` serving any
 *   `VirtioDevice`; the `VirtioNetDevice` delivering frames to any
 *   `FrameSink`; the NAT `Stack`, which is a FrameSink with no event loop of
 *   its own (frames in through `receive`, out through a `NetLink`, time through
 *   `tick(now)`), in the manner of libslirp.
 * - `VhostUserFrontend` and `NetDriver` are a vhost-user frontend of our own,
 *   for tests and benchmarks of any vhost-user net backend.
 */
export { startBackend, DEFAULT_GUEST_MAC, consoleLogger, type Backend, type BackendOptions } from './runtime.js';
export { VhostUserServer, type ServerOptions } from './vhost-user/server.js';
export { SocketPathInUseError } from './vhost-user/listen-socket.js';
export { VhostUserSession, type Logger } from './vhost-user/session.js';
export { VirtioNetDevice, type VirtioNetDeviceOptions } from './virtio/net-device.js';
export type { VirtioDevice, QueueSetup } from './virtio/device.js';
export { GuestMemory, type GuestMemoryRegion } from './virtio/guest-memory.js';
export { Stack, type StackOptions } from './net/stack.js';
export { defaultStackConfig, resolveStackConfig } from './net/config.js';
export type { StackConfig, Clock, HostIO, Counters } from './net/context.js';
export type { FrameSink, NetLink, FrameOffload } from './net/link.js';
export { CounterSet } from './net/counters.js';
export { PcapWriter } from './net/pcap.js';
export { checkForwards, formatForwardSpec, forwardsOverlap, parseForwardSpec, type ForwardSpec } from './net/forward.js';
export { parseIPv4, ipv4ToString } from './net/ip-address.js';
export { parseInAny, inanyToString, type InAny } from './net/inany.js';
export { VhostUserFrontend, type FrontendOptions } from './frontend/frontend.js';
export { NetDriver, type NetDriverOptions } from './frontend/net-driver.js';
