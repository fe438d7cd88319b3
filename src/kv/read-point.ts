// Choosing the snapshot a read is served from, and the member revision that holds
// it in each member the read touches. This is where "a read never returns a
// revision whose writes can still appear later" is enforced:
//
// - A linearizable read takes the clock's current revision C (a coordinator
//   read, shared by concurrent readers) and, for every member it touches, waits
//   until that member's stream has shown the last revision handed to a write on
//   it (`last[m]`), fencing the member if that write stalls. After that no write
//   at or below C can still land on those members, and the member revision that
//   holds meta revision C is known from the revision index.
// - A read at an explicit revision R waits the same way for members whose
//   watermark is still below R (R above the clock is a future revision).
// - A serializable read uses only what this proxy has already seen: the lowest
//   watermark among the members it touches, which needs no round trip.

import { Errors } from '../errors/etcd-error.js';
import type { ClockSnapshot } from '../clock/clock.js';
import type { KvContext } from './context.js';
import type { BatchAround } from './batch-read.js';

export interface ReadPoint {
  /** Revision reported in the response header. */
  header: number;
  /** The snapshot's meta revision. */
  revision: number;
  /** Member revision holding the snapshot, per touched member. */
  memberRevisions: Map<number, number>;
  /** Members where the snapshot falls inside a batch, with the batch's writes (kv/batch-read.ts). */
  batches: Map<number, BatchAround>;
}

export async function resolveReadPoint(
  ctx: KvContext,
  members: number[],
  revision: number,
  serializable: boolean,
  /** A clock reading taken after the request arrived, if the caller already has one (latest-revision reads only). */
  known?: ClockSnapshot,
): Promise<ReadPoint> {
  const deadline = Date.now() + ctx.limits.requestTimeoutMs;
  if (revision > 0) {
    if (revision < ctx.compaction.revision) throw Errors.compacted();
    const uncovered = members.filter((m) => ctx.members.get(m).timeline.watermark < revision);
    // When every member already shows `revision`, no write at or below it can still land:
    // the snapshot is final and needs no coordinator read (paged lists pinned to a revision).
    const cached = ctx.clock.latest();
    let header = Math.max(revision, cached?.revision ?? 0);
    // A clock record seen earlier also settles it when it is at or above `revision`
    // and every uncovered member has shown the last revision handed to it there:
    // later allocations are above that record, so above `revision`.
    const settled = cached !== undefined && revision <= cached.revision && uncovered.every((m) => ctx.members.get(m).timeline.watermark >= cached.last[m]!);
    if (!settled) {
      const snap = await ctx.clock.now();
      if (revision > snap.revision) throw Errors.futureRev();
      header = snap.revision;
      await Promise.all(uncovered.map((m) => ctx.members.get(m).timeline.waitFor(snap.last[m]!, deadline)));
    }
    return { header, revision, ...(await memberRevisions(ctx, members, revision)) };
  }
  if (serializable) {
    // Every member was complete up to the compacted revision when it was compacted.
    const snapshot = Math.max(ctx.compaction.revision, Math.min(...members.map((m) => ctx.members.get(m).timeline.watermark)));
    return { header: snapshot, revision: snapshot, ...(await memberRevisions(ctx, members, snapshot)) };
  }
  const snap = known ?? (await ctx.clock.now());
  await Promise.all(members.map((m) => ctx.members.get(m).timeline.waitFor(snap.last[m]!, deadline)));
  return { header: snap.revision, revision: snap.revision, ...(await memberRevisions(ctx, members, snap.revision)) };
}

async function memberRevisions(ctx: KvContext, members: number[], revision: number): Promise<Pick<ReadPoint, 'memberRevisions' | 'batches'>> {
  const memberRevisions = new Map<number, number>();
  const batches = new Map<number, BatchAround>();
  await Promise.all(
    members.map(async (m) => {
      const t = ctx.members.get(m).timeline;
      const at = await t.locate(revision);
      memberRevisions.set(m, at.memberRevision);
      if (at.insideBatch) batches.set(m, { memberRevision: at.memberRevision, writes: await t.batchWrites(at.memberRevision) });
    }),
  );
  return { memberRevisions, batches };
}
