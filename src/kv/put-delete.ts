// The Put and DeleteRange RPCs, expressed as transactions so that they share one
// write path (and its ordering, guards and retries). A DeleteRange that spans
// members is one cross-member transaction (kv/txn/cross-member.ts): atomic, at
// one revision, as in etcd.

import type { KeyValue } from '../proto/gen/kv.js';
import { asDeleteRange, asPut } from '../proto/build.js';
import type { DeleteRangeRequest, PutRequest, TxnRequest } from '../proto/gen/rpc.js';
import { Errors } from '../errors/etcd-error.js';
import { toMemberRange } from '../store/keyspace.js';
import type { KvContext } from './context.js';
import { executeTxn } from './txn/execute.js';
import { checkDelete, checkPut } from './txn-check.js';

export interface PutResult {
  revision: number;
  prevKv: KeyValue | undefined;
}

export async function put(ctx: KvContext, req: PutRequest): Promise<PutResult> {
  checkPut(req);
  // A plain Put checks its lease before anything else (a Txn checks its keys first), as etcd does.
  if (req.lease !== 0n && !(await ctx.leases.exists(req.lease))) throw Errors.leaseNotFound();
  const out = await executeTxn(ctx, { compare: [], success: [{ request: { $case: 'requestPut', value: req } }], failure: [] });
  return { revision: out.revision, prevKv: asPut(out.responses[0]).prevKv };
}

export interface DeleteResult {
  revision: number;
  deleted: number;
  prevKvs: KeyValue[];
}

export async function deleteRange(ctx: KvContext, req: DeleteRangeRequest): Promise<DeleteResult> {
  checkDelete(req);
  const members = ctx.router.membersOf(req.key, req.rangeEnd);
  const asTxn: TxnRequest = { compare: [], success: [{ request: { $case: 'requestDeleteRange', value: req } }], failure: [] };
  if (members.length === 1) return fromOutcome(await executeTxn(ctx, asTxn));

  const { key, rangeEnd } = toMemberRange(req.key, req.rangeEnd);
  const counts = await Promise.all(
    members.map(async (m) => {
      return Number((await ctx.members.get(m).client.range({ key, rangeEnd, countOnly: true })).count);
    }),
  );
  if (counts.every((n) => n === 0)) return { revision: (await ctx.clock.now()).revision, deleted: 0, prevKvs: [] };
  // One transaction over every member the range spans, committed atomically at one revision.
  return fromOutcome(await executeTxn(ctx, asTxn));
}

function fromOutcome(out: { revision: number; responses: import('../proto/gen/rpc.js').ResponseOp[] }): DeleteResult {
  const d = asDeleteRange(out.responses[0]);
  return { revision: out.revision, deleted: Number(d.deleted), prevKvs: d.prevKvs };
}
