// Executing transactions (and, through them, Put and DeleteRange): a transaction
// that writes nothing is served from a snapshot (read-only.ts), one that writes
// goes to its member as one member transaction (write-executor.ts), one that
// writes or compares keys of several members is committed across them
// (cross-member.ts). A writing transaction whose branch taken writes nothing
// (a failed compare with a branch of reads, a delete that finds nothing) is
// served from a snapshot too, so that, as in etcd, it takes no revision: a
// revision once taken is used up. So whether it writes is settled before one
// is taken:
//   - by the key cache, when it knows every key involved: no round trip (the
//     common path);
//   - without looking, when every branch that can be taken puts (a plain Put):
//     the write path reads what it needs in parallel with taking its revision;
//   - otherwise by one member read of the state and of what the deletes find,
//     which the write path then starts from (one round trip before the revision).
// When the snapshot disagrees (the cache or the read was behind), it is a write.
// A guarded write first waits for this proxy's writes in flight on its keys
// (key-turns.ts), so that the cache already knows their outcome.

import type { DeleteRangeRequest, TxnRequest } from '../../proto/gen/rpc.js';
import { toMemberKey } from '../../store/keyspace.js';
import type { KvContext } from '../context.js';
import { compareToPath } from '../txn-compare.js';
import { planTxn, rangeId, type ClientRange, type TxnPlan } from '../txn-plan.js';
import { executeIfNothingWritten, executeReadOnly } from './read-only.js';
import { walkTaken } from './walk.js';
import { executeWrite } from './write-executor.js';
import { executeCross } from './cross-member.js';
import { readStateAndDeletes, type StateAndDeletes } from './write-io.js';
import { compareLookup, stateFromCache, type WriteState } from './write-state.js';
import type { TxnOutcome } from './outcome.js';

export type { TxnOutcome };

/** Runs `req`: read-only, on one member, or across several (cross-member.ts). */
export async function executeTxn(ctx: KvContext, req: TxnRequest): Promise<TxnOutcome> {
  const plan = planTxn(ctx.router, req);
  if (!plan.crossMembers && plan.writeMember === undefined) return executeReadOnly(ctx, req, plan);
  // After this proxy's writes in flight on the keys it compares (key-turns.ts).
  const turn = ctx.writeTurns.begin(req);
  try {
    await turn.wait();
    return await (plan.crossMembers ? executeCrossTxn(ctx, req, plan) : executeOnOneMember(ctx, req, plan, plan.writeMember!));
  } finally {
    turn.end();
  }
}

async function executeOnOneMember(ctx: KvContext, req: TxnRequest, plan: TxnPlan, member: number): Promise<TxnOutcome> {
  // A create's key the cache has not seen is taken as absent (the common case, a new
  // object): the member's guard checks it, and should it exist after all (written before
  // this proxy started), the create's revision is left empty — not a read before every create.
  const cached = stateFromCache(ctx.keyCache, plan);
  const told = cached ? takenWrites(req, cached, (d) => cacheFinds(ctx, d)) : 'unknown';
  if (told === 'writes' || (told === 'unknown' && alwaysPuts(req))) return executeWrite(ctx, req, plan, member, cached);
  if (told === 'unknown') {
    const read = await readStateAndDeletes(ctx, member, plan, cached, deleteTargets(req, plan));
    if (takenWrites(req, read.state, (d) => readFinds(read, d)) === 'writes') return executeWrite(ctx, req, plan, member, read.state);
  }
  const quiet = await executeIfNothingWritten(ctx, req, plan);
  // The snapshot disagreed (the cache or the read was behind): look the state up again for the write.
  return quiet ?? executeWrite(ctx, req, plan, member);
}

/**
 * A transaction over several members: unless the key cache tells that its branch
 * taken writes, a snapshot read first tells whether it writes at all; one that
 * writes nothing is answered from that snapshot (no revision). Otherwise the
 * cross-member commit decides, on an exact state. (A revision it took would be
 * used up even when the exact state then says nothing is written, and it costs
 * several round trips more than the read.)
 */
async function executeCrossTxn(ctx: KvContext, req: TxnRequest, plan: TxnPlan): Promise<TxnOutcome> {
  const cached = stateFromCache(ctx.keyCache, plan);
  if (!cached || takenWrites(req, cached, (d) => cacheFinds(ctx, d)) !== 'writes') {
    const quiet = await executeIfNothingWritten(ctx, req, plan);
    if (quiet) return quiet;
  }
  return executeCross(ctx, req, plan);
}

/** Whether the branch taken writes: 'unknown' when that depends on what a delete finds and `finds` cannot tell. */
type Told = 'writes' | 'nothing' | 'unknown';

/**
 * Whether the branch `req` takes in `state` writes: a put does; a delete does
 * when it finds something (`finds`: undefined when not known).
 */
function takenWrites(req: TxnRequest, state: WriteState, finds: (d: DeleteRangeRequest) => boolean | undefined): Told {
  let told: Told = 'nothing';
  walkTaken(req, compareToPath(req, compareLookup(state)), {
    op(r) {
      if (r.$case === 'requestRange' || told === 'writes') return;
      const found = r.$case === 'requestDeleteRange' ? finds(r.value) : true;
      if (found === true) told = 'writes';
      else if (found === undefined) told = 'unknown';
    },
  });
  return told;
}

/** Whether a delete finds its key, by the key cache; undefined when it cannot tell (an unknown key, a range). */
function cacheFinds(ctx: KvContext, d: DeleteRangeRequest): boolean | undefined {
  if (d.rangeEnd.length > 0) return undefined;
  const known = ctx.keyCache.get(toMemberKey(d.key).toString('latin1'));
  return known && known.present !== undefined;
}

/** Whether a delete finds anything, by the member read: the state for the keys it holds, else the counts. */
function readFinds(read: StateAndDeletes, d: DeleteRangeRequest): boolean {
  const key = toMemberKey(d.key).toString('latin1');
  if (d.rangeEnd.length === 0 && read.state.keys.has(key)) return read.state.keys.get(key) !== undefined;
  return (read.deleteCounts.get(rangeId(d.key, d.rangeEnd)) ?? 0) > 0;
}

/** Whether `req` puts whatever the state: a put on every branch it can take (a plain Put, a put in both branches). */
function alwaysPuts(req: TxnRequest): boolean {
  const branches = req.compare.length === 0 ? [req.success] : [req.success, req.failure];
  return branches.every((ops) => ops.some((o) => o.request?.$case === 'requestPut'));
}

/**
 * Every key or range `req` may delete, on any branch (which one is taken is known only once the state is
 * read), but the keys of the state: the state tells whether they are there.
 */
function deleteTargets(req: TxnRequest, plan: TxnPlan): ClientRange[] {
  const stateKeys = new Set(plan.stateKeys.map((k) => k.toString('latin1')));
  const inState = (d: DeleteRangeRequest) => d.rangeEnd.length === 0 && stateKeys.has(d.key.toString('latin1'));
  const out = new Map<string, ClientRange>();
  const visit = (t: TxnRequest) => {
    for (const o of [...t.success, ...t.failure]) {
      const r = o.request;
      if (r?.$case === 'requestTxn') visit(r.value);
      else if (r?.$case === 'requestDeleteRange' && !inState(r.value)) out.set(rangeId(r.value.key, r.value.rangeEnd), { key: r.value.key, rangeEnd: r.value.rangeEnd });
    }
  };
  visit(req);
  return [...out.values()];
}
