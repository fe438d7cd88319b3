// etcd's checkRange for the ranges of the branch a transaction takes: a range
// at a past revision that cannot be read fails the whole transaction, but only
// when that range is on the branch taken (etcd checks after choosing it).

import type { TxnRequest } from '../../proto/gen/rpc.js';
import { Errors } from '../../errors/etcd-error.js';
import { walkTaken } from './walk.js';

/**
 * Member revisions of the ranges that read at a past meta revision, by meta
 * revision; an Error where that revision cannot be read (raised only if such a
 * range is on the branch taken, see checkTakenRanges); READ_AFTER where it falls
 * inside a write batch on the member, which a read inside the member
 * transaction cannot correct: such ranges are read after the write lands, as
 * snapshot reads (the past does not change).
 */
export type PastRevisions = ReadonlyMap<number, number | Error | typeof READ_AFTER>;

export const READ_AFTER = 'read after the write';

/**
 * etcd's checkRange over the branch taken: a range at a revision below the
 * compacted one (`compactedAt`, -1 when never compacted) is compacted, one that
 * `past` could not resolve (a future revision) raises that error; 0 and the
 * other negative revisions read the current state.
 */
export function checkTakenRanges(req: TxnRequest, path: readonly boolean[], compactedAt: number, past: PastRevisions): void {
  walkTaken(req, path, {
    op(r) {
      if (r.$case !== 'requestRange' || r.value.revision === 0n) return;
      const rev = Number(r.value.revision);
      if (rev < compactedAt) throw Errors.compacted();
      const resolved = past.get(rev);
      if (resolved instanceof Error) throw resolved;
    },
  });
}
