// `metaetcd members list`: every member slot with its endpoints, partition count,
// client keys and etcd db size, plus the layout generation, the move history,
// frozen partitions and the running move (if any), read from the clusters; the
// placement rules with the keys under each, and a running placement change.

import type { MoveEntry } from '../shard/layout.js';
import { showPrefix } from '../shard/placement.js';
import { newestLayout, type MetaCluster } from './connect.js';
import type { MoveState } from './move-state.js';
import { describeChange, findRunning, ruleKeyCounts, type PlacementState } from './placement.js';

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
  /** Placement rules (prefix as text, or "base64:..." when not UTF-8), with the keys under each on its member. */
  rules: RuleListing[];
  /** The placement change in progress, if any. */
  placement?: PlacementState;
}

export interface RuleListing {
  prefix: string;
  /** The prefix's bytes in base64, as the layout stores them. */
  prefixBase64: string;
  member: number;
  /** Client keys under the prefix on the rule's member (a nested rule to the same member included). */
  keys: number;
}

export async function listMembers(c: MetaCluster): Promise<MembersList> {
  const layout = newestLayout(c.states);
  const sizes = await Promise.all(c.members.map(async (m) => Number((await m.status({ context: 'reading its status' })).dbSize)));
  const { move, placement } = await findRunning(c.members);
  const rules = layout.rules ?? [];
  const counts = await ruleKeyCounts(c, rules);
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
    rules: rules.map((r, i) => ({ prefix: showPrefix(r.prefix), prefixBase64: r.prefix, member: r.member, keys: counts[i]! })),
    ...(placement ? { placement } : {}),
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
  if (l.rules.length > 0) {
    const rules = [['PREFIX', 'MEMBER', 'KEYS'], ...l.rules.map((r) => [r.prefix, String(r.member), String(r.keys)])];
    const w = rules[0]!.map((_, i) => Math.max(...rules.map((r) => r[i]!.length)));
    out += '\n' + rules.map((r) => r.map((c, i) => c.padEnd(w[i]!)).join('  ').trimEnd()).join('\n') + '\n';
  }
  if (l.placement) out += `running placement change ${l.placement.id}: ${describeChange(l.placement.prefix, l.placement.member)}, phase ${l.placement.phase}\n`;
  if (l.move) out += `running move ${l.move.id}: ${l.move.partitions.length} partitions from member ${l.move.from} to member ${l.move.to}, phase ${l.move.phase}\n`;
  return out;
}

function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1 << 20) return `${(n / 1024).toFixed(1)} kB`;
  return `${(n / (1 << 20)).toFixed(1)} MB`;
}
