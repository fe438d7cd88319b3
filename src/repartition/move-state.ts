// The `m/move/state` record: the running move, kept in the target member. It is
// created with a create-if-absent compare, so at most one move runs per target;
// the mover also refuses to start while any member holds one (one move at a time
// in the whole meta cluster). A re-run finds it and continues from its phase.

import type { EtcdClient } from '../members/etcd-client.js';
import { asRange, cmp, op, txn } from '../proto/build.js';
import { InternalKey } from '../store/keyspace.js';

export type MovePhase = 'copy' | 'frozen' | 'flipped' | 'cleaning';

export interface MoveState {
  /** Random id; also the value of every move marker the move writes. */
  id: string;
  partitions: number[];
  from: number;
  to: number;
  phase: MovePhase;
  /** The layout generation the move started from (g); the flip makes g+1. */
  generation: number;
  /** Source member revision the last copy read at. */
  copiedAt?: number;
  /** The flip revision F (from phase flipped on). */
  flipAt?: number;
  startedAt: string;
}

export function decodeMoveState(raw: Buffer): MoveState {
  const v = JSON.parse(raw.toString('utf8')) as Partial<MoveState>;
  if ((v as { kind?: unknown }).kind === 'placement') {
    // The record of a placement change (repartition/placement.ts), which uses the same key.
    throw new Error('a placement change is in progress (m/move/state in member 0); finish it first: run `metaetcd placement add` or `placement remove` again (see members list)');
  }
  if (
    typeof v.id !== 'string' ||
    !Array.isArray(v.partitions) ||
    !Number.isInteger(v.from) ||
    !Number.isInteger(v.to) ||
    !['copy', 'frozen', 'flipped', 'cleaning'].includes(v.phase as string) ||
    !Number.isInteger(v.generation)
  ) {
    throw new Error('malformed m/move/state record');
  }
  return v as MoveState;
}

const encode = (s: MoveState) => Buffer.from(JSON.stringify(s));

/** Creates the record in T; fails if T already holds one (another move). */
export async function createMoveState(target: EtcdClient, s: MoveState): Promise<void> {
  const resp = await target.txn(txn([cmp.createEqual(InternalKey.move, 0)], [op.put(InternalKey.move, encode(s))], [op.range(InternalKey.move)]), {
    context: 'recording the move state',
  });
  if (resp.succeeded) return;
  const kv = asRange(resp.responses[0]).kvs[0];
  const other = kv ? decodeMoveState(kv.value) : undefined;
  throw new Error(
    `member ${s.to} already records a running move${other ? ` (${other.id}: partitions from ${other.from} to ${other.to}, phase ${other.phase})` : ''}; ` +
      'finish it (run the command again) or roll it back (partitions move --rollback) first',
  );
}

/** Rewrites the record (only the mover that holds it writes it). */
export async function saveMoveState(target: EtcdClient, s: MoveState): Promise<void> {
  await target.put({ key: InternalKey.move, value: encode(s) }, { context: `recording move phase ${s.phase}` });
}

export async function deleteMoveState(target: EtcdClient): Promise<void> {
  await target.deleteRange({ key: InternalKey.move }, { context: 'removing the move state' });
}

/** The running move, if any member records one (members ordered by slot). */
export async function findMoveState(members: EtcdClient[]): Promise<MoveState | undefined> {
  const found: MoveState[] = [];
  for (const m of members) {
    const resp = await m.range({ key: InternalKey.move }, { context: 'looking for a running move' });
    const kv = resp.kvs[0];
    if (kv) found.push(decodeMoveState(kv.value));
  }
  if (found.length > 1) throw new Error(`several members record a running move (${found.map((s) => s.id).join(', ')}); this should never happen`);
  return found[0];
}
