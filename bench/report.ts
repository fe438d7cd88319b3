// Printing: per-target details as each phase ends, then the side-by-side
// comparison as markdown: the issue's compact table (one row per client count)
// for each proxy target, the proxy by worker count, the KV mix per client count
// in detail, watchers, and each op type run alone (CPU and upstream round trips
// per op type).

import { OP_TYPES, totalErrors, totalOps, type MixResult, type OpType } from './load.js';
import { total, upstreamCalls, type RoundTrips } from './prom.js';
import { fmt, kib, mib, ratio, Samples, table } from './stats.js';
import type { WatchResult } from './watchers.js';

export interface Probe {
  ops: number;
  errors: number;
  elapsedS: number;
  /** CPU seconds of each process (and the load generator). */
  cpu: Map<string, number>;
  rt: RoundTrips;
}

/** One KV-mix run at one client count. */
export interface Cell {
  clients: number;
  mix: MixResult;
  /** CPU seconds of each process over the mix (including "load generator"). */
  cpu: Map<string, number>;
  rt: RoundTrips;
}

export interface TargetResult {
  kind: 'direct' | 'proxy';
  /** `--workers N` of a proxy target; undefined when no --workers flag was passed. */
  workers: number | undefined;
  /** One per client count, in the order they ran. */
  cells: Cell[];
  /** Each op type alone, at `probeClients` clients. */
  probes: Map<OpType, Probe>;
  probeClients: number;
  watch: WatchResult | undefined;
  watchError: string | undefined;
}

const LOADGEN = 'load generator';

function per1000(v: number, ops: number): number {
  return ops > 0 ? (v / ops) * 1000 : NaN;
}

/** "direct etcd", "proxy" or "proxy ×N workers". */
export function targetLabel(r: Pick<TargetResult, 'kind' | 'workers'>): string {
  if (r.kind === 'direct') return 'direct etcd';
  return r.workers === undefined ? 'proxy' : `proxy ×${r.workers} worker${r.workers === 1 ? '' : 's'}`;
}

// ---------------------------------------------------------------------------
// Per-target details

export function printMix(t: TargetResult, r: Cell): void {
  const m = r.mix;
  const n = totalOps(m);
  console.log(`\n### KV mix — ${targetLabel(t)}, ${r.clients} clients: ${fmt(n / m.elapsedS, 0)} ops/s over ${m.elapsedS.toFixed(1)} s (${n} ops, ${totalErrors(m)} errors)`);
  const rows = OP_TYPES.map((t) => {
    const s = m.ops.get(t)!;
    return [t, String(s.samples.count), fmt(s.samples.count / m.elapsedS, 1), fmt(s.samples.quantile(0.5)), fmt(s.samples.quantile(0.99)), fmt(s.samples.mean()), String(s.errors)];
  });
  console.log(table(['op', 'count', 'ops/s', 'p50 ms', 'p99 ms', 'mean ms', 'errors'], rows));
  const notes = [...m.notes].map(([k, v]) => {
    const lists = /^(list(?:-all)?) (pages|keys)$/.exec(k);
    if (lists) {
      const count = m.ops.get(lists[1] as OpType)!.samples.count;
      return `${k}/op ${fmt(v / Math.max(1, count), 1)}`;
    }
    return `${k} ${v}`;
  });
  if (notes.length) console.log(`outcomes: ${notes.join(', ')}`);
  if (m.errorMessages.length) console.log(`first errors: ${m.errorMessages.join(' | ')}`);
  console.log(
    table(
      ['process', 'CPU s', 'cores', 'CPU ms/op'],
      [...r.cpu].map(([label, v]) => [label, fmt(v), fmt(v / m.elapsedS), fmt(per1000(v, n), 3)]),
    ),
  );
  if (t.kind === 'proxy') {
    const writes = writesOf(r);
    const reads = n - writes;
    const clock = r.rt.clock;
    console.log(
      `proxy clock round trips: ${[...clock].map(([k, v]) => `${k} ${v}`).join(', ') || 'none'}` +
        ` → ${fmt(clockRoundTripsPerWrite(r), 3)} per write (allocate+conflict+ceiling),` +
        ` ${fmt((clock.get('read') ?? 0) / Math.max(1, reads), 3)} reads per read op`,
    );
    console.log(`member write attempts: ${[...r.rt.writeAttempts].map(([k, v]) => `${k} ${v}`).join(', ') || 'none'} → ${fmt(total(r.rt.writeAttempts) / Math.max(1, writes), 3)} per write`);
  }
  console.log(`unary gRPC calls each etcd served: ${[...r.rt.upstream].map(([label, calls]) => `${label} {${[...calls].filter(([, v]) => v > 0).map(([k, v]) => `${k} ${v}`).join(', ')}}`).join(', ')}`);
}

export function printProbes(r: TargetResult): void {
  if (r.probes.size === 0) return;
  console.log(`\n### Each op type alone — ${targetLabel(r)}, ${r.probeClients} clients`);
  console.log(r.kind === 'direct' ? directProbeTable(r) : proxyProbeTable(r));
}

function serverCpuOf(cpu: Map<string, number>): number {
  let s = 0;
  for (const [label, v] of cpu) if (label !== LOADGEN) s += v;
  return s;
}

/** CPU milliseconds per op. */
function msPerOp(cpuS: number | undefined, ops: number): string {
  return cpuS === undefined ? '–' : fmt((cpuS * 1000) / Math.max(1, ops), 3);
}

function directProbeTable(r: TargetResult): string {
  const rows = [...r.probes].map(([t, p]) => {
    const calls = upstreamCalls(p.rt, () => true);
    return [t, fmt(p.ops / p.elapsedS, 0), msPerOp(p.cpu.get('etcd'), p.ops), fmt(calls / Math.max(1, p.ops), 2), String(p.errors)];
  });
  return table(['op', 'ops/s', 'etcd CPU ms/op', 'etcd calls/op', 'errors'], rows);
}

function proxyProbeTable(r: TargetResult): string {
  const rows = [...r.probes].map(([t, p]) => {
    const per = (v: number) => fmt(v / Math.max(1, p.ops), 2);
    const members = [...p.rt.upstream].filter(([l]) => l.startsWith('member'));
    const memberCalls = (method: string) => members.reduce((a, [, m]) => a + (m.get(method) ?? 0), 0);
    const clock = p.rt.clock;
    return [
      t,
      fmt(p.ops / p.elapsedS, 0),
      msPerOp(p.cpu.get('proxy'), p.ops),
      msPerOp(serverCpuOf(p.cpu), p.ops),
      per(upstreamCalls(p.rt, (l) => l === 'coordinator')),
      `${per(memberCalls('Txn'))} / ${per(memberCalls('Range'))}`,
      `${per(clock.get('allocate') ?? 0)} / ${per(clock.get('read') ?? 0)} / ${per((clock.get('conflict') ?? 0) + (clock.get('ceiling') ?? 0))}`,
      per(total(p.rt.writeAttempts)),
      String(p.errors),
    ];
  });
  return table(
    ['op', 'ops/s', 'proxy CPU ms/op', 'all servers CPU ms/op', 'coordinator calls/op', 'member Txn / Range calls/op', 'clock RTs/op: allocate / read / other', 'member write attempts/op', 'errors'],
    rows,
  );
}

/** Both targets, one row per op type, each op type run alone. */
function probeComparison(d: TargetResult | undefined, p: TargetResult | undefined): string {
  const rows: string[][] = [];
  for (const t of OP_TYPES) {
    const dp = d?.probes.get(t);
    const pp = p?.probes.get(t);
    if (!dp && !pp) continue;
    const rate = (x: Probe | undefined) => (x ? x.ops / x.elapsedS : undefined);
    const cpuMs = (x: Probe | undefined) => (x ? (serverCpuOf(x.cpu) * 1000) / Math.max(1, x.ops) : undefined);
    const show = (v: number | undefined, digits = 2) => (v === undefined ? '–' : fmt(v, digits));
    const per = (v: number) => (pp ? fmt(v / Math.max(1, pp.ops), 2) : '–');
    const members = pp ? [...pp.rt.upstream].filter(([l]) => l.startsWith('member')) : [];
    const memberCalls = (method: string) => members.reduce((a, [, m]) => a + (m.get(method) ?? 0), 0);
    rows.push([
      t,
      show(rate(dp), 0),
      show(rate(pp), 0),
      rate(dp) !== undefined && rate(pp) !== undefined ? ratio(rate(pp)!, rate(dp)!) : '–',
      show(cpuMs(dp), 3),
      show(cpuMs(pp), 3),
      pp ? msPerOp(pp.cpu.get('proxy'), pp.ops) : '–',
      cpuMs(dp) !== undefined && cpuMs(pp) !== undefined ? ratio(cpuMs(pp)!, cpuMs(dp)!) : '–',
      pp ? per(upstreamCalls(pp.rt, (l) => l === 'coordinator')) : '–',
      pp ? `${per(memberCalls('Txn'))} / ${per(memberCalls('Range'))}` : '–',
      pp ? per(total(pp.rt.writeAttempts)) : '–',
    ]);
  }
  return table(
    ['op alone', 'direct ops/s', 'proxy ops/s', 'ratio', 'direct CPU ms/op', 'proxy-side CPU ms/op (all)', '…of which proxy', 'ratio', 'coordinator calls/op', 'member Txn / Range calls/op', 'member write attempts/op'],
    rows,
  );
}

export function printWatch(t: Pick<TargetResult, 'kind' | 'workers'>, w: WatchResult): void {
  console.log(
    `\n### Watchers — ${targetLabel(t)}: ${w.watchers} watches on ${w.streams} streams (created in ${w.createS.toFixed(1)} s), ` +
      `${w.puts} puts in ${w.putSeconds.toFixed(1)} s (${fmt(w.puts / Math.max(0.001, w.putSeconds), 0)}/s, ${w.putErrors} failed` +
      `${w.writerStalls ? `; the writers hit their in-flight cap ${w.writerStalls} times` : ''})`,
  );
  console.log(
    `delivered ${w.delivered}/${w.expected} events; delay after ack p50 ${fmt(w.delay.quantile(0.5))} ms, p99 ${fmt(w.delay.quantile(0.99))} ms` +
      ` (after send p50 ${fmt(w.delayFromSend.quantile(0.5))} ms, p99 ${fmt(w.delayFromSend.quantile(0.99))} ms; ${w.early} events arrived before their ack);` +
      ` put p50 ${fmt(w.putLatency.quantile(0.5))} ms, p99 ${fmt(w.putLatency.quantile(0.99))} ms`,
  );
  console.log(
    `RSS: ${mib(w.rssBefore)} before, ${mib(w.rssAfterCreate)} with the watches (${kib((w.rssAfterCreate - w.rssBefore) / w.watchers)}/watcher), ${mib(w.rssAfterLoad)} after the writes (${kib((w.rssAfterLoad - w.rssBefore) / w.watchers)}/watcher)`,
  );
  console.log(
    `CPU from the first put until the last event (${w.cpuSeconds.toFixed(1)} s): ` +
      [...w.cpu].map(([label, v]) => `${label} ${fmt(v)} s (${fmt(v / Math.max(0.001, w.cpuSeconds))} cores, ${fmt(per1000(v, w.delivered), 3)} s/1000 events)`).join(', '),
  );
  if (w.anomalies.length) console.log(`anomalies: ${w.anomalies.join(' | ')}`);
}

// ---------------------------------------------------------------------------
// Figures of one cell

function writesOf(c: Cell): number {
  return c.mix.ops.get('create')!.samples.count + c.mix.ops.get('update')!.samples.count;
}

/** Coordinator round trips of the clock (allocate + conflict + ceiling) per write. */
function clockRoundTripsPerWrite(c: Cell): number {
  const k = c.rt.clock;
  return ((k.get('allocate') ?? 0) + (k.get('conflict') ?? 0) + (k.get('ceiling') ?? 0)) / Math.max(1, writesOf(c));
}

/**
 * Member write transactions per client write: those the write batcher sent
 * (metaetcd_member_write_batch_size_count) when writes are batched, otherwise one
 * per write attempt (metaetcd_member_write_attempts_total).
 */
function memberCallsPerWrite(c: Cell): number {
  const sent = c.rt.batches.transactions > 0 ? c.rt.batches.transactions : total(c.rt.writeAttempts);
  return sent / Math.max(1, writesOf(c));
}

/** Client writes per member write transaction of the write batcher (undefined when writes are not batched). */
function writesPerBatch(c: Cell): number | undefined {
  return c.rt.batches.transactions > 0 ? c.rt.batches.writes / c.rt.batches.transactions : undefined;
}

function opsPerS(c: Cell, t?: OpType): number {
  return (t ? c.mix.ops.get(t)!.samples.count : totalOps(c.mix)) / c.mix.elapsedS;
}

function quantile(c: Cell, t: OpType, q: number): number {
  return c.mix.ops.get(t)!.samples.quantile(q);
}

/** p50 over every op of the mix, whatever its type. */
function p50All(c: Cell): number {
  return Samples.merged(OP_TYPES.map((t) => c.mix.ops.get(t)!.samples)).quantile(0.5);
}

function cpuMsPerOp(c: Cell, label: string): number | undefined {
  return c.cpu.has(label) ? per1000(c.cpu.get(label)!, totalOps(c.mix)) : undefined;
}

function serverCpuMsPerOp(c: Cell): number {
  return per1000(serverCpuOf(c.cpu), totalOps(c.mix));
}

function cellAt(r: TargetResult | undefined, clients: number): Cell | undefined {
  return r?.cells.find((c) => c.clients === clients);
}

// ---------------------------------------------------------------------------
// Side by side

/** A metric row: its name, its value for one column's subject, and how many decimals. */
type Metric<T> = [name: string, get: (x: T) => number | undefined, digits: number];

/** Direct etcd, then each proxy target with its ratio to direct; rows with no value anywhere are left out. */
function comparison<T>(head: string, direct: T | undefined, proxies: { label: string; x: T | undefined }[], metrics: Metric<T>[]): string {
  const show = (v: number | undefined, digits: number) => (v === undefined ? '–' : fmt(v, digits));
  const rows: string[][] = [];
  for (const [name, get, digits] of metrics) {
    const dv = direct === undefined ? undefined : get(direct);
    const pvs = proxies.map((p) => (p.x === undefined ? undefined : get(p.x)));
    if (dv === undefined && pvs.every((v) => v === undefined)) continue;
    rows.push([name, show(dv, digits), ...pvs.flatMap((pv) => [show(pv, digits), dv === undefined || pv === undefined ? '–' : ratio(pv, dv)])]);
  }
  return table([head, 'direct etcd', ...proxies.flatMap((p) => [p.label, 'proxy/direct'])], rows);
}

function cellMetrics(proxyCpuLabels: string[]): Metric<Cell>[] {
  return [
    ['KV mix: ops/s (all)', (c) => opsPerS(c), 0],
    ...OP_TYPES.map((t): Metric<Cell> => [`  ${t}: ops/s`, (c) => opsPerS(c, t), 1]),
    ...OP_TYPES.flatMap((t): Metric<Cell>[] => [
      [`  ${t}: p50 ms`, (c) => quantile(c, t, 0.5), 2],
      [`  ${t}: p99 ms`, (c) => quantile(c, t, 0.99), 2],
    ]),
    ['  errors', (c) => totalErrors(c.mix), 0],
    ['CPU ms/op: etcd', (c) => cpuMsPerOp(c, 'etcd'), 3],
    ...proxyCpuLabels.map((l): Metric<Cell> => [`CPU ms/op: ${l}`, (c) => cpuMsPerOp(c, l), 3]),
    ['CPU ms/op: total server side', serverCpuMsPerOp, 3],
    ['CPU ms/op: load generator', (c) => cpuMsPerOp(c, LOADGEN), 3],
    ['coordinator RTs per write (clock)', (c) => (c.rt.clock.size ? clockRoundTripsPerWrite(c) : undefined), 3],
    ['coordinator calls per op (all)', (c) => perOpOrNone(c, (l) => l === 'coordinator'), 3],
    ['member write txns per write', (c) => (c.rt.writeAttempts.size ? memberCallsPerWrite(c) : undefined), 3],
    ['  client writes per member write txn', writesPerBatch, 2],
    ['member calls per op (all)', (c) => perOpOrNone(c, (l) => l.startsWith('member')), 3],
    ...['Range', 'Txn', 'Put', 'DeleteRange'].map(
      (method): Metric<Cell> => [`  member ${method} calls per op`, (c) => perOpOfMethod(c, (l) => l.startsWith('member'), method), 3],
    ),
  ];
}

/** Upstream calls of one method per op on the etcds `pick` selects; undefined when the target has none of them. */
function perOpOfMethod(c: Cell, pick: (label: string) => boolean, method: string): number | undefined {
  const labels = [...c.rt.upstream.keys()].filter(pick);
  if (labels.length === 0) return undefined;
  let n = 0;
  for (const l of labels) n += c.rt.upstream.get(l)!.get(method) ?? 0;
  return n / Math.max(1, totalOps(c.mix));
}

/** Upstream calls per op on the etcds `pick` selects; undefined when the target has none of them. */
function perOpOrNone(c: Cell, pick: (label: string) => boolean): number | undefined {
  return [...c.rt.upstream.keys()].some(pick) ? upstreamCalls(c.rt, pick) / Math.max(1, totalOps(c.mix)) : undefined;
}

/** The issue's table: one row per client count, plain etcd vs one proxy target. */
function issueTable(d: TargetResult | undefined, p: TargetResult, counts: number[]): string {
  const members = p.cells[0] ? [...p.cells[0].cpu.keys()].filter((l) => l.startsWith('member')).length : 0;
  const rows = counts.map((n) => {
    const dc = cellAt(d, n);
    const pc = cellAt(p, n);
    const both = <V>(f: (a: Cell, b: Cell) => V) => (dc && pc ? f(dc, pc) : undefined);
    return [
      String(n),
      dc ? fmt(opsPerS(dc), 0) : '–',
      pc ? fmt(opsPerS(pc), 0) : '–',
      both((a, b) => ratio(opsPerS(b), opsPerS(a))) ?? '–',
      `${dc ? fmt(p50All(dc)) : '–'} → ${pc ? fmt(p50All(pc)) : '–'}`,
      pc ? fmt(cpuMsPerOp(pc, 'proxy') ?? NaN, 3) : '–',
      both((a, b) => ratio(serverCpuMsPerOp(b), serverCpuMsPerOp(a))) ?? '–',
      pc ? fmt(clockRoundTripsPerWrite(pc), 3) : '–',
      pc ? fmt(memberCallsPerWrite(pc), 3) : '–',
    ];
  });
  return table(
    ['clients', 'plain etcd ops/s', `metaetcd over ${members} members`, 'ratio', 'p50 ms etcd → metaetcd', 'proxy CPU ms/op', 'whole-system CPU ratio', 'coordinator RTs/write', 'member write txns/write'],
    rows,
  );
}

/** Throughput and CPU per op of each proxy target by client count, with the growth over the 1-worker target (or the first). */
function workerTable(proxies: TargetResult[], counts: number[]): string {
  const base = proxies.find((p) => p.workers === 1) ?? proxies[0]!;
  const rows = counts.flatMap((n) =>
    proxies.map((p) => {
      const c = cellAt(p, n);
      const b = cellAt(base, n);
      return [
        String(n),
        p.workers === undefined ? '(default)' : String(p.workers),
        c ? fmt(opsPerS(c), 0) : '–',
        c && b ? ratio(opsPerS(c), opsPerS(b)) : '–',
        c ? fmt(p50All(c)) : '–',
        c ? fmt(cpuMsPerOp(c, 'proxy') ?? NaN, 3) : '–',
        c ? fmt((c.cpu.get('proxy') ?? NaN) / c.mix.elapsedS) : '–',
        c ? fmt(serverCpuMsPerOp(c), 3) : '–',
      ];
    }),
  );
  return table(['clients', 'workers', 'ops/s', `× vs ${targetLabel(base)}`, 'p50 ms', 'proxy CPU ms/op', 'proxy cores', 'all servers CPU ms/op'], rows);
}

function watchMetrics(): Metric<WatchResult>[] {
  const frontCpu = (w: WatchResult) => per1000(w.cpu.get('etcd') ?? w.cpu.get('proxy') ?? NaN, w.delivered);
  return [
    ['watch: ack → event p50 ms', (w) => w.delay.quantile(0.5), 2],
    ['watch: ack → event p99 ms', (w) => w.delay.quantile(0.99), 2],
    ['watch: put sent → event p50 ms', (w) => w.delayFromSend.quantile(0.5), 2],
    ['watch: put sent → event p99 ms', (w) => w.delayFromSend.quantile(0.99), 2],
    ['watch: events delivered %', (w) => (100 * w.delivered) / Math.max(1, w.expected), 2],
    ['watch: etcd / proxy CPU s per 1000 events', frontCpu, 3],
    ['watch: RSS per watcher (KiB)', (w) => (w.rssAfterCreate - w.rssBefore) / w.watchers / 1024, 2],
  ];
}

/** Every summary table: the issue's table per proxy target, workers, each client count in detail, watchers, op types alone. */
export function summary(results: TargetResult[]): string {
  const d = results.find((r) => r.kind === 'direct');
  const proxies = results.filter((r) => r.kind === 'proxy');
  const counts = [...new Set(results.flatMap((r) => r.cells.map((c) => c.clients)))];
  const parts: string[] = [];
  for (const p of proxies) {
    parts.push(
      `### plain etcd vs metaetcd (${targetLabel(p)}), KV mix\n(p50 over every op of the mix; CPU ratio: CPU ms/op summed over every serving process, proxy/direct; ` +
        `coordinator RTs: clock round trips; member write txns: member transactions sent for writes, retries included)\n\n${issueTable(d, p, counts)}`,
    );
  }
  if (proxies.length > 1) parts.push(`### proxy by worker count, KV mix\n\n${workerTable(proxies, counts)}`);
  const labels = [...new Set(proxies.flatMap((p) => p.cells.flatMap((c) => [...c.cpu.keys()])))].filter((l) => l !== LOADGEN);
  for (const n of counts) {
    const cols = proxies.map((p) => ({ label: targetLabel(p), x: cellAt(p, n) }));
    parts.push(`### KV mix, ${n} client${n === 1 ? '' : 's'}\n\n${comparison('metric', cellAt(d, n), cols, cellMetrics(labels))}`);
  }
  if (d?.watch || proxies.some((p) => p.watch)) {
    const n = proxies.find((p) => p.watch)?.watch?.watchers ?? d?.watch?.watchers ?? 0;
    parts.push(`### Watchers (${n})\n\n${comparison('metric', d?.watch, proxies.map((p) => ({ label: targetLabel(p), x: p.watch })), watchMetrics())}`);
  }
  for (const p of proxies) {
    if (!d?.probes.size && !p.probes.size) continue;
    parts.push(`### Each op type run alone — direct etcd vs ${targetLabel(p)}, ${p.probeClients} clients (CPU summed over every serving process)\n\n${probeComparison(d, p)}`);
  }
  return parts.join('\n\n');
}
