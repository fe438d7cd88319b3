// Output of `metaetcd status`: one JSON object (-w json) or, by default, tables
// in etcdctl's style with the errors listed below them.

import type { MetaStatus } from './status.js';

export type WriteOut = 'table' | 'json';

export function formatStatus(s: MetaStatus, w: WriteOut): string {
  return w === 'json' ? `${JSON.stringify(s, null, 2)}\n` : statusTables(s);
}

function statusTables(s: MetaStatus): string {
  const summary = [
    `meta cluster ${s.clusterId ?? '(unknown)'}: ${s.healthy ? 'healthy' : 'UNHEALTHY'}`,
    `meta revision: ${s.metaRevision ?? 'unknown'}, compacted revision: ${s.compactedRevision ?? 'unknown'}`,
    `proxies: ${s.proxies ? s.proxies.length : 'unknown'}`,
    ...(s.proxies ?? []).map((p) => `  ${p.urls.join(',')} (host ${p.host}, pid ${p.pid}, since ${p.since})`),
  ];
  const members = table(
    ['INDEX', 'ENDPOINTS', 'HEALTHY', 'SLOT', 'PARTITIONS', 'KEYS', 'META REVISION', 'REVISION', 'LEADER', 'VERSION', 'DB SIZE'],
    s.members.map((m) => [
      String(m.index),
      m.endpoints.join(','),
      String(m.healthy),
      opt(m.slot),
      m.partitions !== undefined ? `${m.partitions}/${m.partitionsTotal}` : '',
      opt(m.keys),
      opt(m.metaRevision),
      opt(m.etcd?.revision),
      m.etcd?.leader ?? '',
      m.etcd?.version ?? '',
      m.etcd ? bytes(m.etcd.dbSize) : '',
    ]),
  );
  const c = s.coordinator;
  const clock = c.clock === undefined ? '' : c.clock === null ? 'none yet' : `${c.clock.revision} (ceiling ${c.clock.ceiling})`;
  const coordinator = table(
    ['COORDINATOR', 'HEALTHY', 'CLOCK', 'REVISION', 'LEADER', 'VERSION', 'DB SIZE'],
    [[c.endpoints.join(','), String(c.healthy), clock, opt(c.etcd?.revision), c.etcd?.leader ?? '', c.etcd?.version ?? '', c.etcd ? bytes(c.etcd.dbSize) : '']],
  );
  const errors = [
    ...s.members.flatMap((m) => (m.error ? [`member ${m.index} (${m.endpoints.join(',')}): ${m.error}`] : [])),
    ...(c.error ? [`coordinator (${c.endpoints.join(',')}): ${c.error}`] : []),
  ];
  return [summary.join('\n'), members, coordinator, ...(errors.length > 0 ? [errors.join('\n')] : [])].join('\n\n') + '\n';
}

/** An etcdctl-style table: +---+ borders, a header row, left-aligned cells. */
function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const rule = `+${widths.map((w) => '-'.repeat(w + 2)).join('+')}+`;
  const line = (cells: string[]) => `|${cells.map((c, i) => ` ${c.padEnd(widths[i]!)} `).join('|')}|`;
  return [rule, line(header), rule, ...rows.map(line), rule].join('\n');
}

function opt(n: number | undefined): string {
  return n === undefined ? '' : String(n);
}

/** Sizes as etcdctl prints them (SI units). */
function bytes(n: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let i = 0;
  let v = n;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return i === 0 ? `${n} B` : `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}
