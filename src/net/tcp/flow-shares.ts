/**
 * Shares of the TCP flow table (config.maxTcpFlows) between the guest's own
 * connections (outbound) and connections to forwarded ports (inbound).
 *
 * Theory of operation. Without forwards every flow is the guest's. Once
 * there are forwards, inbound flows together may hold `tcpInboundShare` of
 * maxTcpFlows and the guest's flows the rest; within the inbound share each
 * forward may hold `tcpForwardShare` of it (an equal split between the
 * forwards by default). So host peers connecting to forwarded ports, however
 * many and however idle, cannot take the slots the guest needs to connect
 * out, the guest cannot take the slots forwarded connections need, and one
 * busy forward cannot take another's. A flow counts against its share (and
 * the inbound total) from its first moment to its last: a forwarded
 * connection the guest never answers holds a slot of its forward only, for
 * the handshake timeout. A full share refuses the new flow at once, after
 * reclaiming its own oldest TIME_WAIT flow if it has one (kept in a set per
 * share, so a full share costs no scan). Every limit is at least one and is
 * derived from maxTcpFlows whenever a forward is added or removed (at run
 * time, through the control endpoint). A removed forward's share keeps
 * counting its flows, still under the inbound share, until they end; once
 * the last forward is gone the guest's share is the whole table again, so
 * for as long as such flows drain the table may hold that many more than
 * maxTcpFlows (at most the inbound share).
 */
import type { StackConfig } from '../context.js';

/** What a share needs of a flow: reclaiming a lingering one closes it. */
export interface SharedFlow {
  close(resetHost: boolean): void;
}

export class FlowShare<F extends SharedFlow> {
  /** Flows counted against this share. */
  count = 0;
  limit: number;
  /** This share's flows in TIME_WAIT, oldest first (the ones a new flow may reclaim). */
  readonly lingering = new Set<F>();

  constructor(readonly parent: FlowShare<F> | null, limit: number) {
    this.limit = limit;
  }
}

export type FlowShareConfig = Pick<StackConfig, 'maxTcpFlows' | 'tcpInboundShare' | 'tcpForwardShare'>;

export class FlowShares<F extends SharedFlow> {
  /** The guest's own connections. */
  readonly outbound: FlowShare<F>;
  /** All forwarded connections together: the parent of each forward's share. */
  readonly inbound: FlowShare<F>;
  private readonly forwards: FlowShare<F>[] = [];

  constructor(private readonly config: FlowShareConfig) {
    this.outbound = new FlowShare<F>(null, config.maxTcpFlows);
    this.inbound = new FlowShare<F>(null, 0);
  }

  /** A share for one more forward (the limits of the others are derived again). */
  addForward(): FlowShare<F> {
    const share = new FlowShare<F>(this.inbound, 0);
    this.forwards.push(share);
    this.derive();
    return share;
  }

  /** Forget a forward's share (its flows still count against it and the inbound share until they end); the others' limits are derived again. */
  removeForward(share: FlowShare<F>): void {
    const i = this.forwards.indexOf(share);
    if (i < 0) return;
    this.forwards.splice(i, 1);
    this.derive();
  }

  private derive(): void {
    const max = this.config.maxTcpFlows;
    if (this.forwards.length === 0) {
      this.inbound.limit = 0;
      this.outbound.limit = max;
      return;
    }
    const inbound = Math.max(1, Math.min(max - 1, Math.floor(max * this.config.tcpInboundShare)));
    this.inbound.limit = inbound;
    this.outbound.limit = Math.max(1, max - inbound);
    const fraction = this.config.tcpForwardShare ?? 1 / this.forwards.length;
    const each = Math.max(1, Math.floor(inbound * fraction));
    for (const forward of this.forwards) forward.limit = each;
  }

  /**
   * Room for one more flow in `share` and its parent: true if there is,
   * possibly after reclaiming the oldest TIME_WAIT flow of a full one (whose
   * close calls `removed`).
   */
  admit(share: FlowShare<F>): boolean {
    for (let s: FlowShare<F> | null = share; s !== null; s = s.parent) {
      if (s.count < s.limit) continue;
      const oldest = s.lingering.values().next();
      if (oldest.done) return false;
      oldest.value.close(false);
      if (s.count >= s.limit) return false;
    }
    return true;
  }

  added(share: FlowShare<F>): void {
    for (let s: FlowShare<F> | null = share; s !== null; s = s.parent) s.count++;
  }

  lingering(share: FlowShare<F>, flow: F): void {
    for (let s: FlowShare<F> | null = share; s !== null; s = s.parent) s.lingering.add(flow);
  }

  removed(share: FlowShare<F>, flow: F): void {
    for (let s: FlowShare<F> | null = share; s !== null; s = s.parent) {
      s.count--;
      s.lingering.delete(flow);
    }
  }
}
