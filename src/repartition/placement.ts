// `metaetcd placement add PREFIX --to N` and `placement remove PREFIX`: a
// placement rule change, made offline like a partition move (every proxy
// stopped). It moves keys, not partitions: every client key under PREFIX whose
// owner differs between the layout of generation g (L) and the layout of g+1
// with the rule changed (L') is copied from its L owner to its L' owner with its
// envelope (meta revisions, lease, a versionBase keeping its version) and its
// lease index entries, in marked transactions; then L' goes to every member and
// the coordinator's layoutGeneration is raised; then each member that gave keys
// away is fenced and its copies removed (marked); last the change's history
// entry gets doneAt, below which revisions read as compacted (movedFloor).
//
// Progress is kept in m/move/state of member 0 (kind "placement"), so proxies
// refuse to start until the change is finished, partition moves refuse to start
// beside it, and a killed run is finished by the next placement command: in
// phase copy the copy restarts (the leftovers of the earlier attempt deleted
// first), in phases flipped and cleaning the remaining steps are finished.
//
// There is no catch-up or freeze (the partition mover's steps for writes during
// the copy): nothing writes client keys while no proxy runs, which is checked
// before the copy and again before the flip.

import { randomBytes } from 'node:crypto';
import type { Logger } from '../log.js';
import type { EtcdClient } from '../members/etcd-client.js';
import { rangePages } from '../members/range-pages.js';
import { cmp, op, txn } from '../proto/build.js';
import type { KeyValue } from '../proto/gen/kv.js';
import { decodeLayout, encodeLayout, Router, type Layout } from '../shard/layout.js';
import { decodePrefix, encodePrefix, showPrefix, type PlacementRule } from '../shard/placement.js';
import { InternalKey, isDataKey, LEASE_INDEX_PREFIX, parseLeaseIndexKey, toClientKey, toMemberRange } from '../store/keyspace.js';
import { prefixEnd } from '../util/bytes.js';
import { assertNoProxyServing, bumpLayoutGeneration, clockNow, newestLayout, refreshStates, type MetaCluster } from './connect.js';
import { putCopy, TargetVersions } from './copy.js';
import { rewriteLayout } from './layout-steps.js';
import { MarkedWriter, memberRevision } from './member-io.js';
import { holdIfAsked } from '../util/test-hold.js';
import { decodeMoveState, type MoveState } from './move-state.js';
import { fenceAtNewRevision } from './revision-fence.js';

/** Env var of the test-only hook: wait forever after the named step (PlacementPhase or 'cleaned'). */
export const PLACEMENT_HOLD_ENV = 'METAETCD_TEST_PLACEMENT_HOLD';

export type PlacementPhase = 'copy' | 'flipped' | 'cleaning';

/** The `m/move/state` record of a running placement change (in member 0). */
export interface PlacementState {
  kind: 'placement';
  /** Random id; also the value of every move marker the change writes. */
  id: string;
  /** The rule's prefix (base64). */
  prefix: string;
  /** The member the rule pins the prefix to; absent: the rule is removed. */
  member?: number;
  /** The layout generation the change started from (g); it makes g+1. */
  generation: number;
  phase: PlacementPhase;
  startedAt: string;
}

/** Member that keeps the state record: slot 0 always exists (only the last slot can be removed, never the only one). */
const STATE_MEMBER = 0;
const PAGE = 1000;
const LEASE_INDEX = { key: LEASE_INDEX_PREFIX, rangeEnd: prefixEnd(LEASE_INDEX_PREFIX) };

export interface PlacementOptions {
  prefix: Buffer;
  /** The member to pin to (add); undefined: remove the rule. */
  member: number | undefined;
  dryRun: boolean;
  log: Logger;
  print: (line: string) => void;
}

/** Key movements of one change, counted by (from, to). */
interface Moved {
  keys: number;
  byPair: Map<string, number>;
}

export function describeChange(prefix: string, member: number | undefined): string {
  return member === undefined ? `unpin ${showPrefix(prefix)}` : `pin ${showPrefix(prefix)} to member ${member}`;
}

/** Either running record in m/move/state: a partition move or a placement change. */
export async function findRunning(members: EtcdClient[]): Promise<{ move?: MoveState; placement?: PlacementState }> {
  const found: { move?: MoveState; placement?: PlacementState }[] = [];
  for (const m of members) {
    const kv = (await m.range({ key: InternalKey.move }, { context: 'looking for a running move' })).kvs[0];
    if (!kv) continue;
    const v = JSON.parse(kv.value.toString('utf8')) as { kind?: string };
    found.push(v.kind === 'placement' ? { placement: decodePlacementState(kv.value) } : { move: decodeMoveState(kv.value) });
  }
  if (found.length > 1) throw new Error(`several members record a running move or placement change; this should never happen`);
  return found[0] ?? {};
}

export function decodePlacementState(raw: Buffer): PlacementState {
  const v = JSON.parse(raw.toString('utf8')) as Partial<PlacementState>;
  if (
    v.kind !== 'placement' ||
    typeof v.id !== 'string' ||
    typeof v.prefix !== 'string' ||
    (v.member !== undefined && !Number.isInteger(v.member)) ||
    !Number.isInteger(v.generation) ||
    !['copy', 'flipped', 'cleaning'].includes(v.phase as string)
  ) {
    throw new Error('malformed placement state in m/move/state');
  }
  return v as PlacementState;
}

/** Runs `placement add` (member set) or `placement remove`, finishing an interrupted change first. */
export async function changePlacement(c: MetaCluster, o: PlacementOptions): Promise<void> {
  if (o.prefix.length === 0) throw new Error('a placement rule needs a non-empty prefix');
  await assertNoProxyServing(c.coordinator);
  const running = await findRunning(c.members);
  if (running.move) {
    throw new Error(
      `a partition move is in progress (${running.move.id}, phase ${running.move.phase}); finish it (run \`metaetcd partitions move\` again) or roll it back first`,
    );
  }
  if (running.placement) {
    const s = running.placement;
    if (o.dryRun) {
      // What comes after depends on the finished layouts: planned once the change is finished.
      o.print(`an interrupted placement change would be finished first: ${describeChange(s.prefix, s.member)} (phase ${s.phase}); plan again after it\n`);
      return;
    } else {
      o.log.warn({ change: s.id, phase: s.phase }, 'finishing an interrupted placement change');
      const moved = await runChange(c, s, o.log);
      o.print(`${done(s, moved)} (resumed)\n`);
      if (s.prefix === encodePrefix(o.prefix) && s.member === o.member) return;
    }
  }
  const layout = newestLayout(await refreshStates(c));
  const prefix = encodePrefix(o.prefix);
  const existing = (layout.rules ?? []).find((r) => r.prefix === prefix);
  if (o.member !== undefined) {
    if (!Number.isInteger(o.member) || o.member < 0 || o.member >= layout.members) {
      throw new Error(`member ${o.member} is not a member (the meta cluster has members 0..${layout.members - 1})`);
    }
    if (existing?.member === o.member) return o.print(`nothing to do: ${showPrefix(prefix)} is already pinned to member ${o.member}\n`);
  } else if (!existing) {
    const rules = (layout.rules ?? []).map((r) => showPrefix(r.prefix));
    throw new Error(`no placement rule for ${showPrefix(prefix)} (rules: ${rules.length ? rules.join(', ') : 'none'})`);
  }
  const behind = c.states.findIndex((s) => s.layout!.generation !== layout.generation);
  if (behind >= 0) {
    throw new Error(
      `member ${behind}'s layout is at generation ${c.states[behind]!.layout!.generation}, the newest is ${layout.generation}: ` +
        'an earlier command did not finish; run it again (see members list) before changing placement rules',
    );
  }
  const frozen = c.states.findIndex((s) => (s.layout?.frozen?.length ?? 0) > 0);
  if (frozen >= 0) throw new Error(`member ${frozen} has frozen partitions (an unfinished move); finish or roll it back first`);
  const state: PlacementState = {
    kind: 'placement',
    id: randomBytes(8).toString('hex'),
    prefix,
    ...(o.member !== undefined ? { member: o.member } : {}),
    generation: layout.generation,
    phase: 'copy',
    startedAt: new Date().toISOString(),
  };
  if (o.dryRun) return printPlan(c, layout, state, o);
  await createState(c.members[STATE_MEMBER]!, state);
  const moved = await runChange(c, state, o.log);
  o.print(`${done(state, moved)}\n`);
}

function done(s: PlacementState, moved: Moved): string {
  const what = s.member === undefined ? `unpinned ${showPrefix(s.prefix)}` : `pinned ${showPrefix(s.prefix)} to member ${s.member}`;
  return `${what}: ${moved.keys} keys moved${pairs(moved)}; layout generation ${s.generation + 1}`;
}

function pairs(moved: Moved): string {
  if (moved.byPair.size === 0) return '';
  const parts = [...moved.byPair].sort(([a], [b]) => a.localeCompare(b)).map(([k, n]) => `${n} from member ${k.replace('>', ' to member ')}`);
  return ` (${parts.join(', ')})`;
}

/** L' made from L: the rule changed, the next generation, lease homes made explicit, and a history entry. */
export function placedLayout(base: Layout, s: PlacementState, compactedRevision: number): Layout {
  if (base.generation !== s.generation) throw new Error(`the placement change needs the layout of generation ${s.generation}, got ${base.generation}`);
  if (base.leaseAssignment === undefined && base.generation !== 1) throw new Error('layout without lease homes after a move; refusing to guess them');
  const rules: PlacementRule[] = (base.rules ?? []).filter((r) => r.prefix !== s.prefix);
  if (s.member !== undefined) rules.push({ prefix: s.prefix, member: s.member });
  rules.sort((a, b) => Buffer.compare(decodePrefix(a.prefix), decodePrefix(b.prefix)));
  const kept = (base.placementChanges ?? []).filter((e) => !(e.doneAt > 0 && e.doneAt <= compactedRevision));
  const { rules: _rules, frozen: _frozen, ...rest } = base;
  const next: Layout = {
    ...rest,
    format: 3,
    generation: s.generation + 1,
    leaseAssignment: base.leaseAssignment ?? [...base.assignment],
    ...(rules.length > 0 ? { rules } : {}),
    placementChanges: [...kept, { generation: s.generation + 1, prefix: s.prefix, ...(s.member !== undefined ? { member: s.member } : {}), doneAt: 0 }],
  };
  return decodeLayout(encodeLayout(next));
}

async function createState(member: EtcdClient, s: PlacementState): Promise<void> {
  const resp = await member.txn(txn([cmp.createEqual(InternalKey.move, 0)], [op.put(InternalKey.move, Buffer.from(JSON.stringify(s)))]), {
    context: 'recording the placement change',
  });
  if (!resp.succeeded) throw new Error(`member ${STATE_MEMBER} already records a running move or placement change; run the command again to finish it`);
}

async function saveState(c: MetaCluster, s: PlacementState, phase: PlacementPhase): Promise<void> {
  s.phase = phase;
  await c.members[STATE_MEMBER]!.put({ key: InternalKey.move, value: Buffer.from(JSON.stringify(s)) }, { context: `recording placement phase ${phase}` });
}

/** The layouts before and after the change (L from a member still at g, or rebuilt from L' when none is). */
async function layoutsOf(c: MetaCluster, s: PlacementState): Promise<{ before: Layout; after: Layout }> {
  const states = await refreshStates(c);
  const compacted = Math.max(0, ...states.map((m) => m.compacted - 1));
  const before = states.find((m) => m.layout!.generation === s.generation)?.layout;
  const after = states.find((m) => m.layout!.generation === s.generation + 1)?.layout;
  if (after) return { before: before ?? unplaced(after, s), after };
  if (!before) throw new Error(`no member holds layout generation ${s.generation} or ${s.generation + 1}; the placement change ${s.id} cannot go on`);
  return { before, after: placedLayout(before, s, compacted) };
}

/** L rebuilt from L' (every member already at g+1): only its rules matter (for the leftovers' owners). */
function unplaced(after: Layout, s: PlacementState): Layout {
  const prior = [...(after.placementChanges ?? [])].reverse().find((e) => e.prefix === s.prefix && e.generation <= s.generation);
  const rules = (after.rules ?? []).filter((r) => r.prefix !== s.prefix);
  if (prior?.member !== undefined) rules.push({ prefix: s.prefix, member: prior.member });
  return { ...after, generation: s.generation, rules };
}

async function runChange(c: MetaCluster, s: PlacementState, log: Logger): Promise<Moved> {
  const l = log.child({ component: 'placement', change: s.id });
  const { before, after } = await layoutsOf(c, s);
  const from = new Router(before);
  const to = new Router(after);
  const prefix = decodePrefix(s.prefix);
  let moved: Moved = { keys: 0, byPair: new Map() };
  if (s.phase === 'copy') {
    // Leftovers of an interrupted copy: keys a member holds under the prefix but does not own under L.
    const leftovers = await deleteUnowned(c, prefix, from, s.id, false, l);
    if (leftovers > 0) l.info({ leftovers }, 'deleted the leftovers of an earlier attempt');
    moved = await copyKeys(c, prefix, from, to, s.id);
    l.info({ keys: moved.keys }, 'copied');
    await hold('copy', l);
    await assertNoProxyServing(c.coordinator);
    await saveState(c, s, 'flipped');
  } else {
    // Resumed after the copy: the keys still on their L owners (all of them until the clean-up starts).
    moved = await countMoves(c, prefix, from, to);
  }
  if (s.phase === 'flipped') {
    for (const member of c.members) {
      await rewriteLayout(member, (cur) => {
        if (cur.generation === after.generation) return undefined;
        if (cur.generation !== s.generation) throw new Error(`${member.name}'s layout is at generation ${cur.generation}, expected ${s.generation}`);
        return after;
      });
    }
    await bumpLayoutGeneration(c, after.generation);
    l.info({ generation: after.generation }, 'flipped');
    await hold('flipped', l);
    await saveState(c, s, 'cleaning');
  }
  // The copies left behind: every key under the prefix a member does not own under L'.
  const removed = await deleteUnowned(c, prefix, to, s.id, true, l);
  l.info({ removed }, 'copies left behind removed');
  await hold('cleaned', l);
  const doneAt = await clockNow(c);
  for (const member of c.members) {
    await rewriteLayout(member, (cur) => {
      const entry = cur.placementChanges?.find((e) => e.generation === after.generation);
      if (!entry || entry.doneAt > 0) return undefined;
      return { ...cur, placementChanges: cur.placementChanges!.map((e) => (e === entry ? { ...e, doneAt } : e)) };
    });
  }
  await c.members[STATE_MEMBER]!.deleteRange({ key: InternalKey.move }, { context: 'removing the placement state' });
  return moved;
}

/** The client key of a data key or lease index entry under `prefix` (member key form), else undefined. */
function clientKeyUnder(memberKey: Buffer, prefix: Buffer): Buffer | undefined {
  const k = isDataKey(memberKey) ? toClientKey(memberKey) : parseLeaseIndexKey(memberKey)?.clientKey;
  return k !== undefined && k.length >= prefix.length && k.subarray(0, prefix.length).equals(prefix) ? k : undefined;
}

/** Visits a member's data keys under `prefix` and lease index entries of such keys, at one member revision. */
async function scanPrefix(member: EtcdClient, prefix: Buffer, o: { keysOnly: boolean; visit: (kvs: KeyValue[]) => Promise<void> | void }): Promise<void> {
  const at = await memberRevision(member);
  for (const r of [toMemberRange(prefix, prefixEnd(prefix)), LEASE_INDEX]) {
    const req = { ...r, revision: BigInt(at), keysOnly: o.keysOnly };
    for await (const page of rangePages(member, req, PAGE, { context: `reading ${member.name}'s keys under the prefix` })) {
      const kvs = page.filter((kv) => clientKeyUnder(kv.key, prefix) !== undefined);
      if (kvs.length > 0) await o.visit(kvs);
    }
  }
}

/** Keys (data keys only) whose owner changes from `from` to `to`, by (source, target); sources are where they are now. */
async function countMoves(c: MetaCluster, prefix: Buffer, from: Router, to: Router): Promise<Moved> {
  const moved: Moved = { keys: 0, byPair: new Map() };
  for (const [i, member] of c.members.entries()) {
    await scanPrefix(member, prefix, {
      keysOnly: true,
      visit: (kvs) => {
        for (const kv of kvs) {
          if (!isDataKey(kv.key)) continue;
          const k = toClientKey(kv.key);
          const t = to.memberOf(k);
          if (from.memberOf(k) !== i || t === i) continue;
          moved.keys++;
          moved.byPair.set(`${i}>${t}`, (moved.byPair.get(`${i}>${t}`) ?? 0) + 1);
        }
      },
    });
  }
  return moved;
}

/** Copies every key under the prefix whose L owner holds it and whose L' owner differs, into the L' owner. */
async function copyKeys(c: MetaCluster, prefix: Buffer, from: Router, to: Router, id: string): Promise<Moved> {
  const moved: Moved = { keys: 0, byPair: new Map() };
  const writers = c.members.map((m) => new MarkedWriter(m, id));
  const versions = c.members.map(() => new TargetVersions());
  for (const [i, member] of c.members.entries()) {
    await scanPrefix(member, prefix, {
      keysOnly: false,
      visit: async (kvs) => {
        for (const kv of kvs) {
          const k = clientKeyUnder(kv.key, prefix)!;
          const t = to.memberOf(k);
          if (from.memberOf(k) !== i || t === i) continue;
          await putCopy(writers[t]!, versions[t]!, kv);
          if (isDataKey(kv.key)) {
            moved.keys++;
            moved.byPair.set(`${i}>${t}`, (moved.byPair.get(`${i}>${t}`) ?? 0) + 1);
          }
        }
      },
    });
    for (const w of writers) await w.flush();
  }
  return moved;
}

/**
 * Deletes, in marked txns, every key under the prefix (and lease index entry of
 * one) that a member holds but `owner` does not route to it. With `fence`, a
 * member is fenced at a new revision before its first deletion, as the partition
 * mover fences its source before the clean-up. Returns how many data keys went.
 */
async function deleteUnowned(c: MetaCluster, prefix: Buffer, owner: Router, id: string, fence: boolean, log: Logger): Promise<number> {
  let deleted = 0;
  for (const [i, member] of c.members.entries()) {
    const w = new MarkedWriter(member, id);
    let fenced = !fence;
    // The scan reads at one member revision, so deleting meanwhile does not disturb its pages.
    await scanPrefix(member, prefix, {
      keysOnly: true,
      visit: async (kvs) => {
        for (const kv of kvs) {
          if (owner.memberOf(clientKeyUnder(kv.key, prefix)!) === i) continue;
          if (!fenced) {
            log.info({ member: i, revision: await fenceAtNewRevision(c, i, log) }, 'member fenced before its copies are removed');
            fenced = true;
          }
          await w.delete(kv.key);
          if (isDataKey(kv.key)) deleted++;
        }
      },
    });
    await w.flush();
  }
  return deleted;
}

function printPlan(c: MetaCluster, layout: Layout, s: PlacementState, o: PlacementOptions): Promise<void> {
  const after = placedLayout(layout, s, 0);
  return countMoves(c, o.prefix, new Router(layout), new Router(after)).then((moved) => {
    o.print(
      `${describeChange(s.prefix, s.member)} (layout generation ${layout.generation} -> ${layout.generation + 1}):\n` +
        `  move ${moved.keys} keys${pairs(moved)}\n` +
        `  write layout generation ${layout.generation + 1} to every member; revisions before the change will read as compacted\n`,
    );
  });
}

function hold(step: PlacementPhase | 'cleaned', log: Logger): Promise<void> {
  return holdIfAsked(PLACEMENT_HOLD_ENV, step, log);
}

/** Keys under each rule on the rule's member (nested rules pinned to the same member included). */
export async function ruleKeyCounts(c: MetaCluster, rules: PlacementRule[]): Promise<number[]> {
  return Promise.all(
    rules.map(async (r) => {
      const p = decodePrefix(r.prefix);
      const resp = await c.members[r.member]!.range({ ...toMemberRange(p, prefixEnd(p)), countOnly: true }, { context: 'counting the keys under a rule' });
      return Number(resp.count);
    }),
  );
}
