// The write path's member and snapshot reads, and the release of unused
// revisions: everything a write does upstream besides its own member transaction.

import { headerRevision, txn } from '../../proto/build.js';
import type { RequestOp, TxnRequest } from '../../proto/gen/rpc.js';
import { unavailable } from '../../errors/etcd-error.js';
import { closeRevision, peersOf } from '../../commit/close-revision.js';
import { toMemberKey } from '../../store/keyspace.js';
import type { KvContext } from '../context.js';
import { rangeAt } from '../range.js';
import { resolveReadPoint } from '../read-point.js';
import type { TxnPlan } from '../txn-plan.js';
import { READ_AFTER, type PastRevisions } from './taken-ranges.js';
import type { DeferredRead } from './responses.js';
import { stateFrom, stateFromCache, type WriteState } from './write-state.js';

/**
 * The state of the keys the write depends on: from the key cache when enough (`cached`, when the
 * caller has looked it up already), else read from the member.
 */
export async function readState(
  ctx: KvContext,
  member: number,
  plan: TxnPlan,
  reads: RequestOp[],
  cached: WriteState | undefined = stateFromCache(ctx.keyCache, plan),
): Promise<WriteState> {
  if (cached) return cached;
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
    await Promise.all(
      reads.map(async (d) => {
        const members = ctx.router.membersOf(d.request.key, d.request.rangeEnd);
        const got = await rangeAt(ctx, d.request, members, await resolveReadPoint(ctx, members, d.revision, false));
        Object.assign(d.response, { kvs: got.kvs, more: got.more, count: BigInt(got.count) });
      }),
    );
  } catch (err) {
    throw unavailable(`the transaction was applied at revision ${R}, but reading its ranges over other members failed: ${err instanceof Error ? err.message : String(err)}`);
  }
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
