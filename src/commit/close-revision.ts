// Closing a meta revision on a member (clock := R, a fence), and resolving the
// cross-member transactions that stand in the way.
//
// Every write of the member clock that no client write carries — a reader's or
// the watch hub's fence, a release of unused revisions, the clock rebuild's
// fence, a repartitioning fence — goes through closeRevision. It closes R only
// while the member holds no cross-member transaction record at or below R: such a
// record means a transaction at that revision may still have to be applied here
// (docs/notes/cross-member-transactions.md), and passing it would lose its part.
// The records in the way are resolved first:
//
// - a primary record means committed: every secondary still holding its record
//   gets its part applied (the apply stored in that record), then the primary
//   record is removed;
// - a secondary record asks the primary: closing R on the primary decides (if the
//   primary's part had not landed, it can no longer; if it had, its record says
//   so). Committed: this member's part is applied; otherwise the record goes.
//
// Resolving a secondary record at R closes R on its primary, which may resolve
// records there below R, and so on: the revisions strictly decrease, so it ends.

import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { EtcdClient } from '../members/etcd-client.js';
import { asRange, cmp, op, txn } from '../proto/build.js';
import { unavailable } from '../errors/etcd-error.js';
import { ClockKind, clockGuardValue, decodeClockRecord, encodeClockRecord } from '../store/clock-record.js';
import { CROSS_RECORD_PREFIX, crossRecordKey, InternalKey } from '../store/keyspace.js';
import { CrossRole, decodeCrossRecord } from './cross-record.js';

/** The member clusters by slot, for resolving transactions that span them. */
export interface MemberPeers {
  client(member: number): EtcdClient;
  log: Logger;
  /** Counts resolutions (metaetcd_cross_member_resolutions_total), when given. */
  metrics?: Metrics | undefined;
}

/** Peers over member clients ordered by slot. */
export function peersOf(clients: readonly EtcdClient[], log: Logger, metrics?: Metrics): MemberPeers {
  return {
    metrics,
    client(m) {
      const c = clients[m];
      if (!c) throw new Error(`no member cluster in slot ${m} (the layout has ${clients.length})`);
      return c;
    },
    log,
  };
}

const MAX_ROUNDS = 16;

/**
 * Closes meta revision `target` on `member` unless its clock is already there
 * (then nothing is written). Returns whether this call wrote the fence.
 */
export async function closeRevision(peers: MemberPeers, member: number, target: number): Promise<boolean> {
  const client = peers.client(member);
  const below = crossRecordKey(target + 1);
  for (let round = 0; round < MAX_ROUNDS; round++) {
    const resp = await client.txn(
      txn(
        [cmp.valueLess(InternalKey.clock, clockGuardValue(target)), cmp.noKeyIn(CROSS_RECORD_PREFIX, below)],
        [op.put(InternalKey.clock, encodeClockRecord({ revision: target, kind: ClockKind.Fence, allocation: [] }))],
        [op.range(InternalKey.clock), op.range(CROSS_RECORD_PREFIX, { rangeEnd: below })],
      ),
      { context: `closing meta revision ${target}` },
    );
    if (resp.succeeded) return true;
    const clockKv = asRange(resp.responses[0]).kvs[0];
    if (clockKv && decodeClockRecord(clockKv.value).revision >= target) return false;
    for (const kv of asRange(resp.responses[1]).kvs) {
      await resolveRecord(peers, member, crossRevisionOf(kv.key), kv.value);
    }
  }
  throw unavailable(`member ${member}: could not close meta revision ${target}; cross-member transactions kept standing in the way`);
}

/** Resolves the cross-member transaction whose record `raw` member `member` holds for meta revision `R`. */
export async function resolveRecord(peers: MemberPeers, member: number, R: number, raw: Buffer): Promise<void> {
  const rec = decodeCrossRecord(raw);
  if (rec.role === CrossRole.Primary) {
    await Promise.all(rec.members.map((s) => applyIfPending(peers, s, R)));
    await peers.client(member).txn(txn([], [op.deleteRange(crossRecordKey(R))]), { context: `clearing the record of the transaction at ${R}` });
    return;
  }
  // Deciding: after this, the primary's part either landed (its record is there) or never will.
  await closeRevision(peers, rec.primary, R);
  const decided = await peers.client(rec.primary).range({ key: crossRecordKey(R) }, { context: `deciding the transaction at ${R}` });
  if (decided.kvs.length > 0) {
    peers.log.warn({ member, revision: R, primary: rec.primary }, 'completing a committed cross-member transaction left unfinished');
    await peers.client(member).txn(rec.apply!, { context: `completing the transaction at ${R}` });
    peers.metrics?.crossMemberResolutions.inc({ outcome: 'completed' });
    return;
  }
  peers.log.warn({ member, revision: R, primary: rec.primary }, 'discarding a cross-member transaction that never committed');
  await abandonSecondary(peers.client(member), R);
  peers.metrics?.crossMemberResolutions.inc({ outcome: 'discarded' });
}

/** Removes a secondary's record of an undecided transaction at R and closes R there (no-op once its part is applied). */
export async function abandonSecondary(client: EtcdClient, R: number): Promise<void> {
  await client.txn(
    txn(
      [cmp.valueLess(InternalKey.clock, clockGuardValue(R))],
      [op.deleteRange(crossRecordKey(R)), op.put(InternalKey.clock, encodeClockRecord({ revision: R, kind: ClockKind.Fence, allocation: [] }))],
    ),
    { context: `discarding the transaction at ${R}` },
  );
}

/** Applies member `s`'s part of the committed transaction at R if its record is still there. */
async function applyIfPending(peers: MemberPeers, s: number, R: number): Promise<void> {
  const got = await peers.client(s).range({ key: crossRecordKey(R) }, { context: `completing the transaction at ${R}` });
  const kv = got.kvs[0];
  if (!kv) return;
  const rec = decodeCrossRecord(kv.value);
  const resp = await peers.client(s).txn(rec.apply!, { context: `completing the transaction at ${R}` });
  if (resp.succeeded) {
    peers.log.warn({ member: s, revision: R }, 'completed a committed cross-member transaction left unfinished');
    peers.metrics?.crossMemberResolutions.inc({ outcome: 'completed' });
  }
}

/** The meta revision a record key names. */
export function crossRevisionOf(key: Buffer): number {
  return Number(key.readBigUInt64BE(CROSS_RECORD_PREFIX.length));
}
