// The walk over the branch a transaction takes. etcd's "txn path" (see
// compareToPath) holds whether the top-level compares succeeded, then, depth
// first in op order, the outcome of every nested transaction on the branch taken.
// Every step that follows that branch (checking its ranges, building the member
// ops, translating the member responses, serving a read-only transaction) walks
// it here, so that they cannot disagree on which op is which.

import type { RequestOp, TxnRequest } from '../../proto/gen/rpc.js';
import { Errors } from '../../errors/etcd-error.js';

/** An op of the branch taken other than a nested transaction. */
export type LeafRequest = Exclude<NonNullable<RequestOp['request']>, { $case: 'requestTxn' }>;

export interface TakenVisitor {
  /** An op at `index` of its branch. */
  op(request: LeafRequest, index: number): void;
  /** A nested transaction at `index` of its branch, before its ops; `succeeded` tells which branch it takes. */
  enter?(nested: TxnRequest, succeeded: boolean, index: number): void;
  /** After the ops of the nested transaction last entered. */
  leave?(nested: TxnRequest, succeeded: boolean): void;
}

/** Visits the ops of the branch `req` takes, depth first, nested transactions included. */
export function walkTaken(req: TxnRequest, path: readonly boolean[], visit: TakenVisitor): void {
  walkBranch(req, path, 0, visit);
}

/** Walks the branch of `t`, whose outcome is path[at]; returns the path index after it. */
function walkBranch(t: TxnRequest, path: readonly boolean[], at: number, visit: TakenVisitor): number {
  const ops = path[at++]! ? t.success : t.failure;
  for (let i = 0; i < ops.length; i++) {
    const r = ops[i]!.request;
    // Refused up front by checkTxn; the proxy's own transactions never hold one.
    if (r === undefined) throw Errors.keyNotFound();
    if (r.$case !== 'requestTxn') {
      visit.op(r, i);
      continue;
    }
    const succeeded = path[at]!;
    visit.enter?.(r.value, succeeded, i);
    at = walkBranch(r.value, path, at, visit);
    visit.leave?.(r.value, succeeded);
  }
  return at;
}
