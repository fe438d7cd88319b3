// `metaetcd members list`: every member slot with its endpoints, partition count,
// client keys and etcd db size, plus the layout generation, the move history,
// frozen partitions and the running move (if any), read from the clusters.

import type { MoveEntry } from '../shard/layout.js';
import { newestLayout, type MetaCluster } from './connect.js';
import { findMoveState, type MoveState } from './move-state.js';

export interface MemberListing {
  index: number;
  endpoints: string[];
  partitions: number;
  keys: number;
  dbSize: number;
}

export interface MembersList {
  clusterId: string;
  generation: number;
  partitions: number;
  members: MemberListing[];
  moves: MoveEntry[];
  /** Partitions fenced for writes (a move in its final step), by member. */
  frozen: { member: number; partitions: number[] }[];
  move?: MoveState;
}

export async function listMembers(c: MetaCluster): Promise<MembersList> {
  const layout = newestLayout(c.states);
  const sizes = await Promise.all(c.members.map(async (m) => Number((await m.status({ context: 'reading its status' })).dbSize)));
  const move = await findMoveState(c.members);
  return {
    clusterId: layout.clusterId,
    generation: layout.generation,
    partitions: layout.partitions,
    members: c.states.map((s, i) => ({
      index: i,
      endpoints: s.client.endpoints.map((e) => e.url),
      partitions: layout.assignment.filter((m) => m === i).length,
      keys: s.dataKeys,
      dbSize: sizes[i]!,
    })),
    moves: layout.moves ?? [],
    frozen: c.states.flatMap((s, i) => (s.layout?.frozen?.length ? [{ member: i, partitions: s.layout.frozen }] : [])),
    ...(move ? { move } : {}),
  };
}

export function formatMembersList(l: MembersList, writeOut: 'table' | 'json'): string {
  if (writeOut === 'json') return `${JSON.stringify(l, null, 2)}\n`;
  const rows = [['MEMBER', 'ENDPOINTS', 'PARTITIONS', 'KEYS', 'DB SIZE']];
  for (const m of l.members) rows.push([String(m.index), m.endpoints.join(';'), String(m.partitions), String(m.keys), bytes(m.dbSize)]);
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  let out = rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n') + '\n';
  out += `layout generation ${l.generation}, ${l.partitions} partitions, ${l.moves.length} move(s) in the history\n`;
  for (const f of l.frozen) out += `frozen on member ${f.member}: ${f.partitions.length} partitions\n`;
  if (l.move) out += `running move ${l.move.id}: ${l.move.partitions.length} partitions from member ${l.move.from} to member ${l.move.to}, phase ${l.move.phase}\n`;
  return out;
}

function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1 << 20) return `${(n / 1024).toFixed(1)} kB`;
  return `${(n / (1 << 20)).toFixed(1)} MB`;
}
