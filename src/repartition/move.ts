// One partition move, P from S to T, run to its end (docs/notes/repartitioning.md):
// copy → catch-up → freeze → final catch-up → flip → clean. Its progress is
// recorded in T's m/move/state, so a killed run is continued by the next one:
// from copy/frozen the copy restarts from scratch (T's leftovers of P deleted
// first), from flipped/cleaning the remaining steps are finished. Nothing of it
// depends on proxies.

import { randomBytes } from 'node:crypto';
import { isKind } from '../errors/etcd-error.js';
import type { Logger } from '../log.js';
import type { EtcdClient } from '../members/etcd-client.js';
import { readMemberState } from '../members/bootstrap.js';
import { CompactedHistory, catchUp } from './catch-up.js';
import { assertNoProxyServing, newestLayout, clockNow, type MetaCluster } from './connect.js';
import { copyPartitions, TargetVersions } from './copy.js';
import { flip, freeze, liftFreeze, markDone } from './layout-steps.js';
import { fenceAtNewRevision } from './revision-fence.js';
import { holdIfAsked } from '../util/test-hold.js';
import { deleteCarried, memberRevision, PartitionFilter } from './member-io.js';
import { createMoveState, deleteMoveState, findMoveState, saveMoveState, type MovePhase, type MoveState } from './move-state.js';

/** Catch-up rounds before the freeze stop once a round applied fewer events than this... */
const SMALL_DELTA = 100;
/** ...or after this many rounds (the freeze's final catch-up takes whatever is left). */
const MAX_ROUNDS = 10;
/** Env var of the test-only hook: wait forever after completing the named phase. */
export const HOLD_ENV = 'METAETCD_TEST_MOVE_HOLD';

export interface MoveProgress {
  phase: 'copy' | 'catch-up' | 'clean';
  done: number;
  total: number;
}

export interface MoveOptions {
  coordinator: EtcdClient;
  /** Member clients ordered by member slot. */
  members: EtcdClient[];
  partitions: number[];
  to: number;
  log: Logger;
  onProgress?: (p: MoveProgress) => void;
  signal?: AbortSignal;
}

export interface MoveResult {
  id: string;
  partitions: number[];
  from: number;
  to: number;
  keysCopied: number;
  catchUpRounds: number;
  /** From the freeze to the end of the flip (0 when a resumed run did not freeze). */
  freezeMs: number;
  /** Whether this run continued a move an earlier run had started. */
  resumed: boolean;
}

export async function clusterOf(coordinator: EtcdClient, members: EtcdClient[]): Promise<MetaCluster> {
  const states = await Promise.all(members.map(readMemberState));
  return { coordinator, members, states, close: () => undefined };
}

/** Moves P (all on one source member) to member `to`; continues the same move if an earlier run was interrupted. */
export async function movePartitions(o: MoveOptions): Promise<MoveResult> {
  await assertNoProxyServing(o.coordinator);
  const c = await clusterOf(o.coordinator, o.members);
  const running = await findMoveState(c.members);
  const wanted = [...new Set(o.partitions)].sort((a, b) => a - b);
  if (running) {
    if (running.to !== o.to || !sameSet(running.partitions, wanted)) {
      throw new Error(`another move is running (${running.id}: ${running.partitions.length} partitions from ${running.from} to ${running.to}, phase ${running.phase}); finish or roll it back first`);
    }
    return runMove(c, running, o, true);
  }
  const layout = newestLayout(c.states);
  const sources = new Set(wanted.map((p) => layout.assignment[p]));
  if (wanted.length === 0) throw new Error('no partitions to move');
  if (sources.size !== 1) throw new Error(`the partitions are on members ${[...sources].join(', ')}: one move takes partitions of one source (run one move per source)`);
  const from = layout.assignment[wanted[0]!]!;
  if (from === o.to) throw new Error(`the partitions are already on member ${o.to}`);
  if (o.to < 0 || o.to >= c.members.length) throw new Error(`member ${o.to} does not exist`);
  const state: MoveState = {
    id: randomBytes(8).toString('hex'),
    partitions: wanted,
    from,
    to: o.to,
    phase: 'copy',
    generation: layout.generation,
    startedAt: new Date().toISOString(),
  };
  await createMoveState(c.members[o.to]!, state);
  return runMove(c, state, o, false);
}

/** Undoes a move that has not flipped: T's copies deleted, S's freeze lifted, the state removed. */
export async function rollbackMove(o: { coordinator: EtcdClient; members: EtcdClient[]; log: Logger }): Promise<MoveState | undefined> {
  await assertNoProxyServing(o.coordinator);
  const s = await findMoveState(o.members);
  if (!s) return undefined;
  if (s.phase === 'flipped' || s.phase === 'cleaning') {
    throw new Error(`move ${s.id} has already flipped (phase ${s.phase}); it can only be finished: run the move again`);
  }
  const layout = newestLayout(await Promise.all(o.members.map(readMemberState)));
  const filter = new PartitionFilter(s.partitions, layout);
  const deleted = await deleteCarried(o.members[s.to]!, filter, s.id);
  await liftFreeze(o.members[s.from]!);
  await deleteMoveState(o.members[s.to]!);
  o.log.info({ move: s.id, deleted }, 'move rolled back');
  return s;
}

async function runMove(c: MetaCluster, s: MoveState, o: MoveOptions, resumed: boolean): Promise<MoveResult> {
  const log = o.log.child({ component: 'mover', move: s.id });
  const source = c.members[s.from]!;
  const target = c.members[s.to]!;
  const filter = new PartitionFilter(s.partitions, newestLayout(c.states));
  const result: MoveResult = { id: s.id, partitions: s.partitions, from: s.from, to: s.to, keysCopied: 0, catchUpRounds: 0, freezeMs: 0, resumed };
  if (resumed) log.warn({ phase: s.phase }, 'continuing an interrupted move');
  let frozenAt = 0;
  if (s.phase === 'copy' || s.phase === 'frozen') {
    // A freeze left by an interrupted run is lifted while the copy runs again.
    if (s.phase === 'frozen') await liftFreeze(source);
    frozenAt = await copyAndFreeze(c, s, filter, result, o, log);
    s.phase = 'flipped';
    s.flipAt = (await clockNow(c)) + 1;
    await saveMoveState(target, s);
  }
  if (s.phase === 'flipped') {
    await flip(c, s);
    if (frozenAt > 0) result.freezeMs = Date.now() - frozenAt;
    log.info({ generation: s.generation + 1, at: s.flipAt }, 'flipped');
    await hold('flipped', log);
    s.phase = 'cleaning';
    await saveMoveState(target, s);
  }
  // Readings taken before the layout bump (a proxy still routing P to S) have revisions below this fence,
  // so they read S as it was before the removal below.
  const fence = await fenceAtNewRevision(c, s.from, log);
  log.info({ revision: fence }, 'source fenced before its copies are removed');
  const removed = await deleteCarried(source, filter, s.id);
  o.onProgress?.({ phase: 'clean', done: removed, total: removed });
  log.info({ removed }, "source copies removed");
  await hold('cleaning', log);
  await markDone(c, s, await clockNow(c));
  await deleteMoveState(target);
  return result;
}

/** Step 1 and 2, restarted from scratch when S compacts the history a catch-up needs. Returns when the freeze began. */
async function copyAndFreeze(c: MetaCluster, s: MoveState, filter: PartitionFilter, r: MoveResult, o: MoveOptions, log: Logger): Promise<number> {
  const source = c.members[s.from]!;
  const target = c.members[s.to]!;
  for (;;) {
    try {
      await setPhase(target, s, 'copy');
      const leftovers = await deleteCarried(target, filter, s.id);
      if (leftovers > 0) log.info({ leftovers }, "deleted the target's leftovers of an earlier attempt");
      const versions = new TargetVersions();
      const base = { source, target, filter, moveId: s.id, versions, signal: o.signal };
      const copied = await copyPartitions({ ...base, onProgress: (done, total) => o.onProgress?.({ phase: 'copy', done, total }) });
      r.keysCopied = copied.keys;
      s.copiedAt = copied.at;
      await saveMoveState(target, s);
      let position = copied.at;
      for (let round = 0; round < MAX_ROUNDS; round++) {
        const to = await memberRevision(source);
        const { applied } = await catchUp({ ...base, from: position, to });
        r.catchUpRounds++;
        o.onProgress?.({ phase: 'catch-up', done: applied, total: applied });
        position = to;
        if (applied < SMALL_DELTA) break;
      }
      await hold('copy', log);
      await setPhase(target, s, 'frozen');
      const frozenAt = Date.now();
      const freezeRevision = await freeze(source, s);
      await catchUp({ ...base, from: position, to: freezeRevision });
      r.catchUpRounds++;
      await hold('frozen', log);
      return frozenAt;
    } catch (err) {
      // S compacted past s0 while the copy read at it, or past the start of a catch-up.
      if (!(err instanceof CompactedHistory) && !isKind(err, 'compacted')) throw err;
      log.warn({ err: (err as Error).message }, 'history compacted during the move; restarting the copy');
      await liftFreeze(source);
    }
  }
}

async function setPhase(target: EtcdClient, s: MoveState, phase: MovePhase): Promise<void> {
  s.phase = phase;
  await saveMoveState(target, s);
}

/** The test-only hook (HOLD_ENV): announce and wait forever, so a test can kill the process at this point. */
function hold(phase: MovePhase, log: Logger): Promise<void> {
  return holdIfAsked(HOLD_ENV, phase, log);
}

function sameSet(a: number[], b: number[]): boolean {
  const sa = new Set(a);
  return sa.size === new Set(b).size && b.every((x) => sa.has(x));
}
