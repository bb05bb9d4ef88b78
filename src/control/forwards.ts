/**
 * The backend's forwarded ports by id: those given at start and those added
 * and removed at run time through the control endpoint.
 *
 * Theory of operation. Each forward gets the next id ("1", "2", ...; never
 * reused while the backend runs). The stack does the binding and
 * unbinding (Stack.addForward/removeForward); this table only names them
 * and refuses what would clash before anything is bound: the same protocol,
 * host address and port as a live forward (409), or more forwards added at
 * run time than the fd budget reserved for them (`runtimeReserve`, see
 * src/fd-budget.ts: FD_RESERVE.runtimeForwards; 409 too). A bind the kernel
 * refuses keeps its errno code (EADDRINUSE -> 409, EACCES -> 403,
 * EADDRNOTAVAIL -> 400, in the control server).
 */
import type { ForwardSpec } from '../net/forward.js';
import type { Stack } from '../net/stack.js';

export interface ForwardRecord {
  id: string;
  protocol: 'tcp' | 'udp';
  hostAddress: string;
  hostPort: number;
  guestPort: number;
  /** The spec in command-line form. */
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

export function formatForwardSpec(f: ForwardSpec): string {
  const host = f.hostAddress.includes(':') ? `[${f.hostAddress}]` : f.hostAddress;
  return `${f.protocol}:${host}:${f.hostPort}:${f.guestPort}`;
}

const BIND_ERROR_STATUS: Record<string, number> = { EADDRINUSE: 409, EACCES: 403, EPERM: 403, EADDRNOTAVAIL: 400, EINVAL: 400 };

export class ForwardTable {
  private readonly records = new Map<string, { record: ForwardRecord; spec: ForwardSpec }>();
  private nextId = 1;
  private runtimeAdded = 0;

  /** `started`: the forwards the stack bound at start; `runtimeReserve`: how many more may be live at once. */
  constructor(private readonly stack: Stack, started: readonly ForwardSpec[], readonly runtimeReserve: number) {
    for (const spec of started) this.remember(spec, 'start');
  }

  list(): ForwardRecord[] {
    return [...this.records.values()].map((r) => r.record);
  }

  /** Bind a forward now; rejects with a ForwardError (status and reason). */
  async add(spec: ForwardSpec): Promise<ForwardRecord> {
    for (const { spec: other } of this.records.values()) {
      if (other.protocol === spec.protocol && other.hostPort === spec.hostPort && other.hostAddress === spec.hostAddress) {
        throw new ForwardError(409, `${formatForwardSpec(spec)}: ${spec.protocol} port ${spec.hostPort} on ${spec.hostAddress} is already forwarded`);
      }
    }
    if (this.runtimeAdded >= this.runtimeReserve) {
      throw new ForwardError(409, `${this.runtimeReserve} forwards added at run time are live: the file descriptor budget reserves no more (remove one first)`);
    }
    this.runtimeAdded++;
    try {
      await this.stack.addForward(spec);
    } catch (err) {
      this.runtimeAdded--;
      const code = (err as NodeJS.ErrnoException).code;
      const status = (code !== undefined ? BIND_ERROR_STATUS[code] : undefined) ?? 500;
      const reason = code === 'EADDRINUSE' ? `port ${spec.hostPort} in use` : (err as Error).message;
      throw new ForwardError(status, `${formatForwardSpec(spec)}: ${reason}`);
    }
    return this.remember(spec, 'control');
  }

  /** Unbind forward `id` (see Stack.removeForward); rejects with a 404 ForwardError when there is none. */
  async remove(id: string, closeFlows: boolean): Promise<ForwardRecord> {
    const entry = this.records.get(id);
    if (!entry) throw new ForwardError(404, `no forward ${id}`);
    this.records.delete(id);
    if (entry.record.origin === 'control') this.runtimeAdded--;
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
      spec: formatForwardSpec(spec),
      origin,
      added: new Date().toISOString(),
    };
    this.records.set(id, { record, spec });
    return record;
  }
}
