// The write path, for a transaction whose writes all go to member M:
//   1. In parallel: take a meta revision R for M from the clock, and read the
//      current state of the keys the transaction compares or puts (or take it
//      from the key cache, or from the caller, which read it to tell whether the
//      transaction writes at all: see execute.ts).
//   2. Evaluate the client's compares locally (etcd semantics), choose the
//      branches, and send one member transaction (member-txn.ts) that applies
//      the chosen ops at R only if M's clock is below R and every key read is
//      unchanged; otherwise it reads the clock and the state again.
//   3. Retry on what the attempt says (AttemptOutcome): with the refreshed state
//      in the same revision when only the state changed; with a new revision when
//      M's clock already passed every slot; after waiting when a priority write
//      this one must follow has not landed yet.
//   Revisions taken and then not used are released (clock(M) := top of their
//   slot group, if still lower) so readers do not wait for them.
//
// A writing transaction's reads of the current state that reach other members
// are served after the write lands at R, as snapshot reads at R (or R - 1 when no
// write came before them): exactly what etcd's atomic transaction reads, since no
// other write has R — provided no write follows them in the branch taken, which
// is refused before anything is sent.

import type { Tick } from '../../clock/clock.js';
import type { Slot } from '../../clock/slot-group.js';
import { headerRevision } from '../../proto/build.js';
import type { RequestOp, ResponseOp, TxnRequest, TxnResponse } from '../../proto/gen/rpc.js';
import { unavailable } from '../../errors/etcd-error.js';
import type { KvContext } from '../context.js';
import { compareToPath } from '../txn-compare.js';
import type { TxnPlan } from '../txn-plan.js';
import type { TxnOutcome } from './outcome.js';
import { cachedMeta, compileClientOps, type ClientOps, type WriteInput } from './member-ops.js';
import { attemptOutcome, batchPartOf, buildMemberTxn } from './member-txn.js';
import type { BatchPart } from '../../members/write-batcher.js';
import { translateResponses } from './responses.js';
import { checkTakenRanges, type PastRevisions } from './taken-ranges.js';
import { readDeferred, readState, releaseUnused, resolvePastRanges } from './write-io.js';
import { checkTakenPuts, compareLookup, refreshedState, stateOps, type WriteState } from './write-state.js';
import { executeIfNothingWritten } from './read-only.js';
import { walkTaken } from './walk.js';

const MAX_ATTEMPTS = 32;
/** Order losses after which a write asks the clock for a priority revision. */
const PRIORITY_AFTER_LOSSES = 3;
/** Pause between reconnect attempts a write asks for while the member answers but its stream does not come up. */
const STREAM_RETRY_PAUSE_MS = 50;

/**
 * Runs a writing transaction on `member`; `known` is the state of its keys when already looked up (from
 * the key cache, or read from the member): the guards check it, so it may be stale.
 */
export async function executeWrite(ctx: KvContext, req: TxnRequest, plan: TxnPlan, member: number, known?: WriteState): Promise<TxnOutcome> {
  // A revision taken for a member whose stream is down could not be resolved, and
  // would hold back every watcher until --watch-timeout: wait for the stream to
  // come back (a member that just restarted), or fail once it is known unreachable.
  if (!ctx.members.get(member).timeline.link.connected && !(await streamUsable(ctx, member))) {
    throw unavailable(`member ${member} is unavailable (its watch stream is down)`);
  }
  const reads = stateOps(plan);
  const past = await resolvePastRanges(ctx, req, member);
  const run = await WriteRun.start(ctx, req, plan, member, reads, past, known);
  for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
    const done = await run.attempt();
    if (done) return done;
  }
  run.finishTick(undefined);
  throw unavailable(`member ${member}: too many conflicting concurrent writes, gave up after ${MAX_ATTEMPTS} attempts`);
}

/** One write's attempts, holding one tick at a time; every tick it takes is finished exactly once. */
class WriteRun implements WriteInput {
  path: boolean[] = [];
  /** After losing the race to the member a few times, the write asks for a revision nothing allocated later may overtake. */
  private orderLosses = 0;

  private constructor(
    private readonly ctx: KvContext,
    readonly req: TxnRequest,
    readonly plan: TxnPlan,
    private readonly member: number,
    private readonly reads: RequestOp[],
    readonly past: PastRevisions,
    private tick: Tick,
    public state: WriteState,
  ) {}

  static async start(ctx: KvContext, req: TxnRequest, plan: TxnPlan, member: number, reads: RequestOp[], past: PastRevisions, known?: WriteState): Promise<WriteRun> {
    const tickP = takeTick(ctx, member, false);
    const stateP = readState(ctx, member, plan, reads, known);
    let tick: Tick;
    let state: WriteState;
    try {
      [tick, state] = await Promise.all([tickP, stateP]);
    } catch (err) {
      tickP.then((t) => finishTick(ctx, member, t, undefined), () => undefined);
      throw err;
    }
    return new WriteRun(ctx, req, plan, member, reads, past, tick, state);
  }

  /** One attempt: the outcome when the write landed, undefined to try again. */
  async attempt(): Promise<TxnOutcome | undefined> {
    const own = await this.compile();
    const part = this.ctx.limits.batchWrites ? batchPartOf(this, own, this.tick, this.reads) : undefined;
    if (part) return this.attemptInBatch(part, own);
    const write = buildMemberTxn(this, own, this.tick, this.reads);
    const resp = await this.send(write.txn);
    const outcome = attemptOutcome(resp, write, this.tick, this.plan, this.reads);
    switch (outcome.kind) {
      case 'landed':
        return this.land(outcome.slot, outcome.responses, own, resp);
      case 'stale':
        this.state = outcome.state;
        this.ctx.metrics.writeAttempts.inc({ outcome: 'stale' });
        return undefined;
      case 'priority-wait':
        this.state = outcome.state;
        this.ctx.metrics.writeAttempts.inc({ outcome: 'priority' });
        await this.waitForPriority();
        return undefined;
      case 'order-lost':
        this.state = outcome.state;
        await this.retake();
        return undefined;
      case 'all-slots-taken':
        await this.retake();
        return undefined;
    }
  }

  /** The write is done with its tick (landed at `landed`, gave up, or moves to a new one). */
  finishTick(landed: number | undefined): void {
    finishTick(this.ctx, this.member, this.tick, landed);
  }

  /** The client ops at the tick's revision from the current state, after checking the leases its puts use. */
  private async compile(): Promise<ClientOps> {
    try {
      this.path = compareToPath(this.req, compareLookup(this.state));
      await checkTakenPuts(this.req, this.path, this.state, (id) => this.ctx.leases.exists(id));
      checkTakenRanges(this.req, this.path, this.ctx.compaction.revision, this.past);
      return compileClientOps(this, this.tick.revision);
    } catch (err) {
      this.finishTick(undefined);
      throw err;
    }
  }

  /** Sends alone, in the sequencer's order for this member (in the member's write queue when writes are batched). */
  private async send(request: TxnRequest): Promise<TxnResponse> {
    const m = this.ctx.members.get(this.member);
    return this.inTurn(() => (this.ctx.limits.batchWrites ? m.writes.submitSolo(request) : m.client.txn(request)));
  }

  /** Queues `submit` in the sequencer's order for this member; the tick is given up if it fails. */
  private async inTurn<T>(submit: () => Promise<T>): Promise<T> {
    const seq = this.ctx.members.get(this.member).sequencer;
    try {
      await seq.turn(this.tick.revision);
      const queued = submit();
      seq.sent(this.tick.revision);
      return await queued.finally(() => seq.finished());
    } catch (err) {
      this.finishTick(undefined);
      throw err;
    }
  }

  /** One attempt as part of a batch with the member's other ready writes. */
  private async attemptInBatch(part: BatchPart, own: ClientOps): Promise<TxnOutcome | undefined> {
    const outcome = await this.inTurn(() => this.ctx.members.get(this.member).writes.submit(part));
    if (outcome.kind === 'order-lost') {
      // Nothing of the batch was applied: a later write reached the member first.
      await this.retake();
      return undefined;
    }
    const resp: TxnResponse = { ...outcome.nested, header: outcome.header };
    if (outcome.nested.succeeded) return this.land({ revision: part.revision, allocation: part.allocation }, outcome.nested.responses, own, resp);
    // A key changed since it was read. The batch moved the member's clock past this
    // write's revision, so it goes again with the fresh state and a new revision.
    this.state = refreshedState(resp, this.plan, this.reads);
    this.ctx.metrics.writeAttempts.inc({ outcome: 'stale' });
    this.finishTick(undefined);
    // With the fresh state the branch taken may write nothing (a create of a key that
    // exists after all): answered from a snapshot, it takes no second revision.
    if (!takenBranchWrites(this.req, this.state)) {
      const quiet = await executeIfNothingWritten(this.ctx, this.req, this.plan);
      if (quiet) return quiet;
    }
    this.tick = await takeTick(this.ctx, this.member, false);
    return undefined;
  }

  private async land(slot: Slot, responses: ResponseOp[], own: ClientOps, resp: TxnResponse): Promise<TxnOutcome> {
    const { ctx } = this;
    ctx.metrics.writeAttempts.inc({ outcome: 'ok' });
    const R = slot.revision;
    this.finishTick(R);
    if (own.leases.size > 0) ctx.leases.attached(own.leases);
    const m = headerRevision(resp);
    for (const w of own.written) ctx.keyCache.set(w.key, cachedMeta(w, R, m));
    const out = translateResponses(this, responses, R, m);
    if (out.deferred.length > 0) await readDeferred(ctx, out.deferred, R);
    return { revision: R, succeeded: this.path[0]!, responses: out.responses };
  }

  private async waitForPriority(): Promise<void> {
    try {
      await this.ctx.members.get(this.member).timeline.waitFor(this.tick.first, Date.now() + this.ctx.limits.requestTimeoutMs);
    } catch (err) {
      this.finishTick(undefined);
      throw err;
    }
  }

  /** Lost the race to the member: moves to a new tick (a priority one after a few losses). */
  private async retake(): Promise<void> {
    this.ctx.metrics.writeAttempts.inc({ outcome: 'order' });
    this.orderLosses++;
    this.finishTick(undefined);
    this.tick = await takeTick(this.ctx, this.member, this.orderLosses >= PRIORITY_AFTER_LOSSES);
  }
}

/** Whether the branch `req` takes in `state` puts or deletes anything (a delete counts, whatever it would find). */
function takenBranchWrites(req: TxnRequest, state: WriteState): boolean {
  let writes = false;
  walkTaken(req, compareToPath(req, compareLookup(state)), {
    op(r) {
      if (r.$case !== 'requestRange') writes = true;
    },
  });
  return writes;
}

/**
 * Waits for the member's watch stream to be up, within the request timeout. A
 * reconnect attempt that fails ends the wait early only when the member does not
 * answer a direct call either: after an event-loop stall the stream's channel may
 * fail its first attempts while the member itself is fine, and the write should
 * then wait for the stream rather than fail.
 */
async function streamUsable(ctx: KvContext, member: number): Promise<boolean> {
  const m = ctx.members.get(member);
  const deadline = Date.now() + ctx.limits.requestTimeoutMs;
  for (;;) {
    if (await m.timeline.link.usable(deadline)) return true;
    const left = deadline - Date.now();
    if (left <= 0) return false;
    const answers = await m.client.status({ timeoutMs: left, context: 'is the member reachable while its watch stream is down' }).then(
      () => true,
      () => false,
    );
    if (!answers) return false;
    await new Promise((r) => setTimeout(r, Math.min(STREAM_RETRY_PAUSE_MS, Math.max(0, deadline - Date.now()))));
  }
}

/** A tick for a write on `member`, registered with the member's sequencer as soon as it is handed out. */
function takeTick(ctx: KvContext, member: number, priority: boolean): Promise<Tick> {
  return ctx.clock.tick(member, priority).then((t) => {
    ctx.members.get(member).sequencer.register(t.revision);
    return t;
  });
}

/**
 * A write is done with `tick`: the sequencer stops holding later revisions back
 * for it (a no-op when it went out), and its slot group may release what no
 * write of the group used.
 */
function finishTick(ctx: KvContext, member: number, tick: Tick, landed: number | undefined): void {
  ctx.members.get(member).sequencer.sent(tick.revision);
  if (tick.group.finish(landed)) releaseUnused(ctx, member, tick.group.top.revision);
}
