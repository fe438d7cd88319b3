// Reading a member at a meta revision R that falls inside a batch: the member
// revision X holding R also holds the batch's writes above R
// (docs/notes/write-batching.md). Read at X, and replace every key the batch
// wrote above R by its version at X - 1 (none: the batch created it, so it is
// left out and not counted). Batches hold puts on distinct keys only, so this
// is exactly the state at R.

import { asRange, op, txn } from '../proto/build.js';
import type { KeyValue } from '../proto/gen/kv.js';
import type { RangeRequest, RangeResponse } from '../proto/gen/rpc.js';
import type { BatchWrite } from '../revision/member-timeline.js';
import type { KvContext } from './context.js';

export interface BatchAround {
  memberRevision: number;
  writes: BatchWrite[];
}

/** `read` reads the member at a member revision; `req` is in member form. */
export async function readInsideBatch(
  ctx: KvContext,
  member: number,
  req: Partial<RangeRequest> & { key: Buffer },
  R: number,
  batch: BatchAround,
  read: (req: Partial<RangeRequest>) => Promise<RangeResponse>,
): Promise<RangeResponse> {
  const X = batch.memberRevision;
  const later = batch.writes.filter((w) => w.revision > R && inMemberRange(Buffer.from(w.key, 'latin1'), req.key, req.rangeEnd));
  if (later.length === 0) return read({ ...req, revision: BigInt(X) });
  const limit = Number(req.limit ?? 0n);
  const [atX, before] = await Promise.all([
    read({ ...req, revision: BigInt(X), limit: limit > 0 ? BigInt(limit + later.length) : 0n }),
    ctx.members.get(member).client.txn(txn([], later.map((w) => op.range(Buffer.from(w.key, 'latin1'), { revision: BigInt(X - 1) }))), {
      readOnly: true,
      context: `reading meta revision ${R} inside a batch`,
    }),
  ]);
  const previous = new Map<string, KeyValue | undefined>(later.map((w, i) => [w.key, asRange(before.responses[i]).kvs[0]]));
  let created = 0;
  for (const kv of previous.values()) if (!kv) created++;
  let kvs = atX.kvs.flatMap((kv) => {
    const k = kv.key.toString('latin1');
    if (!previous.has(k)) return [kv];
    const p = previous.get(k);
    return p ? [p] : [];
  });
  const count = Number(atX.count) - created;
  if (limit > 0 && kvs.length > limit) kvs = kvs.slice(0, limit);
  return { header: atX.header, kvs, count: BigInt(count), more: limit > 0 && count > kvs.length };
}

function inMemberRange(key: Buffer, start: Buffer, end: Buffer | undefined): boolean {
  if (!end || end.length === 0) return key.equals(start);
  return Buffer.compare(key, start) >= 0 && Buffer.compare(key, end) < 0;
}
