// Printing: per-target details as each phase ends, then the side-by-side
// comparison as markdown: the KV mix and watchers, and each op type run alone
// (CPU and upstream round trips per op type).

import { OP_TYPES, totalErrors, totalOps, type MixResult, type OpType } from './load.js';
import { total, upstreamCalls, type RoundTrips } from './prom.js';
import { fmt, kib, mib, ratio, table } from './stats.js';
import type { WatchResult } from './watchers.js';

export interface Probe {
  ops: number;
  errors: number;
  elapsedS: number;
  /** CPU seconds of each process (and the load generator). */
  cpu: Map<string, number>;
  rt: RoundTrips;
}

export interface TargetResult {
  kind: 'direct' | 'proxy';
  mix: MixResult;
  /** CPU seconds of each process over the mix (including "load generator"). */
  cpu: Map<string, number>;
  rt: RoundTrips;
  probes: Map<OpType, Probe>;
  watch: WatchResult | undefined;
  watchError: string | undefined;
}

const LOADGEN = 'load generator';

function per1000(v: number, ops: number): number {
  return ops > 0 ? (v / ops) * 1000 : NaN;
}

const kindLabel = (k: 'direct' | 'proxy') => (k === 'direct' ? 'direct etcd' : 'proxy');

// ---------------------------------------------------------------------------
// Per-target details

export function printMix(r: TargetResult): void {
  const m = r.mix;
  const n = totalOps(m);
  console.log(`\n### KV mix — ${kindLabel(r.kind)}: ${fmt(n / m.elapsedS, 0)} ops/s over ${m.elapsedS.toFixed(1)} s (${n} ops, ${totalErrors(m)} errors)`);
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
      ['process', 'CPU s', 'cores', 'CPU s / 1000 ops'],
      [...r.cpu].map(([label, v]) => [label, fmt(v), fmt(v / m.elapsedS), fmt(per1000(v, n), 3)]),
    ),
  );
  if (r.kind === 'proxy') {
    const writes = m.ops.get('create')!.samples.count + m.ops.get('update')!.samples.count;
    const reads = n - writes;
    const clock = r.rt.clock;
    console.log(
      `proxy clock round trips: ${[...clock].map(([k, v]) => `${k} ${v}`).join(', ') || 'none'}` +
        ` → ${fmt(((clock.get('allocate') ?? 0) + (clock.get('conflict') ?? 0) + (clock.get('ceiling') ?? 0)) / Math.max(1, writes), 3)} per write (allocate+conflict+ceiling),` +
        ` ${fmt((clock.get('read') ?? 0) / Math.max(1, reads), 3)} reads per read op`,
    );
    console.log(`member write attempts: ${[...r.rt.writeAttempts].map(([k, v]) => `${k} ${v}`).join(', ') || 'none'} → ${fmt(total(r.rt.writeAttempts) / Math.max(1, writes), 3)} per write`);
  }
  console.log(`unary gRPC calls each etcd served: ${[...r.rt.upstream].map(([label, calls]) => `${label} {${[...calls].filter(([, v]) => v > 0).map(([k, v]) => `${k} ${v}`).join(', ')}}`).join(', ')}`);
}

export function printProbes(r: TargetResult): void {
  if (r.probes.size === 0) return;
  console.log(`\n### Each op type alone — ${kindLabel(r.kind)}`);
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

export function printWatch(kind: 'direct' | 'proxy', w: WatchResult): void {
  console.log(
    `\n### Watchers — ${kindLabel(kind)}: ${w.watchers} watches on ${w.streams} streams (created in ${w.createS.toFixed(1)} s), ` +
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
// Side by side

export function finalTable(results: TargetResult[]): string {
  const d = results.find((r) => r.kind === 'direct');
  const p = results.find((r) => r.kind === 'proxy');
  const rows: string[][] = [];
  const row = (name: string, dv: number | undefined, pv: number | undefined, digits = 2, show?: (v: number) => string) => {
    const f = show ?? ((v: number) => fmt(v, digits));
    rows.push([name, dv === undefined ? '–' : f(dv), pv === undefined ? '–' : f(pv), dv === undefined || pv === undefined ? '–' : ratio(pv, dv)]);
  };
  const ops = (r: TargetResult | undefined) => (r ? totalOps(r.mix) : undefined);
  const rate = (r: TargetResult | undefined, t?: OpType) => (r ? (t ? r.mix.ops.get(t)!.samples.count : totalOps(r.mix)) / r.mix.elapsedS : undefined);
  const q = (r: TargetResult | undefined, t: OpType, x: number) => r?.mix.ops.get(t)!.samples.quantile(x);

  row('KV mix: ops/s (all)', rate(d), rate(p), 0);
  for (const t of OP_TYPES) row(`  ${t}: ops/s`, rate(d, t), rate(p, t), 1);
  for (const t of OP_TYPES) {
    row(`  ${t}: p50 ms`, q(d, t, 0.5), q(p, t, 0.5));
    row(`  ${t}: p99 ms`, q(d, t, 0.99), q(p, t, 0.99));
  }
  row('  errors', d ? totalErrors(d.mix) : undefined, p ? totalErrors(p.mix) : undefined, 0);
  const cpuOf = (r: TargetResult | undefined, label: string) => (r?.cpu.has(label) ? per1000(r.cpu.get(label)!, ops(r)!) : undefined);
  row('CPU s/1000 ops: etcd', cpuOf(d, 'etcd'), undefined, 3);
  const labels = p ? [...p.cpu.keys()].filter((l) => l !== LOADGEN) : [];
  for (const l of labels) row(`CPU s/1000 ops: ${l}`, undefined, cpuOf(p, l), 3);
  row('CPU s/1000 ops: total server side', d ? per1000(serverCpuOf(d.cpu), ops(d)!) : undefined, p ? per1000(serverCpuOf(p.cpu), ops(p)!) : undefined, 3);
  row('CPU s/1000 ops: load generator', cpuOf(d, LOADGEN), cpuOf(p, LOADGEN), 3);
  if (p) {
    const writes = p.mix.ops.get('create')!.samples.count + p.mix.ops.get('update')!.samples.count;
    const c = p.rt.clock;
    row('coordinator RTs per write (clock)', undefined, ((c.get('allocate') ?? 0) + (c.get('conflict') ?? 0) + (c.get('ceiling') ?? 0)) / Math.max(1, writes), 3);
    row('coordinator calls per op (all)', undefined, upstreamCalls(p.rt, (l) => l === 'coordinator') / Math.max(1, ops(p)!), 3);
    row('member calls per op (all)', undefined, upstreamCalls(p.rt, (l) => l.startsWith('member')) / Math.max(1, ops(p)!), 3);
  }
  const w = (r: TargetResult | undefined) => r?.watch;
  const wd = w(d);
  const wp = w(p);
  if (wd || wp) {
    const n = wp?.watchers ?? wd?.watchers ?? 0;
    row(`watch (${n} watchers): ack → event p50 ms`, wd?.delay.quantile(0.5), wp?.delay.quantile(0.5));
    row(`watch: ack → event p99 ms`, wd?.delay.quantile(0.99), wp?.delay.quantile(0.99));
    row('watch: put sent → event p50 ms', wd?.delayFromSend.quantile(0.5), wp?.delayFromSend.quantile(0.5));
    row('watch: put sent → event p99 ms', wd?.delayFromSend.quantile(0.99), wp?.delayFromSend.quantile(0.99));
    row('watch: events delivered %', wd ? (100 * wd.delivered) / Math.max(1, wd.expected) : undefined, wp ? (100 * wp.delivered) / Math.max(1, wp.expected) : undefined, 2);
    const frontCpu = (x: WatchResult | undefined, label: string) => (x?.cpu.has(label) ? per1000(x.cpu.get(label)!, x.delivered) : undefined);
    row('watch: etcd / proxy CPU s per 1000 events', frontCpu(wd, 'etcd'), frontCpu(wp, 'proxy'), 3);
    const perWatcher = (x: WatchResult | undefined) => (x ? (x.rssAfterCreate - x.rssBefore) / x.watchers : undefined);
    row('watch: RSS per watcher (KiB)', perWatcher(wd), perWatcher(wp), 2, (v) => fmt(v / 1024, 2));
  }
  let out = table(['metric', 'direct etcd', 'proxy (3 members)', 'proxy/direct'], rows);
  if (d?.probes.size || p?.probes.size) out += `\n\nEach op type run alone (same clients; CPU summed over every serving process):\n\n${probeComparison(d, p)}`;
  return out;
}
