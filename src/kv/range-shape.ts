// etcd's post-processing of a Range, reproduced on the merged result of all
// members: revision filters, sorting, the limit and the `more` flag, keys_only.
// Quirks kept on purpose (etcd 3.4 applier Range):
// - `count` is the number of keys in the range before filters;
// - with sort_order NONE but a sort_target other than KEY, the fetched keys are
//   sorted ascending by that target;
// - when sorting or filtering, everything is fetched and truncated afterwards,
//   otherwise only limit+1 keys are fetched (in key order) for the `more` flag.
// Ties in the sort target keep key order (etcd's sort is not stable for large
// results, so tests compare tied runs as sets).

import type { KeyValue } from '../proto/gen/kv.js';
import { RangeRequest_SortOrder as Order, RangeRequest_SortTarget as Target, type RangeRequest } from '../proto/gen/rpc.js';

/** Whether the members must return every key of the range (no limit) for this request. */
export function needsFullFetch(req: RangeRequest): boolean {
  return (
    req.sortOrder !== Order.NONE ||
    req.minModRevision !== 0n ||
    req.maxModRevision !== 0n ||
    req.minCreateRevision !== 0n ||
    req.maxCreateRevision !== 0n
  );
}

/** How many keys (in key order) each member must return: 0 = all. */
export function memberFetchLimit(req: RangeRequest): number {
  if (needsFullFetch(req)) return 0;
  return req.limit > 0n ? Number(req.limit) + 1 : 0;
}

export interface ShapedRange {
  kvs: KeyValue[];
  more: boolean;
}

/** Applies filters, sort, limit and keys_only to `kvs` (client form, in key order). */
export function shapeRange(req: RangeRequest, kvs: KeyValue[]): ShapedRange {
  let out = kvs;
  if (req.maxModRevision !== 0n) out = out.filter((kv) => kv.modRevision <= req.maxModRevision);
  if (req.minModRevision !== 0n) out = out.filter((kv) => kv.modRevision >= req.minModRevision);
  if (req.maxCreateRevision !== 0n) out = out.filter((kv) => kv.createRevision <= req.maxCreateRevision);
  if (req.minCreateRevision !== 0n) out = out.filter((kv) => kv.createRevision >= req.minCreateRevision);

  let order = req.sortOrder;
  if (req.sortTarget !== Target.KEY && order === Order.NONE) order = Order.ASCEND;
  if (order === Order.ASCEND || order === Order.DESCEND) {
    const cmp = comparator(req.sortTarget);
    const sign = order === Order.DESCEND ? -1 : 1;
    // Array.prototype.sort is stable: ties keep key order.
    out = [...out].sort((a, b) => sign * cmp(a, b));
  }

  let more = false;
  if (req.limit > 0n && out.length > Number(req.limit)) {
    out = out.slice(0, Number(req.limit));
    more = true;
  }
  if (req.keysOnly) out = out.map((kv) => ({ ...kv, value: Buffer.alloc(0) }));
  return { kvs: out, more };
}

function comparator(target: Target): (a: KeyValue, b: KeyValue) => number {
  switch (target) {
    case Target.VERSION:
      return (a, b) => cmpBig(a.version, b.version);
    case Target.CREATE:
      return (a, b) => cmpBig(a.createRevision, b.createRevision);
    case Target.MOD:
      return (a, b) => cmpBig(a.modRevision, b.modRevision);
    case Target.VALUE:
      return (a, b) => Buffer.compare(a.value, b.value);
    case Target.KEY:
    default:
      return (a, b) => Buffer.compare(a.key, b.key);
  }
}

function cmpBig(a: bigint, b: bigint): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
