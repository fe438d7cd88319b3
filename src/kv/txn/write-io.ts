// The write path's member and snapshot reads, and the release of unused
// revisions: everything a write does upstream besides its own member transaction.

import { asRange, headerRevision, op, txn } from '../../proto/build.js';
import type { RequestOp, TxnRequest } from '../../proto/gen/rpc.js';
import { unavailable } from '../../errors/etcd-error.js';
import { closeRevision, peersOf } from '../../commit/close-revision.js';
import { toMemberKey, toMemberRange } from '../../store/keyspace.js';
import type { KvContext } from '../context.js';
import { rangeAt } from '../range.js';
import { resolveReadPoint } from '../read-point.js';
import { rangeId, type ClientRange, type TxnPlan } from '../txn-plan.js';
import { READ_AFTER, type PastRevisions } from './taken-ranges.js';
import type { DeferredRead } from './responses.js';
import { stateFrom, stateFromCache, stateOps, type WriteState } from './write-state.js';

/**
 * The state of the keys the write depends on: `known` when the caller has it (from the key cache
 * or its own read), else from the key cache when enough, else read from the member.
 */
export async function readState(ctx: KvContext, member: number, plan: TxnPlan, reads: RequestOp[], known?: WriteState): Promise<WriteState> {
  const ready = known ?? stateFromCache(ctx.keyCache, plan);
  if (ready) return ready;
  const client = ctx.members.get(member).client;
  if (reads.length === 1 && plan.stateKeys.length === 1) {
    const key = toMemberKey(plan.stateKeys[0]!);
    // A possibly stale (serializable) read is fine: the write's guards check it.
    const resp = await client.range({ key, serializable: true });
    return {
      memberRevision: headerRevision(resp),
      clock: undefined,
      keys: new Map([[key.toString('latin1'), resp.kvs[0]]]),
      ranges: new Map(),
    };
  }
  const resp = await client.txn(txn([], reads), { readOnly: true });
  return stateFrom(headerRevision(resp), undefined, plan, resp.responses);
}

/** What a write reads before taking a revision when the key cache cannot tell whether it writes anything. */
export interface StateAndDeletes {
  state: WriteState;
  /** rangeId(client key, range end) → how many keys a delete of it would remove. */
  deleteCounts: Map<string, number>;
}

/**
 * One member read: the state of the write's keys (unless `known`, from the key
 * cache) and how many keys each of `deletes` finds, so that the caller can tell
 * whether the branch taken writes anything before it takes a revision.
 * Linearizable, except for the commonest case, the state of one key alone (a
 * create or update of a key the cache does not know), which goes through the
 * member's read batcher: concurrent ones then share a member call with each
 * other and with Range reads. That read may be a moment behind the member's
 * leader; a key created within that moment then looks absent, and the create
 * takes a revision it leaves empty (its guard finds the key, as with the cache).
 */
export async function readStateAndDeletes(ctx: KvContext, member: number, plan: TxnPlan, known: WriteState | undefined, deletes: ClientRange[]): Promise<StateAndDeletes> {
  if (!known && deletes.length === 0 && plan.stateKeys.length === 1 && plan.stateRanges.length === 0) {
    const key = toMemberKey(plan.stateKeys[0]!);
    const got = await ctx.members.get(member).reads.read({ key }, false);
    const keys = new Map([[key.toString('latin1'), got.range.kvs[0]]]);
    return { state: { memberRevision: headerRevision(got.range), clock: undefined, keys, ranges: new Map() }, deleteCounts: new Map() };
  }
  const stateReads = known ? [] : stateOps(plan);
  const countReads = deletes.map((d) => {
    const mr = toMemberRange(d.key, d.rangeEnd);
    return op.range(mr.key, { rangeEnd: mr.rangeEnd, countOnly: true });
  });
  const resp = await ctx.members.get(member).client.txn(txn([], [...stateReads, ...countReads]), { readOnly: true });
  const state = known ?? stateFrom(headerRevision(resp), undefined, plan, resp.responses);
  const deleteCounts = new Map(deletes.map((d, i) => [rangeId(d.key, d.rangeEnd), Number(asRange(resp.responses[stateReads.length + i]).count)]));
  return { state, deleteCounts };
}

/**
 * Member revisions for range ops that read at a past meta revision, resolved
 * before the write takes its own revision (so that waiting for completeness never
 * waits on it). A revision that cannot be read (future, compacted) is kept as its
 * error: etcd checks only the ranges on the taken path, so the error is raised
 * only if that range is taken (see checkTakenRanges).
 */
export async function resolvePastRanges(ctx: KvContext, req: TxnRequest, member: number): Promise<PastRevisions> {
  const revs = new Set<number>();
  // Every branch: which one is taken is known only once the state is read.
  const walk = (t: TxnRequest) => {
    for (const o of [...t.success, ...t.failure]) {
      if (o.request?.$case === 'requestRange' && o.request.value.revision > 0n) revs.add(Number(o.request.value.revision));
      if (o.request?.$case === 'requestTxn') walk(o.request.value);
    }
  };
  walk(req);
  const out = new Map<number, number | Error | typeof READ_AFTER>();
  for (const rev of revs) {
    try {
      const point = await resolveReadPoint(ctx, [member], rev, false);
      out.set(rev, point.batches.has(member) ? READ_AFTER : point.memberRevisions.get(member)!);
    } catch (err) {
      if (!(err instanceof Error)) throw err;
      out.set(rev, err);
    }
  }
  return out;
}

/**
 * Fills the range responses of a landed write that read other members: each is a
 * snapshot read at the revision etcd's atomic transaction would have read at (R,
 * or R - 1 when no write came before it), which every proxy serves exactly. The
 * write has been applied by now, so a failure says so.
 */
export async function readDeferred(ctx: KvContext, reads: DeferredRead[], R: number): Promise<void> {
  try {
    await Promise.all(reads.map((d) => serveSnapshotRead(ctx, d)));
  } catch (err) {
    throw unavailable(`the transaction was applied at revision ${R}, but reading its ranges over other members failed: ${err instanceof Error ? err.message : String(err)}`);
  }
}

/** Fills one range of a transaction's branch with a snapshot read at its revision. */
export async function serveSnapshotRead(ctx: KvContext, d: DeferredRead): Promise<void> {
  const members = ctx.router.membersOf(d.request.key, d.request.rangeEnd);
  const got = await rangeAt(ctx, d.request, members, await resolveReadPoint(ctx, members, d.revision, false));
  Object.assign(d.response, { kvs: got.kvs, more: got.more, count: BigInt(got.count) });
}

/**
 * Releases revisions up to `top` that no write of their slot group used
 * (clock := top, if still lower), so readers do not wait for them. Not awaited:
 * when it fails, readers fence the revisions themselves.
 */
export function releaseUnused(ctx: KvContext, member: number, top: number): void {
  closeRevision(peersOf(ctx.members.clients, ctx.log, ctx.metrics), member, top)
    .catch((err: unknown) => ctx.log.debug({ member, revision: top, err: String(err) }, 'could not release unused revisions; readers will fence them'));
}
