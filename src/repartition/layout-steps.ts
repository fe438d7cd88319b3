// The layout writes of a move: the freeze (S's record gets `frozen: P`, same
// generation), the flip (the layout of generation g+1 to every member, S last,
// then the coordinator's layoutGeneration), lifting a freeze (rollback), and the
// move entry's doneAt once S's copies are gone.

import type { EtcdClient } from '../members/etcd-client.js';
import { asRange, cmp, op, txn } from '../proto/build.js';
import { decodeLayout, encodeLayout, type Layout } from '../shard/layout.js';
import { InternalKey } from '../store/keyspace.js';
import { bumpLayoutGeneration, refreshStates, type MetaCluster } from './connect.js';
import type { MoveState } from './move-state.js';

async function readLayout(client: EtcdClient): Promise<{ layout: Layout; mod: number }> {
  const resp = await client.txn(txn([], [op.range(InternalKey.layout)]), { readOnly: true, context: 'reading the layout' });
  const kv = asRange(resp.responses[0]).kvs[0];
  if (!kv) throw new Error(`${client.name} has no layout`);
  return { layout: decodeLayout(kv.value), mod: Number(kv.modRevision) };
}

/**
 * Rewrites a member's layout with `change` applied, unless it changed meanwhile
 * (then again from the new one). Returns the member revision of the write, or of
 * the read when nothing needed writing.
 */
export async function rewriteLayout(client: EtcdClient, change: (l: Layout) => Layout | undefined): Promise<number> {
  for (let attempt = 0; attempt < 100; attempt++) {
    const { layout, mod } = await readLayout(client);
    const next = change(layout);
    if (!next) return mod;
    const resp = await client.txn(txn([cmp.modEqual(InternalKey.layout, mod)], [op.put(InternalKey.layout, encodeLayout(next))]), {
      context: 'rewriting the layout',
    });
    if (resp.succeeded) return Number(resp.header?.revision ?? 0n);
  }
  throw new Error(`${client.name}'s layout kept changing while the mover rewrote it`);
}

const withoutFrozen = (l: Layout): Layout => {
  const { frozen: _frozen, ...rest } = l;
  return rest;
};

/** Step 2: fences P's writes on S. Returns the freeze's member revision on S. */
export function freeze(source: EtcdClient, s: MoveState): Promise<number> {
  return rewriteLayout(source, (l) => {
    if (l.generation !== s.generation) throw new Error(`${source.name}'s layout is at generation ${l.generation}, the move started at ${s.generation}`);
    return { ...l, format: 2, frozen: [...s.partitions] };
  });
}

/** Rollback / restart: S's record without `frozen` (same generation). */
export async function liftFreeze(source: EtcdClient): Promise<void> {
  await rewriteLayout(source, (l) => (l.frozen && l.frozen.length > 0 ? withoutFrozen(l) : undefined));
}

/** The layout of generation g+1 made from the layout of generation g. */
export function flippedLayout(base: Layout, s: MoveState, compactedRevision: number): Layout {
  if (base.generation !== s.generation) throw new Error(`flip needs the layout of generation ${s.generation}, got ${base.generation}`);
  if (base.leaseAssignment === undefined && base.generation !== 1) throw new Error('layout without lease homes after a move; refusing to guess them');
  const assignment = [...base.assignment];
  for (const p of s.partitions) assignment[p] = s.to;
  // Entries whose reads can no longer happen (compacted past doneAt) are pruned at this write.
  const kept = (base.moves ?? []).filter((e) => !(e.doneAt > 0 && e.doneAt <= compactedRevision));
  return {
    ...withoutFrozen(base),
    format: 2,
    generation: s.generation + 1,
    assignment,
    leaseAssignment: base.leaseAssignment ?? [...base.assignment],
    moves: [...kept, { generation: s.generation + 1, partitions: [...s.partitions], from: s.from, to: s.to, at: s.flipAt!, doneAt: 0 }],
  };
}

/** Members in the order layouts are written: the target and the others first, the source last. */
function writeOrder(c: MetaCluster, s: MoveState): EtcdClient[] {
  return [...c.members.filter((_, i) => i !== s.from), c.members[s.from]!];
}

/** Step 3 (idempotent, so a resumed move redoes it): layouts of g+1 everywhere, then the coordinator. */
export async function flip(c: MetaCluster, s: MoveState): Promise<void> {
  const states = await refreshStates(c);
  const compacted = Math.max(0, ...states.map((m) => m.compacted - 1));
  // A member already at g+1 (an interrupted flip) has the layout every member must get.
  const done = states.find((m) => m.layout!.generation === s.generation + 1)?.layout;
  const base = states[s.from]!.layout!;
  const next = done ?? flippedLayout(base, s, compacted);
  for (const member of writeOrder(c, s)) {
    await rewriteLayout(member, (l) => {
      if (l.generation === next.generation) return undefined;
      if (l.generation !== s.generation) throw new Error(`${member.name}'s layout is at generation ${l.generation}, expected ${s.generation}`);
      return next;
    });
  }
  await bumpLayoutGeneration(c, next.generation);
}

/** Step 4's end: the move entry of generation g+1 gets doneAt = D in every member's layout (S last). */
export async function markDone(c: MetaCluster, s: MoveState, doneAt: number): Promise<void> {
  for (const member of writeOrder(c, s)) {
    await rewriteLayout(member, (l) => {
      const entry = l.moves?.find((e) => e.generation === s.generation + 1);
      if (!entry || entry.doneAt > 0) return undefined;
      return { ...l, moves: l.moves!.map((e) => (e === entry ? { ...e, doneAt } : e)) };
    });
  }
}
