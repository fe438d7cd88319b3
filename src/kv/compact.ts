// Compaction of the meta cluster at a meta revision R: R is first recorded in
// every member (so every proxy learns it from its member streams and refuses
// reads below it with etcd's compacted error), then each member is compacted at
// the member revision that holds its state at R, and the clock's own history in
// the coordinator (which holds nothing but clock records) is dropped.

import { cmp, op, txn } from '../proto/build.js';
import type { CompactionRequest } from '../proto/gen/rpc.js';
import { Errors, isKind } from '../errors/etcd-error.js';
import { InternalKey } from '../store/keyspace.js';
import { encodeU64BE } from '../util/bytes.js';
import type { KvContext } from './context.js';
import { resolveReadPoint } from './read-point.js';

export async function compact(ctx: KvContext, req: CompactionRequest): Promise<number> {
  const revision = Number(req.revision);
  if (revision <= ctx.compaction.revision) throw Errors.compacted();
  const members = ctx.router.allMembers();
  // Waits until every member is complete up to `revision` (future revisions are refused).
  const point = await resolveReadPoint(ctx, members, revision, false);

  const value = encodeU64BE(revision + 1);
  await Promise.all(
    members.map((m) => ctx.members.get(m).client.txn(txn([cmp.valueLess(InternalKey.compacted, value)], [op.put(InternalKey.compacted, value)]))),
  );
  ctx.compaction.raise(revision);

  // Each member is compacted at the revision of its last write at or below R, so
  // that everything after it (what a watch from R+1, or from R, reads) stays.
  const at = await Promise.all(members.map((m) => ctx.members.get(m).timeline.recordRevisionAt(revision)));
  await Promise.all(
    members.map(async (m, i) => {
      for (let attempt = 0; ; attempt++) {
        try {
          await ctx.members.get(m).client.compact({ revision: BigInt(at[i]!), physical: req.physical });
          return;
        } catch (err) {
          // A member compacted further by itself (e.g. its own auto-compaction) is fine.
          if (isKind(err, 'compacted')) return;
          // The member's stream can show a revision a moment before the member serves it.
          if (isKind(err, 'future-revision') && attempt < 50) {
            await new Promise((r) => setTimeout(r, 2));
            continue;
          }
          throw err;
        }
      }
    }),
  );
  await ctx.clock.compactHistory();
  return point.header;
}
