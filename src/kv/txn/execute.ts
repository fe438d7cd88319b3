// Executing transactions (and, through them, Put and single-member deletes):
// a transaction that writes nothing is served from a snapshot (read-only.ts),
// one that writes goes to its member as one member transaction
// (write-executor.ts).

import type { TxnRequest } from '../../proto/gen/rpc.js';
import type { KvContext } from '../context.js';
import { planTxn } from '../txn-plan.js';
import { executeReadOnly } from './read-only.js';
import { executeWrite } from './write-executor.js';
import type { TxnOutcome } from './outcome.js';

export type { TxnOutcome };

/** Runs `req`; with `onMember`, every key is taken to live in that member (see planTxn). */
export async function executeTxn(ctx: KvContext, req: TxnRequest, onMember?: number): Promise<TxnOutcome> {
  const plan = planTxn(ctx.router, req, onMember);
  if (plan.writeMember === undefined) return executeReadOnly(ctx, req, plan);
  return executeWrite(ctx, req, plan, plan.writeMember);
}
