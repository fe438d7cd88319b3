// `metaetcd members add URL[;URL...]...`: grows the meta cluster by empty member
// clusters, with every proxy stopped. Per cluster, three idempotent writes, in
// this order so that a run killed anywhere is finished by the next:
//   1. the new cluster is initialised as the member of the next slot (identity,
//      the grown layout L', clock record 0, compaction floor of the others);
//   2. L' (generation + 1, members + 1, assignment unchanged) to every existing
//      member;
//   3. the coordinator's clock record gets the new slot (last/first entry 0) and
//      layoutGeneration L'.generation.
// The new member holds no partitions until `rebalance` moves some to it.

import type { Logger } from '../log.js';
import { initialiseMember, readMemberState, urls, type MemberState } from '../members/bootstrap.js';
import type { Endpoint } from '../members/endpoints.js';
import type { EtcdClient } from '../members/etcd-client.js';
import type { CoordinatorRecord } from '../clock/coordinator-record.js';
import type { Layout } from '../shard/layout.js';
import { newestLayout, refreshStates, updateClock, type MetaCluster } from './connect.js';
import { rewriteLayout } from './layout-steps.js';
import { holdIfAsked } from '../util/test-hold.js';

/** Env var of the test-only hook: wait forever after the named step (AddStep). */
export const ADD_HOLD_ENV = 'METAETCD_TEST_ADD_HOLD';
type AddStep = 'initialised' | 'layouts';

export interface AddOptions {
  /** The clusters to add, in slot order; their clients are closed by the caller. */
  joining: EtcdClient[];
  dryRun: boolean;
  log: Logger;
}

/** Adds every cluster in turn; returns one line per cluster saying what was (or would be) done. */
export async function addMembers(c: MetaCluster, o: AddOptions): Promise<string[]> {
  const joined: MemberState[] = [];
  const lines: string[] = [];
  for (const client of o.joining) {
    const { line, state } = await addOne(c, joined, client, o);
    lines.push(line);
    joined.push(state);
  }
  return lines;
}

/** Refuses clusters already listed in --members (compared by endpoint URL). */
export function assertNotListed(listed: Endpoint[][], joining: Endpoint[][]): void {
  const known = new Set(listed.flat().map((e) => e.address));
  for (const cluster of joining) {
    const dup = cluster.find((e) => known.has(e.address));
    if (dup) throw new Error(`${dup.url} is already listed in --members: members add takes only clusters that are not members yet`);
  }
}

async function addOne(c: MetaCluster, joined: MemberState[], client: EtcdClient, o: AddOptions): Promise<{ line: string; state: MemberState }> {
  const where = urls(client);
  const existing = [...(await refreshStates(c)), ...(await Promise.all(joined.map((s) => readMemberState(s.client))))];
  const slot = existing.length;
  const state = await readMemberState(client);
  const layout = newestLayout([...existing, state]);
  const resuming = state.identity?.clusterId === layout.clusterId && state.identity.index === slot;
  if (state.identity && !resuming) {
    throw new Error(
      `${where} is member ${state.identity.index} of meta cluster ${state.identity.clusterId}, not a new member ${slot} of ${layout.clusterId}; ` +
        'members add takes empty clusters (to finish an interrupted add, run it again with the same URLs in the same order)',
    );
  }
  if (!state.identity && state.keyCount > 0) {
    throw new Error(`${where} holds ${state.keyCount} keys but no metaetcd identity; refusing to add a cluster with foreign data (give an empty cluster)`);
  }
  if (!resuming && layout.members > slot) {
    throw new Error(
      `member slot ${slot} already belongs to ${layout.endpoints?.[slot] ?? 'another cluster'} (an earlier add was interrupted?): ` +
        'list the clusters the meta cluster has in --members, or finish that add by running it again with its URL',
    );
  }
  if (state.moveInProgress !== undefined) throw new Error(`a partition move to ${where} is in progress; finish it first (run \`metaetcd rebalance\`)`);
  // On a resumed add the new member already holds the layout every member must get.
  const target = resuming ? state.layout! : grownLayout(layout, [...existing, state].map((s) => urls(s.client)));
  const behind = existing.filter((s) => s.layout!.generation < target.generation);
  if (o.dryRun) {
    const line = resuming
      ? `would finish adding ${where} as member ${slot} (${behind.length} layouts to write, then the coordinator)`
      : `would add ${where} as member ${slot}: layout generation ${target.generation}, ${target.members} members, no partitions until rebalance`;
    return { line, state };
  }
  if (!resuming) {
    const compacted = Math.max(0, ...existing.map((s) => s.compacted));
    await initialiseMember(client, { clusterId: target.clusterId, index: slot }, target, compacted);
    o.log.info({ slot, endpoints: where, generation: target.generation }, 'new member initialised');
  }
  await hold('initialised', o.log);
  for (const s of existing) await writeGrownLayout(s.client, target);
  await hold('layouts', o.log);
  const clockChanged = await updateClock(c, `adding member ${slot} to the clock record`, undefined, (r) => grownClock(r, target));
  const done = await readMemberState(client);
  if (done.identity?.index !== slot || done.identity.clusterId !== target.clusterId) throw new Error(`${where} did not take member slot ${slot} (another mover raced this one?)`);
  const line = `${resuming && behind.length === 0 && !clockChanged ? 'already added' : 'added'} ${where} as member ${slot} (layout generation ${target.generation}); ` +
    'restart the proxies with it in --members, then run `metaetcd rebalance` with them stopped to give it partitions';
  return { line, state: done };
}

/** L' from the newest layout L: one more member, no partitions for it, lease homes pinned to L's. */
export function grownLayout(base: Layout, endpoints: string[]): Layout {
  return {
    ...base,
    format: 2,
    generation: base.generation + 1,
    members: base.members + 1,
    // Lease homes never move (design.md, "Repartitioning"): pin them before the member count changes.
    leaseAssignment: base.leaseAssignment ?? [...base.assignment],
    endpoints,
  };
}

/** Step 2 on one existing member: skipped when it already has L' (or newer). */
async function writeGrownLayout(member: EtcdClient, target: Layout): Promise<void> {
  await rewriteLayout(member, (l) => {
    if (l.generation >= target.generation) return undefined;
    if (l.generation !== target.generation - 1) throw new Error(`${member.name}'s layout is at generation ${l.generation}, expected ${target.generation - 1}`);
    return target;
  });
}

/**
 * Step 3: the clock record with an entry 0 per new slot (a member that never
 * took a write has nothing a reader must wait for) up to `target.members`, at
 * L'.generation; undefined when it already has both. It may have any count from
 * the members before this add to `target.members` (several clusters added in one
 * command, or a rerun).
 */
function grownClock(r: CoordinatorRecord, target: Layout): CoordinatorRecord | undefined {
  if (r.last.length > target.members) {
    throw new Error(`the coordinator's clock record has ${r.last.length} member entries; expected at most ${target.members}`);
  }
  if (r.last.length === target.members && (r.layoutGeneration ?? 1) >= target.generation) return undefined;
  const pad = (a: number[]) => [...a, ...new Array<number>(target.members - a.length).fill(0)];
  return {
    ...r,
    last: pad(r.last),
    ...(r.first ? { first: pad(r.first) } : {}),
    layoutGeneration: Math.max(r.layoutGeneration ?? 1, target.generation),
  };
}

function hold(step: AddStep, log: Logger): Promise<void> {
  return holdIfAsked(ADD_HOLD_ENV, step, log);
}
