// Executing transactions (and, through them, Put and single-member deletes):
// a transaction that writes nothing is served from a snapshot (read-only.ts),
// one that writes goes to its member as one member transaction
// (write-executor.ts). A writing transaction whose branch taken writes nothing,
// as far as the key cache tells (a failed compare with a branch of reads, a
// delete of a key known to be absent), is first tried at a snapshot, so that it
// takes no revision, as in etcd; when the snapshot disagrees, it is a write.

import type { TxnRequest } from '../../proto/gen/rpc.js';
import { toMemberKey } from '../../store/keyspace.js';
import type { KvContext } from '../context.js';
import { compareToPath } from '../txn-compare.js';
import { planTxn } from '../txn-plan.js';
import { executeIfNothingWritten, executeReadOnly } from './read-only.js';
import { walkTaken } from './walk.js';
import { executeWrite } from './write-executor.js';
import { executeCross } from './cross-member.js';
import { compareLookup, stateFromCache, type WriteState } from './write-state.js';
import type { TxnOutcome } from './outcome.js';

export type { TxnOutcome };

/** Runs `req`: read-only, on one member, or across several (cross-member.ts). */
export async function executeTxn(ctx: KvContext, req: TxnRequest): Promise<TxnOutcome> {
  const plan = planTxn(ctx.router, req);
  if (plan.writeMember === undefined && !plan.crossMembers) return executeReadOnly(ctx, req, plan);
  const cached = stateFromCache(ctx.keyCache, plan);
  if (cached && cacheSaysNothingWritten(ctx, req, cached)) {
    const quiet = await executeIfNothingWritten(ctx, req, plan);
    if (quiet) return quiet;
    // The snapshot disagreed with the cache: look it up again for the write.
    return plan.crossMembers ? executeCross(ctx, req, plan) : executeWrite(ctx, req, plan, plan.writeMember!);
  }
  if (plan.crossMembers) return executeCross(ctx, req, plan);
  return executeWrite(ctx, req, plan, plan.writeMember!, cached);
}

/**
 * Whether, by the key cache alone (no round trip), the branch `req` takes
 * writes nothing, given the keys' state from the cache: no put, and only deletes
 * of single keys the cache knows are absent.
 */
function cacheSaysNothingWritten(ctx: KvContext, req: TxnRequest, state: WriteState): boolean {
  let writes = false;
  walkTaken(req, compareToPath(req, compareLookup(state)), {
    op(r) {
      if (r.$case === 'requestRange') return;
      if (r.$case === 'requestDeleteRange' && r.value.rangeEnd.length === 0) {
        const known = ctx.keyCache.get(toMemberKey(r.value.key).toString('latin1'));
        if (known && !known.present) return;
      }
      writes = true;
    },
  });
  return !writes;
}
