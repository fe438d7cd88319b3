// A writing transaction whose writes or compares reach several members,
// committed atomically at one meta revision R on all of them
// (docs/notes/cross-member-transactions.md):
//
//   1. R is allocated as a priority revision on every member of the transaction
//      (Clock.tickCross): nothing allocated after it may land there before it.
//   2. Wait until each member has shown the last revision allocated to it before
//      R (fencing a stalled one, as readers do). From then on nothing lands on
//      those members until R does: the state read next is exact.
//   3. Read the state, evaluate the compares, split the branch taken by member.
//   4. Prepare: every secondary member gets a record m/xtxn/R holding its part
//      as the member transaction that applies it. While it is there nothing may
//      close R on that member without resolving the transaction
//      (commit/close-revision.ts).
//   5. Commit: the primary member applies its part at R together with its own
//      record m/xtxn/R. That member transaction is the decision.
//   6. Apply every secondary's part (each deletes its record), answer the
//      client, then drop the primary's record.
//
// If this proxy dies anywhere, whoever next needs one of those members past R
// (a reader's fence, the watch hub, a clock rebuild) resolves the records it
// meets: after step 5, the parts are applied; before it, the primary is closed
// at R and the records are dropped. Readers see nothing of R on any member
// until every member of the transaction has shown R, so none sees part of it.

import { cmp, headerRevision, op, txn } from '../../proto/build.js';
import type { RequestOp, TxnRequest, TxnResponse } from '../../proto/gen/rpc.js';
import { Errors, unavailable } from '../../errors/etcd-error.js';
import { ClockKind, clockGuardValue, encodeClockRecord } from '../../store/clock-record.js';
import { crossRecordKey, InternalKey, toMemberKey, toMemberRange } from '../../store/keyspace.js';
import { CrossRole, encodeCrossRecord } from '../../commit/cross-record.js';
import { abandonSecondary, closeRevision, peersOf, type MemberPeers } from '../../commit/close-revision.js';
import { holdIfAsked } from '../../util/test-hold.js';
import type { CrossTick } from '../../clock/clock.js';
import type { KvContext } from '../context.js';
import { compareToPath } from '../txn-compare.js';
import { rangeId, type ClientRange, type TxnPlan } from '../txn-plan.js';
import { cachedMeta } from './member-ops.js';
import { leaseIndexOps } from './member-txn.js';
import { deleteTargets, splitCross, type CrossOps, type MemberPart } from './cross-ops.js';
import { readDeferred, serveSnapshotRead } from './write-io.js';
import { checkTakenPuts, compareLookup, type WriteState } from './write-state.js';
import type { TxnOutcome } from './outcome.js';

/** Test-only: hold the protocol after a step (see util/test-hold.ts). */
export const CROSS_HOLD_ENV = 'METAETCD_TEST_CROSS_HOLD';

const MAX_ATTEMPTS = 8;
const APPLY_RETRY_PAUSE_MS = 100;

export async function executeCross(ctx: KvContext, req: TxnRequest, plan: TxnPlan): Promise<TxnOutcome> {
  const members = plan.crossMembers!;
  for (const m of members) {
    if (!ctx.members.get(m).timeline.link.connected) throw unavailable(`member ${m} is unavailable (its watch stream is down)`);
  }
  for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
    let done: TxnOutcome | undefined;
    try {
      done = await attemptCross(ctx, req, plan, members);
    } catch (err) {
      ctx.metrics.crossMemberTxns.inc({ outcome: 'failed' });
      throw err;
    }
    if (done) {
      ctx.metrics.crossMemberTxns.inc({ outcome: 'committed' });
      return done;
    }
    ctx.metrics.crossMemberTxns.inc({ outcome: 'retried' });
  }
  ctx.metrics.crossMemberTxns.inc({ outcome: 'failed' });
  throw unavailable(`a transaction over members ${members.join(', ')} kept losing its revision; gave up after ${MAX_ATTEMPTS} attempts`);
}

/** One attempt at one revision: the outcome, or undefined when it must go again at a new one. */
async function attemptCross(ctx: KvContext, req: TxnRequest, plan: TxnPlan, members: number[]): Promise<TxnOutcome | undefined> {
  const tick = await ctx.clock.tickCross(members);
  const R = tick.revision;
  const peers = peersOfContext(ctx);
  let split: CrossOps;
  let state: WriteState;
  let path: boolean[];
  let primary: number;
  try {
    const deadline = Date.now() + ctx.limits.requestTimeoutMs;
    await Promise.all(members.map((m, i) => ctx.members.get(m).timeline.waitFor(tick.prior[i]!, deadline)));
    state = await readState(ctx, plan, req, members);
    path = compareToPath(req, compareLookup(state));
    await checkTakenPuts(req, path, state, (id) => ctx.leases.exists(id));
    split = splitCross(ctx.router, req, path, state, members, R);
    // A read at an explicit revision fails (compacted, future) before anything is applied, as in etcd;
    // R is this transaction's own revision, so R and above are in the future.
    for (const d of split.reads) {
      if (d.request.revision >= BigInt(R)) throw Errors.futureRev();
      if (d.request.revision > 0n) await serveSnapshotRead(ctx, d);
    }
    primary = pickPrimary(split);
  } catch (err) {
    void closeAll(peers, members, R);
    throw err;
  }
  if ([...split.parts.values()].every((p) => p.ops.ops.length === 0)) return nothingWritten(ctx, peers, members, split, path, R);
  const secondaries = members.filter((m) => m !== primary);
  const applies = new Map(secondaries.map((s) => [s, applyTxn(split.parts.get(s)!, tick)]));

  // 4. Prepare.
  const prepared = await Promise.allSettled(
    secondaries.map(async (s) => {
      const record = encodeCrossRecord({ role: CrossRole.Secondary, primary, members: [], apply: applies.get(s)! });
      const resp = await ctx.members.get(s).client.txn(txn([cmp.valueLess(InternalKey.clock, clockGuardValue(R))], [op.put(crossRecordKey(R), record)]), {
        context: `preparing the transaction at ${R}`,
      });
      if (!resp.succeeded) throw new LostRevision();
    }),
  );
  const failed = prepared.find((p): p is PromiseRejectedResult => p.status === 'rejected');
  if (failed) {
    void abort(ctx, peers, primary, secondaries, R);
    if (failed.reason instanceof LostRevision) return undefined;
    throw failed.reason;
  }
  await holdIfAsked(CROSS_HOLD_ENV, 'after-prepare', ctx.log);

  // 5. Commit.
  const committed = await commitPrimary(ctx, peers, split.parts.get(primary)!, secondaries, state, tick);
  if (!committed) {
    void abort(ctx, peers, primary, secondaries, R);
    return undefined;
  }
  await holdIfAsked(CROSS_HOLD_ENV, 'after-commit', ctx.log);

  // 6. Apply.
  await Promise.all(secondaries.map((s) => applySecondary(ctx, s, applies.get(s)!, split.parts.get(s)!, R)));
  await holdIfAsked(CROSS_HOLD_ENV, 'after-apply', ctx.log);
  ctx.members.get(primary).client
    .txn(txn([], [op.deleteRange(crossRecordKey(R))]))
    .catch((err: unknown) => ctx.log.debug({ revision: R, err: String(err) }, 'could not clear a committed transaction record; the next fence will'));
  for (const p of split.parts.values()) if (p.ops.leases.size > 0) ctx.leases.attached(p.ops.leases);
  const later = split.reads.filter((d) => d.request.revision === 0n);
  if (later.length > 0) await readDeferred(ctx, later, R);
  ctx.metrics.writeAttempts.inc({ outcome: 'ok' });
  return { revision: R, succeeded: path[0]!, responses: split.responses };
}

/**
 * The branch taken writes nothing: as in etcd, the answer is the state before
 * (R − 1). R itself can only be closed: it stays an empty revision. The state is
 * exact at R − 1 only if nothing landed at or above R on any member before it was
 * read — which a reader that fenced R meanwhile (this attempt took longer than
 * --fence-after) would have allowed. So R must be closed by this attempt on every
 * member; if some member had already passed it, the attempt goes again at a new
 * revision (a writing branch is caught the same way by its guards).
 */
async function nothingWritten(ctx: KvContext, peers: MemberPeers, members: number[], split: CrossOps, path: boolean[], R: number): Promise<TxnOutcome | undefined> {
  const closed = await Promise.all(members.map((m) => closeRevision(peers, m, R)));
  if (!closed.every(Boolean)) return undefined;
  const later = split.reads.filter((d) => d.request.revision === 0n);
  for (const d of later) d.revision = R - 1;
  if (later.length > 0) await readDeferred(ctx, later, R - 1);
  return { revision: R - 1, succeeded: path[0]!, responses: split.responses };
}

/** The member that decides: the one with the most ops (ties: the lowest slot). */
function pickPrimary(split: CrossOps): number {
  let best: MemberPart | undefined;
  for (const p of split.parts.values()) if (!best || p.ops.ops.length > best.ops.ops.length) best = p;
  return best!.member;
}

/** A secondary's part, applied at R once: its ops, lease index entries, the removal of its record, its clock record. */
function applyTxn(part: MemberPart, tick: CrossTick): TxnRequest {
  const record = encodeClockRecord({ revision: tick.revision, kind: ClockKind.Write, allocation: tick.allocation, ranks: part.ranks });
  return txn(
    [cmp.valueLess(InternalKey.clock, clockGuardValue(tick.revision))],
    [...part.ops.ops, ...leaseIndexOps(part.ops), op.deleteRange(crossRecordKey(tick.revision)), op.put(InternalKey.clock, record)],
  );
}

/**
 * The decision: the primary's part with its record, guarded by its clock and by
 * the keys it read (nothing should have changed them; if something did, nothing
 * applies and the transaction goes again). Returns whether it committed; when the
 * answer is lost, the primary's record tells.
 */
async function commitPrimary(ctx: KvContext, peers: MemberPeers, part: MemberPart, secondaries: number[], state: WriteState, tick: CrossTick): Promise<boolean> {
  const R = tick.revision;
  const m = part.member;
  const guards = [cmp.valueLess(InternalKey.clock, clockGuardValue(R))];
  for (const [k, kv] of state.keys) {
    if (ctx.router.memberOf(Buffer.from(k, 'latin1').subarray(1)) === m) guards.push(cmp.modEqual(Buffer.from(k, 'latin1'), kv ? Number(kv.modRevision) : 0));
  }
  const record = encodeCrossRecord({ role: CrossRole.Primary, primary: m, members: secondaries });
  const clock = encodeClockRecord({ revision: R, kind: ClockKind.Write, allocation: tick.allocation, ranks: part.ranks });
  const request = txn(guards, [...part.ops.ops, ...leaseIndexOps(part.ops), op.put(crossRecordKey(R), record), op.put(InternalKey.clock, clock)]);
  let resp: TxnResponse;
  try {
    resp = await ctx.members.get(m).client.txn(request, { context: `committing the transaction at ${R}` });
  } catch (err) {
    // Unknown outcome: close R on the primary (a no-op if it committed) and look for the record.
    try {
      await closeRevision(peers, m, R);
      const got = await ctx.members.get(m).client.range({ key: crossRecordKey(R) });
      if (got.kvs.length === 0) return false;
    } catch {
      throw unavailable(`the transaction at revision ${R} may or may not have committed (member ${m}: ${String(err)}); it will be completed or discarded by the next reader`);
    }
    learnWritten(ctx, part, R, undefined);
    return true;
  }
  if (!resp.succeeded) return false;
  learnWritten(ctx, part, R, headerRevision(resp));
  return true;
}

/** Applies a secondary's part (idempotent: once its clock has R, nothing more applies), retrying within the request timeout. */
async function applySecondary(ctx: KvContext, s: number, apply: TxnRequest, part: MemberPart, R: number): Promise<void> {
  const deadline = Date.now() + ctx.limits.requestTimeoutMs;
  for (;;) {
    try {
      const resp = await ctx.members.get(s).client.txn(apply, { context: `applying the transaction at ${R}` });
      learnWritten(ctx, part, R, resp.succeeded ? headerRevision(resp) : undefined);
      return;
    } catch (err) {
      if (Date.now() >= deadline) {
        throw unavailable(`the transaction committed at revision ${R}, but applying it on member ${s} failed (${String(err)}); it will be completed by the next reader of that member`);
      }
      await new Promise((r) => setTimeout(r, APPLY_RETRY_PAUSE_MS));
    }
  }
}

/** Tells the key cache what a part wrote (when this proxy applied it and knows the member revision). */
function learnWritten(ctx: KvContext, part: MemberPart, R: number, memberRevision: number | undefined): void {
  if (memberRevision === undefined) return;
  for (const w of part.ops.written) ctx.keyCache.set(w.key, cachedMeta(w, R, memberRevision));
}

/** Gives up on R: the secondaries drop their records, and R is closed everywhere. Failures are left to readers' fences. */
async function abort(ctx: KvContext, peers: MemberPeers, primary: number, secondaries: number[], R: number): Promise<void> {
  await Promise.allSettled([closeRevision(peers, primary, R), ...secondaries.map((s) => abandonSecondary(ctx.members.get(s).client, R))]);
}

/** Closes R on every member of a transaction that stopped before preparing. */
async function closeAll(peers: MemberPeers, members: number[], R: number): Promise<void> {
  await Promise.allSettled(members.map((m) => closeRevision(peers, m, R)));
}

/** Reads the keys and ranges the transaction depends on, on each of its members, and merges them. */
async function readState(ctx: KvContext, plan: TxnPlan, req: TxnRequest, members: number[]): Promise<WriteState> {
  const deletes = deleteTargets(req);
  const keys = uniqueKeys([...plan.stateKeys, ...deletes.keys]);
  const ranges = uniqueRanges([...plan.stateRanges, ...deletes.ranges]);
  const out: WriteState = { memberRevision: 0, clock: undefined, keys: new Map(), ranges: new Map() };
  for (const r of ranges) out.ranges.set(rangeId(r.key, r.rangeEnd), []);
  await Promise.all(
    members.map(async (m) => {
      const mine = keys.filter((k) => ctx.router.memberOf(k) === m);
      const spans = ranges.filter((r) => ctx.router.membersOf(r.key, r.rangeEnd).includes(m));
      const ops: RequestOp[] = [
        ...mine.map((k) => op.range(toMemberKey(k))),
        ...spans.map((r) => {
          const mr = toMemberRange(r.key, r.rangeEnd);
          return op.range(mr.key, { rangeEnd: mr.rangeEnd });
        }),
      ];
      if (ops.length === 0) return;
      const resp = await ctx.members.get(m).client.txn(txn([], ops), { readOnly: true, context: 'reading the state of a transaction over several members' });
      mine.forEach((k, i) => out.keys.set(toMemberKey(k).toString('latin1'), resp.responses[i]?.response?.$case === 'responseRange' ? resp.responses[i]!.response!.value.kvs[0] : undefined));
      spans.forEach((r, i) => {
        const got = resp.responses[mine.length + i]?.response;
        if (got?.$case === 'responseRange') out.ranges.get(rangeId(r.key, r.rangeEnd))!.push(...got.value.kvs);
      });
    }),
  );
  for (const kvs of out.ranges.values()) kvs.sort((a, b) => Buffer.compare(a.key, b.key));
  return out;
}

function uniqueKeys(keys: Buffer[]): Buffer[] {
  return [...new Map(keys.map((k) => [k.toString('latin1'), k])).values()];
}

function uniqueRanges(ranges: ClientRange[]): ClientRange[] {
  return [...new Map(ranges.map((r) => [rangeId(r.key, r.rangeEnd), r])).values()];
}

function peersOfContext(ctx: KvContext): MemberPeers {
  return peersOf(ctx.members.clients, ctx.log, ctx.metrics);
}

/** A member's clock had already passed R: the attempt goes again at a new revision. */
class LostRevision extends Error {
  constructor() {
    super('the revision was closed before the transaction could use it');
  }
}
