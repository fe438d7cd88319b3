// Evaluation of transaction compares against a snapshot of the keys they name,
// with etcd's semantics (etcd applier applyCompare / compareKV / compareToPath):
// a compare over a range holds when it holds for every key in the range; a
// VALUE compare on a missing key fails; other targets compare a missing key's
// zero values; all compares of a transaction, nested ones included, see the
// state from before the transaction.

import type { KeyValue } from '../proto/gen/kv.js';
import { Compare_CompareResult as Result, Compare_CompareTarget as Target, type Compare, type TxnRequest } from '../proto/gen/rpc.js';

/** The client-form key-values in a compare's range, as of the transaction's snapshot. */
export type CompareLookup = (c: Compare) => KeyValue[];

export function applyCompare(c: Compare, kvs: KeyValue[]): boolean {
  if (kvs.length === 0) {
    if (c.target === Target.VALUE) return false;
    return compareKv(c, undefined);
  }
  return kvs.every((kv) => compareKv(c, kv));
}

function compareKv(c: Compare, kv: KeyValue | undefined): boolean {
  let result = 0;
  const u = c.targetUnion;
  switch (c.target) {
    case Target.VALUE: {
      const v = u?.$case === 'value' ? u.value : Buffer.alloc(0);
      result = Buffer.compare(kv?.value ?? Buffer.alloc(0), v);
      break;
    }
    case Target.CREATE:
      result = cmp(kv?.createRevision ?? 0n, u?.$case === 'createRevision' ? u.value : 0n);
      break;
    case Target.MOD:
      result = cmp(kv?.modRevision ?? 0n, u?.$case === 'modRevision' ? u.value : 0n);
      break;
    case Target.VERSION:
      result = cmp(kv?.version ?? 0n, u?.$case === 'version' ? u.value : 0n);
      break;
    case Target.LEASE:
      result = cmp(kv?.lease ?? 0n, u?.$case === 'lease' ? u.value : 0n);
      break;
    default:
      break;
  }
  switch (c.result) {
    case Result.EQUAL:
      return result === 0;
    case Result.NOT_EQUAL:
      return result !== 0;
    case Result.GREATER:
      return result > 0;
    case Result.LESS:
      return result < 0;
    default:
      return true;
  }
}

function cmp(a: bigint, b: bigint): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * etcd's "txn path": whether the top-level compares succeeded, followed (depth
 * first, in op order) by the outcome of every nested transaction on the taken
 * branch.
 */
export function compareToPath(req: TxnRequest, lookup: CompareLookup): boolean[] {
  const ok = req.compare.every((c) => applyCompare(c, lookup(c)));
  const path = [ok];
  for (const op of ok ? req.success : req.failure) {
    if (op.request?.$case === 'requestTxn') path.push(...compareToPath(op.request.value, lookup));
  }
  return path;
}
