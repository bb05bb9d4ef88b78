/**
 * The backend's forwards by id: those given at start and those added and
 * removed at run time through the control endpoint.
 *
 * Theory of operation. Each forward gets the next id ("1", "2", ...; never
 * reused while the backend runs); a range (`tcp:8000-8010:8000-8010`) is
 * one forward with one id, added and removed whole. The stack does the
 * binding and unbinding (Stack.addForward/removeForward, all ports of a
 * range or none); this table only names them and refuses what would clash
 * before anything is bound: a forward that overlaps a live one (same
 * protocol, intersecting host ports, the same host address or either a
 * wildcard: src/net/forward.ts forwardsOverlap; 409), or more ports added
 * at run time than the fd budget reserved for them (`runtimeReserve`
 * ports, see src/fd-budget.ts: FD_RESERVE.runtimeForwards; 409 too). A bind
 * the kernel refuses keeps its errno code (EADDRINUSE -> 409, EACCES ->
 * 403, EADDRNOTAVAIL -> 400, in the control server).
 */
import { type ForwardSpec, formatForwardSpec, forwardPortCount, forwardsOverlap, overlapMessage } from '../net/forward.js';
import type { Stack } from '../net/stack.js';

export interface ForwardRecord {
  id: string;
  protocol: 'tcp' | 'udp';
  hostAddress: string;
  /** The first host port. */
  hostPort: number;
  /** The first guest port. */
  guestPort: number;
  /** Ports in the range (1 for a single port). */
  count: number;
  /** The spec in command-line form (ranges as N-M). */
  spec: string;
  /** 'start' (command line / library options) or 'control' (added at run time). */
  origin: 'start' | 'control';
  added: string;
}

/** A refusal the control server turns into an HTTP status. */
export class ForwardError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

const BIND_ERROR_STATUS: Record<string, number> = { EADDRINUSE: 409, EACCES: 403, EPERM: 403, EADDRNOTAVAIL: 400, EINVAL: 400 };

export class ForwardTable {
  private readonly records = new Map<string, { record: ForwardRecord; spec: ForwardSpec }>();
  private nextId = 1;
  /** Ports of the live forwards added at run time. */
  private runtimePorts = 0;

  /** `started`: the forwards the stack bound at start; `runtimeReserve`: how many more ports may be live at once. */
  constructor(private readonly stack: Stack, started: readonly ForwardSpec[], readonly runtimeReserve: number) {
    for (const spec of started) this.remember(spec, 'start');
  }

  list(): ForwardRecord[] {
    return [...this.records.values()].map((r) => r.record);
  }

  /** Bind a forward now; rejects with a ForwardError (status and reason). */
  async add(spec: ForwardSpec): Promise<ForwardRecord> {
    for (const { record, spec: other } of this.records.values()) {
      if (forwardsOverlap(spec, other)) throw new ForwardError(409, `${overlapMessage(spec, other)}: forward ${record.id}`);
    }
    const ports = forwardPortCount(spec);
    if (this.runtimePorts + ports > this.runtimeReserve) {
      throw new ForwardError(
        409,
        `${formatForwardSpec(spec)}: ${ports} port(s) asked, ${this.runtimeReserve - this.runtimePorts} of the ${this.runtimeReserve} the file descriptor budget reserves for forwards added at run time are free (remove one first)`,
      );
    }
    this.runtimePorts += ports;
    try {
      await this.stack.addForward(spec);
    } catch (err) {
      this.runtimePorts -= ports;
      const code = (err as NodeJS.ErrnoException).code;
      const status = (code !== undefined ? BIND_ERROR_STATUS[code] : undefined) ?? 500;
      const reason = code === 'EADDRINUSE' ? `port ${(err as { port?: number }).port ?? spec.hostPort} in use` : (err as Error).message;
      throw new ForwardError(status, `${formatForwardSpec(spec)}: ${reason}`);
    }
    return this.remember(spec, 'control');
  }

  /** Unbind forward `id` (see Stack.removeForward); rejects with a 404 ForwardError when there is none. */
  async remove(id: string, closeFlows: boolean): Promise<ForwardRecord> {
    const entry = this.records.get(id);
    if (!entry) throw new ForwardError(404, `no forward ${id}`);
    this.records.delete(id);
    if (entry.record.origin === 'control') this.runtimePorts -= entry.record.count;
    await this.stack.removeForward(entry.spec, closeFlows);
    return entry.record;
  }

  private remember(spec: ForwardSpec, origin: ForwardRecord['origin']): ForwardRecord {
    const id = String(this.nextId++);
    const record: ForwardRecord = {
      id,
      protocol: spec.protocol,
      hostAddress: spec.hostAddress,
      hostPort: spec.hostPort,
      guestPort: spec.guestPort,
      count: forwardPortCount(spec),
      spec: formatForwardSpec(spec),
      origin,
      added: new Date().toISOString(),
    };
    this.records.set(id, { record, spec });
    return record;
  }
}
