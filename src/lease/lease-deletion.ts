// Deleting the keys of an ended lease: which transactions, in which steps. Each
// key goes only if it still carries the lease when the deletion commits (a LEASE
// compare per key, in a nested transaction), so several proxies deleting at once
// delete each key once, and a key put again without the lease stays.

import type { KvContext } from '../kv/context.js';
import { executeTxn } from '../kv/txn/execute.js';
import { isKind } from '../errors/etcd-error.js';
import { Compare_CompareResult, Compare_CompareTarget, type RequestOp, type TxnRequest } from '../proto/gen/rpc.js';

/** Keys of one member per deletion step (a member transaction stays within etcd's default limit of 128 operations). */
export const REAP_CHUNK = 100;

/**
 * The deletion steps of a lease's keys, given each member's: step i takes the i-th
 * REAP_CHUNK keys of every member, in key order. A lease with at most REAP_CHUNK
 * keys on each member is deleted at one revision.
 */
export function reapSteps(perMember: Buffer[][]): Buffer[][] {
  const steps: Buffer[][] = [];
  const sorted = perMember.map((keys) => [...keys].sort(Buffer.compare));
  for (let i = 0; sorted.some((keys) => keys.length > i); i += REAP_CHUNK) {
    steps.push(sorted.flatMap((keys) => keys.slice(i, i + REAP_CHUNK)).sort(Buffer.compare));
  }
  return steps;
}

/**
 * Deletes `keys` if they still carry lease `id`, in one transaction (one revision;
 * a cross-member one when they span members). When a member they span cannot be
 * reached, the keys of the others go at once, one transaction per member, and the
 * unreachable member's keys when it is back (the caller retries).
 */
export async function deleteAttached(kv: KvContext, id: bigint, keys: Buffer[]): Promise<{ revision: number }> {
  try {
    return await executeTxn(kv, leaseDeletion(id, keys));
  } catch (err) {
    if (!isKind(err, 'unavailable') && !isKind(err, 'timeout')) throw err;
    const byMember = new Map<number, Buffer[]>();
    for (const k of keys) {
      const m = kv.router.memberOf(k);
      const list = byMember.get(m);
      if (list) list.push(k);
      else byMember.set(m, [k]);
    }
    if (byMember.size === 1) throw err;
    const parts = await Promise.allSettled([...byMember.values()].map((ks) => executeTxn(kv, leaseDeletion(id, ks))));
    const failed = parts.find((p): p is PromiseRejectedResult => p.status === 'rejected');
    if (failed) throw failed.reason;
    return { revision: Math.max(...parts.map((p) => (p as PromiseFulfilledResult<{ revision: number }>).value.revision)) };
  }
}

/** The transaction deleting each of `keys` that still carries lease `id` when it commits. */
function leaseDeletion(id: bigint, keys: Buffer[]): TxnRequest {
  const success: RequestOp[] = keys.map((key) => ({
    request: {
      $case: 'requestTxn',
      value: {
        compare: [
          {
            key,
            rangeEnd: Buffer.alloc(0),
            target: Compare_CompareTarget.LEASE,
            result: Compare_CompareResult.EQUAL,
            targetUnion: { $case: 'lease', value: id },
          },
        ],
        success: [{ request: { $case: 'requestDeleteRange', value: { key, rangeEnd: Buffer.alloc(0), prevKv: false } } }],
        failure: [],
      },
    },
  }));
  return { compare: [], success, failure: [] };
}
