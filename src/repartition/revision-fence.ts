// A revision of the meta clock taken for one member and written there as its
// clock record (a fence record, as the proxies' releases of unused revisions
// are). Every reading of the clock taken before it has a revision below it, so a
// reader at such a revision reads the member as it was before anything the
// mover writes after the fence: this is what lets the source copies be removed
// while a proxy that still routes by the old layout generation reads them.

import { Clock } from '../clock/clock.js';
import type { Logger } from '../log.js';
import { Metrics } from '../metrics.js';
import { closeRevision, peersOf } from '../commit/close-revision.js';
import type { MetaCluster } from './connect.js';

/** Takes a revision for `member` and raises the member's clock record to it (if still lower); returns the revision. */
export async function fenceAtNewRevision(c: MetaCluster, member: number, log: Logger): Promise<number> {
  const clock = new Clock({ coordinator: c.coordinator, members: c.members, log, metrics: new Metrics() });
  const tick = await clock.tick(member);
  // If nothing is written, a reader has already fenced the member at or above the revision: the same effect.
  await closeRevision(peersOf(c.members, log), member, tick.revision);
  return tick.revision;
}
