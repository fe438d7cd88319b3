// Compaction of the meta cluster at a meta revision R: R is first recorded in
// every member (so every proxy learns it from its member streams and refuses
// reads below it with etcd's compacted error), then each member is compacted at
// the member revision that holds its state at R, and the coordinator at its
// current revision (its history holds nothing but clock records).

import { cmp, op, txn } from '../proto/build.js';
import type { CompactionRequest } from '../proto/gen/rpc.js';
import { Errors, EtcdError, fromUpstream, messageOf } from '../server/errors.js';
import { InternalKey } from '../store/keyspace.js';
import { encodeU64BE } from '../util/bytes.js';
import type { EtcdClient } from '../members/etcd-client.js';
import { CLOCK_KEY } from '../clock/coordinator-record.js';
import type { KvContext } from './context.js';
import { resolveReadPoint } from './read-point.js';

export async function compact(ctx: KvContext, coordinator: EtcdClient, req: CompactionRequest): Promise<number> {
  const revision = Number(req.revision);
  if (revision <= ctx.compaction.revision) throw Errors.compacted();
  const members = ctx.router.allMembers();
  // Waits until every member is complete up to `revision` (future revisions are refused).
  const point = await resolveReadPoint(ctx, members, revision, false);

  const value = encodeU64BE(revision + 1);
  await Promise.all(
    members.map(async (m) => {
      try {
        await ctx.members[m]!.txn(txn([cmp.valueLess(InternalKey.compacted, value)], [op.put(InternalKey.compacted, value)]));
      } catch (err) {
        throw fromUpstream(err, `member ${m}`);
      }
    }),
  );
  ctx.compaction.raise(revision);

  // Each member is compacted at the revision of its last write at or below R, so
  // that everything after it (what a watch from R+1, or from R, reads) stays.
  const at = await Promise.all(members.map((m) => ctx.timelines[m]!.recordRevisionAt(revision)));
  await Promise.all(
    members.map(async (m, i) => {
      for (let attempt = 0; ; attempt++) {
        try {
          await ctx.members[m]!.compact({ revision: BigInt(at[i]!), physical: req.physical });
          return;
        } catch (err) {
          // A member compacted further by itself (e.g. its own auto-compaction) is fine.
          if (messageOf(err) === Errors.compacted().message) return;
          // The member's stream can show a revision a moment before the member serves it.
          if (messageOf(err) === Errors.futureRev().message && attempt < 50) {
            await new Promise((r) => setTimeout(r, 2));
            continue;
          }
          throw fromUpstream(err, `member ${m}`);
        }
      }
    }),
  );
  try {
    const head = await coordinator.range({ key: CLOCK_KEY, countOnly: true });
    await coordinator.compact({ revision: head.header!.revision, physical: false });
  } catch (err) {
    if (!(err instanceof EtcdError) && messageOf(err) !== Errors.compacted().message) {
      ctx.log.warn({ err: messageOf(err) }, 'could not compact the coordinator (harmless: it only holds the clock)');
    }
  }
  return point.header;
}
