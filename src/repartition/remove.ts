// `metaetcd members remove N` (offline, like the moves): retires the member at
// the highest slot once it holds nothing (`members drain N` first). Slots are
// dense (coordinator arrays, assignments, identities), so only the last one can
// go until renumbering exists. The steps, each idempotent, in an order that lets
// a rerun after a kill anywhere finish the removal:
//
//   1. leases: every lease record on N gets its new home (leaseAssignment with
//      N's partitions given to their current owners): an etcd lease of the same
//      ID and granted TTL there, and the record attached to it;
//   2. floors: a revision allocated to N but never written is fenced, and N's
//      ceiling and compaction record are carried to the members that stay;
//   3. layouts: L' (members N, generation g+1) to every member that stays
//      (N keeps L: it still names itself slot N of N+1 members);
//   4. coordinator: layoutGeneration g+1 and the per-member arrays cut to N;
//   5. retire: N's etcd leases revoked and its m/ keys deleted (an empty cluster).
//
// A rerun tells how far it got from the layouts: once any member holds L', steps
// 1-2 are done and slot N may be listed in --members or not (connect.ts's
// `removing`); N's own identity is deleted only by step 5, so the rerun that can
// retire N is one that lists it.
//
// History (why reads stay right): N held no partition since the drain, whose
// moves' doneAt are later than any client write N ever held, and a proxy serves
// revisions below the last doneAt as compacted (movedFloor in members/bootstrap.ts);
// if compaction pruned those entries, the compaction floor (carried in step 2)
// is above them. So no read at any revision can need N's history, and the floor
// needs no extension.

import { CLOCK_KEY, decodeCoordinatorRecord, type CoordinatorRecord } from '../clock/coordinator-record.js';
import { isKind } from '../errors/etcd-error.js';
import { leaseHome } from '../lease/lease-manager.js';
import type { Logger } from '../log.js';
import { closeRevision, peersOf } from '../commit/close-revision.js';
import type { EtcdClient } from '../members/etcd-client.js';
import { rangePages } from '../members/range-pages.js';
import { asRange, cmp, op, txn } from '../proto/build.js';
import { decodeLayout, encodeLayout, Router, type Layout } from '../shard/layout.js';
import { showPrefix } from '../shard/placement.js';
import { decodeClockRecord } from '../store/clock-record.js';
import { InternalKey, LEASE_RECORD_PREFIX, leaseOfRecordKey, leaseRecordKey } from '../store/keyspace.js';
import { decodeU64BE, encodeU64BE, prefixEnd } from '../util/bytes.js';
import { assertNoProxyServing, newestLayout, readClock, updateClock, type MetaCluster } from './connect.js';
import { rewriteLayout } from './layout-steps.js';
import { holdIfAsked } from '../util/test-hold.js';
import { findMoveState } from './move-state.js';

/** Env var of the test-only hook: wait forever after the named step (RemoveStep). */
export const REMOVE_HOLD_ENV = 'METAETCD_TEST_REMOVE_HOLD';
type RemoveStep = 'leases' | 'fenced' | 'layouts' | 'coordinator';

const META = Buffer.from('m/');
const PAGE = 1000;

export interface RemoveOptions {
  /** The slot to remove. */
  member: number;
  dryRun: boolean;
  log: Logger;
  /** Where the plan (dry run) and the result lines go. */
  print: (line: string) => void;
}

/** A lease of N to re-home: its new home and what N holds of it. */
interface LeaseMove {
  id: bigint;
  to: number;
  grantedTtl: bigint;
  record: Buffer;
}

export async function removeMember(c: MetaCluster, o: RemoveOptions): Promise<void> {
  await assertNoProxyServing(c.coordinator);
  const running = await findMoveState(c.members);
  if (running) {
    throw new Error(`a partition move is in progress (${running.id}, phase ${running.phase}); finish it (run the same command again) or roll it back first`);
  }
  const layout = newestLayout(c.states);
  // Some member already holds the layout without N: steps 1-2 are done.
  if (layout.members === o.member) return finishRemoval(c, layout, o);
  checkRemovable(c, layout, o.member);
  const next = removedLayout(layout, o.member);
  const leases = await leasesToMove(c.members[o.member]!, next);
  if (o.dryRun) return printPlan(c, next, o, leases);
  await rehomeLeases(c, leases);
  await hold('leases', o.log);
  await closeMember(c, o.member, o.log);
  await hold('fenced', o.log);
  await finish(c, next, o);
  o.print(`removed member ${o.member}: ${leases.length} leases re-homed; layout generation ${next.generation} with ${next.members} members\n`);
}

/** Refuses unless N is the last slot, another member stays, and N holds no partition, frozen partition or client key. */
function checkRemovable(c: MetaCluster, l: Layout, n: number): void {
  const last = l.members - 1;
  if (!Number.isInteger(n) || n < 0 || n > last) throw new Error(`member ${n} is not a member (the meta cluster has members 0..${last})`);
  if (l.members < 2) throw new Error('cannot remove the only member');
  if (n !== last) {
    throw new Error(
      `only the last member slot (${last}) can be removed yet (member slots are dense and renumbering them is not supported): ` +
        `to shrink the meta cluster, run \`metaetcd members drain ${last}\` and then \`metaetcd members remove ${last}\` (member ${n} may stay drained)`,
    );
  }
  const pinned = (l.rules ?? []).filter((r) => r.member === n).map((r) => showPrefix(r.prefix));
  if (pinned.length > 0) {
    throw new Error(`placement rules pin ${pinned.join(', ')} to member ${n}: run \`metaetcd placement remove PREFIX\` (or pin them elsewhere) first`);
  }
  const held = l.assignment.filter((m) => m === n).length;
  const drain = `run \`metaetcd members drain ${n}\` first`;
  if (held > 0) throw new Error(`member ${n} holds ${held} partitions in layout generation ${l.generation}: ${drain}`);
  if (c.states.some((s) => (s.layout?.frozen?.length ?? 0) > 0)) throw new Error(`a member has frozen partitions (an unfinished move): ${drain}`);
  const keys = c.states[n]!.dataKeys;
  if (keys > 0) throw new Error(`member ${n} still holds ${keys} client keys: ${drain}`);
}

/** L' made from L: one member fewer, the next generation, N's lease homes given to their partitions' owners. */
export function removedLayout(l: Layout, n: number): Layout {
  // Format 1 records never had moves: their lease homes are `assignment` (see leaseHome).
  const homes = l.leaseAssignment ?? l.assignment;
  const next: Layout = {
    ...l,
    format: 2,
    generation: l.generation + 1,
    members: l.members - 1,
    leaseAssignment: homes.map((m, p) => (m === n ? l.assignment[p]! : m)),
    // The recorded endpoints (members add) lose N's entry: decodeLayout wants one per member.
    ...(l.endpoints ? { endpoints: l.endpoints.filter((_, i) => i !== n) } : {}),
  };
  // The proxies must accept it (moves history entries naming N stay: they are history).
  return decodeLayout(encodeLayout(next));
}

/** N's live leases with their homes under L' (leaseHome, as the proxies compute them). */
async function leasesToMove(member: EtcdClient, next: Layout): Promise<LeaseMove[]> {
  const router = new Router(next);
  const out: LeaseMove[] = [];
  const records = { key: LEASE_RECORD_PREFIX, rangeEnd: prefixEnd(LEASE_RECORD_PREFIX) };
  for await (const kvs of rangePages(member, records, PAGE, { context: 'reading its lease records' })) {
    for (const kv of kvs) {
      const id = leaseOfRecordKey(kv.key);
      if (id === undefined) continue;
      const ttl = await timeToLive(member, id);
      // Expired or revoked since the record was read: nothing to carry (a proxy's sweep reaps its keys).
      if (!ttl || ttl.TTL < 0n) continue;
      out.push({ id, to: leaseHome(router, id), grantedTtl: ttl.grantedTTL, record: kv.value });
    }
  }
  return out;
}

async function timeToLive(member: EtcdClient, id: bigint): Promise<{ TTL: bigint; grantedTTL: bigint } | undefined> {
  try {
    return await member.leaseTimeToLive({ ID: id, keys: false }, { context: `reading lease ${id}` });
  } catch (err) {
    if (isKind(err, 'lease-not-found')) return undefined;
    throw err;
  }
}

/**
 * Step 1. The new lease starts its full granted TTL now, so a lease expires up to
 * (granted - remaining) seconds later than it would have on N; keep-alives renew
 * it to the same TTL as before.
 */
async function rehomeLeases(c: MetaCluster, leases: LeaseMove[]): Promise<void> {
  for (const l of leases) {
    const home = c.members[l.to]!;
    try {
      await home.leaseGrant({ ID: l.id, TTL: l.grantedTtl }, { context: `granting lease ${l.id} at its new home` });
    } catch (err) {
      // Granted by an interrupted run: only this command grants leases homed on N's partitions there.
      if (!isKind(err, 'lease-exists')) throw err;
    }
    await home.txn(txn([], [op.put(leaseRecordKey(l.id), l.record, { lease: l.id })]), { context: `writing lease ${l.id}'s record at its new home` });
  }
}

/**
 * Step 2. A revision the clock handed to a write on N (`last[N]`) that never
 * landed is fenced on N, as a reader would fence it: otherwise nobody would ever
 * close it once the clock forgets N (a write still in flight could land on N
 * before it is retired). Fencing is safe with no proxy running and needs no
 * operator decision, so it is done rather than refused. Then N's ceiling and
 * clock revision (what a clock rebuild takes from N) and its compaction record
 * are raised into the members that stay: the highest of them may be N's alone
 * (a ceiling is raised in at least one member only; the last move's fence is on
 * N), and losing it would let a rebuilt clock hand out revisions again, or
 * serve compacted revisions.
 */
async function closeMember(c: MetaCluster, n: number, log: Logger): Promise<void> {
  const member = c.members[n]!;
  const clock = await readClock(c, n + 1);
  const outstanding = clock?.record.last[n] ?? 0;
  if (outstanding > 0) {
    // Nothing is written if N already holds that revision or a later one: nothing is outstanding then.
    await closeRevision(peersOf(c.members, log), n, outstanding);
  }
  const resp = await member.txn(txn([], [op.range(InternalKey.clock), op.range(InternalKey.ceiling), op.range(InternalKey.compacted)]), {
    readOnly: true,
    context: `reading member ${n}'s clock floors`,
  });
  const [clockKv, ceilingKv, compactedKv] = [0, 1, 2].map((i) => asRange(resp.responses[i]).kvs[0]);
  const ceiling = Math.max(clockKv ? decodeClockRecord(clockKv.value).revision : 0, ceilingKv ? decodeU64BE(ceilingKv.value) : 0);
  const compacted = compactedKv ? decodeU64BE(compactedKv.value) : 0;
  for (const m of c.members.slice(0, n)) {
    await raise(m, InternalKey.ceiling, ceiling);
    await raise(m, InternalKey.compacted, compacted);
  }
}

/** Raises an 8-byte big-endian record to `value` unless it is already there or higher. */
async function raise(m: EtcdClient, key: Buffer, value: number): Promise<void> {
  const v = encodeU64BE(value);
  await m.txn(txn([cmp.valueLess(key, v)], [op.put(key, v)]), { context: `raising ${key.toString()} to ${value}` });
}

/** Steps 3-5 (each skipped where already done). Slot N is retired only when listed. */
async function finish(c: MetaCluster, next: Layout, o: RemoveOptions): Promise<void> {
  const n = o.member;
  for (const m of c.members.slice(0, n)) {
    await rewriteLayout(m, (l) => {
      if (l.generation === next.generation) return undefined;
      if (l.generation !== next.generation - 1) throw new Error(`${m.name}'s layout is at generation ${l.generation}, expected ${next.generation - 1} or ${next.generation}`);
      return next;
    });
  }
  await hold('layouts', o.log);
  await shrinkClock(c, next);
  await hold('coordinator', o.log);
  const retired = c.members[n];
  if (retired) await retire(retired);
  else o.print(`member ${n}'s cluster is not in --members: if it still holds metaetcd keys, run the command again with it listed to clear them\n`);
}

/** Step 4: the clock record without N's entries, at L'.generation. */
async function shrinkClock(c: MetaCluster, next: Layout): Promise<void> {
  const entries = await clockEntries(c);
  if (entries === undefined) return;
  const n = next.members;
  if (entries !== n && entries !== n + 1) throw new Error(`the coordinator's clock record has ${entries} member entries; expected ${n + 1} or ${n}`);
  await updateClock(c, `removing member ${n} from the clock record`, entries, (r): CoordinatorRecord | undefined => {
    if (r.last.length === n && (r.layoutGeneration ?? 1) >= next.generation) return undefined;
    return {
      ...r,
      last: r.last.slice(0, n),
      ...(r.first ? { first: r.first.slice(0, n) } : {}),
      layoutGeneration: Math.max(r.layoutGeneration ?? 1, next.generation),
    };
  });
}

/** How many member entries the coordinator's clock record has (undefined: no record). */
async function clockEntries(c: MetaCluster): Promise<number | undefined> {
  const kv = (await c.coordinator.range({ key: CLOCK_KEY }, { context: 'reading the clock' })).kvs[0];
  if (!kv) return undefined;
  return decodeCoordinatorRecord(kv.value).last.length;
}

/** Step 5: N's etcd leases (only proxies grant leases there) revoked and every metaetcd key deleted. */
async function retire(member: EtcdClient): Promise<void> {
  for (const l of (await member.leaseLeases({ context: 'listing its leases' })).leases) {
    await member.leaseRevoke({ ID: l.ID }, { context: `revoking lease ${l.ID}` }).catch((err: unknown) => {
      if (!isKind(err, 'lease-not-found')) throw err;
    });
  }
  // One deleteRange: the identity goes with everything else, so a half-retired member never looks new.
  await member.deleteRange({ key: META, rangeEnd: prefixEnd(META) }, { context: 'deleting its metaetcd keys' });
}

/** Layout without N somewhere already: finish steps 3-5, or say there is nothing to do. */
async function finishRemoval(c: MetaCluster, layout: Layout, o: RemoveOptions): Promise<void> {
  const listed = c.members.length > o.member;
  const entries = await clockEntries(c);
  const generations = c.states.slice(0, o.member).map((s) => s.layout!.generation);
  const done = !listed && (entries ?? o.member) === o.member && generations.every((g) => g === layout.generation);
  if (done) {
    o.print(`nothing to do: the meta cluster has members 0..${o.member - 1} (member ${o.member} was removed, or never existed)\n`);
    return;
  }
  if (o.dryRun) {
    o.print(`an interrupted removal of member ${o.member} would be finished (layout generation ${layout.generation}, ${layout.members} members)\n`);
    return;
  }
  o.log.warn({ member: o.member }, 'finishing an interrupted removal');
  await finish(c, layout, o);
  o.print(`removed member ${o.member} (resumed): layout generation ${layout.generation} with ${layout.members} members\n`);
}

function printPlan(c: MetaCluster, next: Layout, o: RemoveOptions, leases: LeaseMove[]): void {
  const n = o.member;
  const byHome = new Map<number, number>();
  for (const l of leases) byHome.set(l.to, (byHome.get(l.to) ?? 0) + 1);
  const homes = [...byHome].sort(([a], [b]) => a - b).map(([m, k]) => `${k} to member ${m}`);
  const stay = c.members.slice(0, n).map((_, i) => i).join(', ');
  o.print(
    `remove member ${n} (layout generation ${next.generation - 1} -> ${next.generation}, ${n + 1} -> ${n} members):\n` +
      `  re-home ${leases.length} leases from member ${n}${homes.length ? ` (${homes.join(', ')})` : ''}\n` +
      `  fence member ${n}'s outstanding revision; carry its ceiling and compaction record to members ${stay}\n` +
      `  write layout generation ${next.generation} to members ${stay}\n` +
      `  cut the coordinator's clock record to ${n} members\n` +
      `  revoke member ${n}'s etcd leases and delete its metaetcd keys\n`,
  );
}

function hold(step: RemoveStep, log: Logger): Promise<void> {
  return holdIfAsked(REMOVE_HOLD_ENV, step, log);
}
