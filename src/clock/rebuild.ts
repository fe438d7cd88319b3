// Rebuilding the clock record after the coordinator lost it (first start, or a
// coordinator on tmpfs that was wiped): from the members, which hold every
// revision that was ever handed out or made durable.
//   1. Read the highest revision any member holds, the highest ceiling, and the
//      newest layout generation (m/layout).
//   2. Fence every member at that revision: a write still in flight from before
//      the coordinator was lost carries a revision <= the old ceiling <= it, so
//      it can no longer land. A cross-member transaction still committing is
//      resolved first (closeRevision).
//   3. Publish the record unless another proxy already did (a create, or a CAS
//      over the stale record): concurrent rebuilds compute the same value; one
//      wins, the others adopt its record.

import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { EtcdClient } from '../members/etcd-client.js';
import { asRange, cmp, op, txn } from '../proto/build.js';
import { EtcdError, Status } from '../errors/etcd-error.js';
import { decodeLayout } from '../shard/layout.js';
import { decodeClockRecord } from '../store/clock-record.js';
import { InternalKey } from '../store/keyspace.js';
import { decodeU64BE } from '../util/bytes.js';
import { CLOCK_KEY, encodeCoordinatorRecord, type CoordinatorRecord } from './coordinator-record.js';
import { closeRevision, peersOf } from '../commit/close-revision.js';

export interface RebuildInput {
  coordinator: EtcdClient;
  members: EtcdClient[];
  log: Logger;
  metrics: Metrics;
  /** The record to replace (its mod revision); undefined when the coordinator holds none. */
  staleModRevision: number | undefined;
  /** Revisions this proxy already knows were reached (it never goes below them). */
  atLeast: number;
}

/** What the coordinator holds afterwards: the record this rebuild published, or the one another proxy did. */
export type RebuildOutcome = { published: CoordinatorRecord; modRevision: number } | { adopted: Buffer; modRevision: number } | { adopted: undefined };

export async function rebuildClock(o: RebuildInput): Promise<RebuildOutcome> {
  const states = await Promise.all(
    o.members.map(async (m, i) => {
      const resp = await m.txn(txn([], [op.range(InternalKey.clock), op.range(InternalKey.ceiling), op.range(InternalKey.layout)]), {
        readOnly: true,
        context: 'needed to rebuild the clock',
      });
      const clockKv = asRange(resp.responses[0]).kvs[0];
      const ceilingKv = asRange(resp.responses[1]).kvs[0];
      const layoutKv = asRange(resp.responses[2]).kvs[0];
      if (!clockKv) throw new EtcdError(Status.INTERNAL, `metaetcd: member ${i} has no clock record (not bootstrapped; needed to rebuild the clock)`, 'internal');
      return {
        revision: decodeClockRecord(clockKv.value).revision,
        ceiling: ceilingKv ? decodeU64BE(ceilingKv.value) : 0,
        generation: layoutKv ? decodeLayout(layoutKv.value).generation : 1,
      };
    }),
  );
  // A fresh etcd is at revision 1 (clients treat 0 as an error); so is a fresh meta cluster.
  const revision = Math.max(1, o.atLeast, ...states.map((s) => Math.max(s.revision, s.ceiling)));
  const peers = peersOf(o.members, o.log, o.metrics);
  await Promise.all(o.members.map((_, i) => closeRevision(peers, i, revision)));
  // The record carries the highest layout generation any member holds (the mover
  // raises the record's generation only after writing that layout to every member,
  // and never lowers it; absent means 1, so without it a rebuild after a move or
  // `members add` would fall back to generation 1).
  const generation = Math.max(1, ...states.map((s) => s.generation));
  const record: CoordinatorRecord = {
    format: 1,
    revision,
    ceiling: revision,
    last: o.members.map(() => revision),
    ...(generation > 1 ? { layoutGeneration: generation } : {}),
  };
  const resp = await o.coordinator.txn(
    txn(
      [o.staleModRevision === undefined ? cmp.createEqual(CLOCK_KEY, 0) : cmp.modEqual(CLOCK_KEY, o.staleModRevision)],
      [op.put(CLOCK_KEY, encodeCoordinatorRecord(record))],
      [op.range(CLOCK_KEY)],
    ),
  );
  if (resp.succeeded) return { published: record, modRevision: Number(resp.header!.revision) };
  const kv = asRange(resp.responses[0]).kvs[0];
  return kv ? { adopted: kv.value, modRevision: Number(kv.modRevision) } : { adopted: undefined };
}
