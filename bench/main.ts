// `npm run bench`: plain etcd vs metaetcd over three members, side by side in one
// run on one machine. Each target gets the machine to itself in turn:
//   1. start it; the watcher fan-out test (while its processes are fresh);
//   2. preload ~5000 pods of 1 KiB; warm up; run the KV mix, reading the CPU
//      time of every serving process and the round-trip counters around it;
//   3. run each op type alone for a moment: CPU and round trips per op type;
//   4. stop it.
// Then markdown tables with the ratios proxy/direct. The bench exits 0 unless
// something broke (a target failed, more than 1% of operations failed, or a
// watcher missed an event).
//
// Settings (environment; defaults in parentheses):
//   BENCH_SECONDS (20)            KV mix duration per target
//   BENCH_WARMUP_SECONDS (3)      unmeasured mix before it
//   BENCH_CLIENTS (32)            concurrent clients; BENCH_CONNECTIONS (4) HTTP/2 connections
//   BENCH_MIX                     e.g. "create=10,update=40,get=48,list=1.5,list-all=0.5"
//   BENCH_PROBE_SECONDS (2)       each op type alone, per target; 0 skips
//   BENCH_WATCHERS (1000)         0 skips; BENCH_WATCH_PREFIXES (100), BENCH_WATCHES_PER_STREAM (100)
//   BENCH_WATCH_SECONDS (15), BENCH_WATCH_PUTS (200 puts/s), BENCH_DIRECT_WATCH (1; 0 skips etcd's)
//   BENCH_TARGETS (direct,proxy), BENCH_MEMBERS (3)
//   BENCH_NO_BUILD=1              measure dist/ as it is instead of running tsc first
//   BENCH_KUBE=1                 also run the simulated Kubernetes control plane (bench/kube.ts; its BENCH_KUBE_* settings)
//   BENCH_PROXY_NODE_ARGS         node flags for the proxy, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof"
//                                 (the profile is written when the bench stops the proxy)

import os from 'node:os';
import { ConnectionPool } from './client.js';
import { buildProxy, scratchDir, startDirect, startProxyCluster, stopEverything, type Target } from './cluster.js';
import { DEFAULT_SHAPE, DEFAULT_WEIGHTS, Keyspace, OP_TYPES, preload, runMix, totalErrors, totalOps, type MixResult, type OpType, type Weights } from './load.js';
import { roundTrips, scrapeAll, type RoundTrips } from './prom.js';
import { finalTable, printMix, printProbes, printWatch, type Probe, type TargetResult } from './report.js';
import { cpuDelta, cpuSnapshot, nowMs } from './stats.js';
import { runWatchers, type WatchResult } from './watchers.js';
import { runKubeBench } from './kube.js';

function envNumber(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < 0) throw new Error(`${name}=${raw}: expected a non-negative number`);
  return n;
}

/** "create=10,update=40,..." → weights (unnamed op types keep their default). */
function mixWeights(raw: string | undefined): Weights {
  const w = { ...DEFAULT_WEIGHTS };
  if (!raw) return w;
  for (const part of raw.split(',').filter(Boolean)) {
    const [name, value] = part.split('=');
    if (!OP_TYPES.includes(name as OpType) || !Number.isFinite(Number(value)) || Number(value) < 0) {
      throw new Error(`BENCH_MIX: bad entry ${JSON.stringify(part)} (op types: ${OP_TYPES.join(', ')})`);
    }
    w[name as OpType] = Number(value);
  }
  return w;
}

function settings() {
  const targets = (process.env.BENCH_TARGETS ?? 'direct,proxy').split(',').map((s) => s.trim());
  for (const t of targets) if (t !== 'direct' && t !== 'proxy') throw new Error(`BENCH_TARGETS: unknown target ${t} (direct, proxy)`);
  return {
    targets: targets as ('direct' | 'proxy')[],
    seconds: envNumber('BENCH_SECONDS', 20),
    weights: mixWeights(process.env.BENCH_MIX),
    warmupSeconds: envNumber('BENCH_WARMUP_SECONDS', 3),
    clients: Math.max(1, Math.floor(envNumber('BENCH_CLIENTS', 32))),
    connections: Math.max(1, Math.floor(envNumber('BENCH_CONNECTIONS', 4))),
    probeSeconds: envNumber('BENCH_PROBE_SECONDS', 2),
    members: Math.max(1, Math.floor(envNumber('BENCH_MEMBERS', 3))),
    watchers: Math.floor(envNumber('BENCH_WATCHERS', 1000)),
    watchPrefixes: Math.max(1, Math.floor(envNumber('BENCH_WATCH_PREFIXES', 100))),
    watchesPerStream: Math.max(1, Math.floor(envNumber('BENCH_WATCHES_PER_STREAM', 100))),
    watchSeconds: envNumber('BENCH_WATCH_SECONDS', 15),
    watchPutsPerSecond: envNumber('BENCH_WATCH_PUTS', 200),
    directWatch: process.env.BENCH_DIRECT_WATCH !== '0',
    build: process.env.BENCH_NO_BUILD !== '1',
    proxyNodeArgs: (process.env.BENCH_PROXY_NODE_ARGS ?? '').split(/\s+/).filter(Boolean),
    requestTimeoutMs: 10_000,
  };
}
type Settings = ReturnType<typeof settings>;

/** Problems make the bench exit 1; warnings (failures under 1%) are only printed. */
const problems: string[] = [];
const warnings: string[] = [];

async function benchTarget(target: Target, s: Settings): Promise<TargetResult> {
  const label = target.kind === 'direct' ? 'direct etcd' : `proxy over ${s.members} members`;
  // Watchers first, while the processes are fresh: their RSS is then steadier than after the KV mix.
  const watch = s.watchers > 0 && (target.kind === 'proxy' || s.directWatch) ? await watchPhase(target, s, label) : undefined;
  const pool = new ConnectionPool(target.address, s.connections);
  try {
    const ks = new Keyspace(DEFAULT_SHAPE);
    const t = nowMs();
    await preload(pool, ks, s.clients, s.requestTimeoutMs);
    console.log(`\n[${label}] preloaded ${ks.pods.length} pods of ${ks.shape.valueBytes} B in ${((nowMs() - t) / 1000).toFixed(1)} s`);
    if (s.warmupSeconds > 0) {
      const warm = await runMix(pool, ks, { clients: s.clients, seconds: s.warmupSeconds, weights: s.weights, timeoutMs: s.requestTimeoutMs });
      console.log(`[${label}] warm-up: ${totalOps(warm)} ops, ${totalErrors(warm)} errors`);
    }

    console.log(`[${label}] KV mix: ${s.clients} clients over ${s.connections} connections for ${s.seconds} s`);
    const kv = await measured(target, () => runMix(pool, ks, { clients: s.clients, seconds: s.seconds, weights: s.weights, timeoutMs: s.requestTimeoutMs }));
    const result: TargetResult = { kind: target.kind, mix: kv.mix, cpu: kv.cpu, rt: kv.rt, probes: new Map(), watch: watch?.result, watchError: watch?.error };
    printMix(result);
    checkErrors(label, 'KV mix', totalOps(kv.mix), totalErrors(kv.mix), kv.mix.errorMessages);

    if (s.probeSeconds > 0) {
      for (const type of OP_TYPES) {
        const weights = Object.fromEntries(OP_TYPES.map((x) => [x, x === type ? 1 : 0])) as Weights;
        const p = await measured(target, () => runMix(pool, ks, { clients: s.clients, seconds: s.probeSeconds, weights, timeoutMs: s.requestTimeoutMs }));
        const probe: Probe = { ops: totalOps(p.mix), errors: totalErrors(p.mix), elapsedS: p.mix.elapsedS, cpu: p.cpu, rt: p.rt };
        result.probes.set(type, probe);
        checkErrors(label, `${type} probe`, probe.ops, probe.errors, p.mix.errorMessages);
      }
      printProbes(result);
    }
    return result;
  } finally {
    pool.close();
  }
}

/** Runs `work` between two readings of every process's CPU time and of the round-trip counters. */
async function measured(target: Target, work: () => Promise<MixResult>): Promise<{ mix: MixResult; cpu: Map<string, number>; rt: RoundTrips }> {
  const scrapeBefore = await scrapeAll(target.scrape);
  const cpuBefore = cpuSnapshot(target.processes);
  const mix = await work();
  const cpu = cpuDelta(cpuBefore, cpuSnapshot(target.processes));
  const rt = roundTrips(scrapeBefore, await scrapeAll(target.scrape));
  return { mix, cpu, rt };
}

function checkErrors(label: string, what: string, ok: number, errors: number, messages: string[]): void {
  if (errors === 0) return;
  const msg = `${label}: ${errors} of ${ok + errors} operations of the ${what} failed: ${messages.join(' | ')}`;
  (errors > 0.01 * (ok + errors) ? problems : warnings).push(msg);
}

async function watchPhase(target: Target, s: Settings, label: string): Promise<{ result?: WatchResult; error?: string }> {
  const watchPool = new ConnectionPool(target.address, Math.min(10, Math.ceil(s.watchers / s.watchesPerStream)));
  try {
    console.log(`\n[${label}] watchers: ${s.watchers} on ${s.watchPrefixes} prefixes, ${s.watchesPerStream} per stream; ${s.watchPutsPerSecond} puts/s for ${s.watchSeconds} s`);
    const w = await runWatchers(watchPool, target.front, target.processes, {
      watchers: s.watchers,
      prefixes: s.watchPrefixes,
      perStream: s.watchesPerStream,
      seconds: s.watchSeconds,
      putsPerSecond: s.watchPutsPerSecond,
      valueBytes: 512,
      timeoutMs: s.requestTimeoutMs,
    });
    printWatch(target.kind, w);
    if (w.delivered !== w.expected) problems.push(`${label}: watchers received ${w.delivered} events, expected ${w.expected}`);
    checkErrors(label, 'watch-test puts', w.puts - w.putErrors, w.putErrors, w.anomalies.filter((a) => a.startsWith('put')).slice(0, 1));
    return { result: w };
  } catch (err) {
    const error = err instanceof Error ? err.message : String(err);
    problems.push(`${label}: watcher test failed: ${error}`);
    console.log(`[${label}] watcher test failed: ${error}`);
    return { error };
  } finally {
    watchPool.close();
  }
}

async function main(): Promise<number> {
  const s = settings();
  const load = os.loadavg().map((x) => x.toFixed(2)).join(' ');
  console.log(
    `metaetcd bench — ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? '?'}), load average ${load}, node ${process.version}\n` +
      `KV mix: ${s.clients} clients, ${s.seconds} s per target after ${s.warmupSeconds} s warm-up; weights ${OP_TYPES.map((t) => `${t} ${s.weights[t]}`).join(', ')}\n` +
      `keyspace: ${DEFAULT_SHAPE.namespaces} namespaces × ${DEFAULT_SHAPE.podsPerNamespace} pods of ${DEFAULT_SHAPE.valueBytes} B, page limit ${DEFAULT_SHAPE.pageLimit}`,
  );
  if (s.targets.includes('proxy') && s.build) {
    const t = nowMs();
    buildProxy();
    console.log(`built the proxy (tsc -p tsconfig.build.json) in ${((nowMs() - t) / 1000).toFixed(1)} s`);
  }
  const root = scratchDir();
  const results: TargetResult[] = [];
  for (const kind of s.targets) {
    const t = nowMs();
    const target = kind === 'direct' ? await startDirect(root) : await startProxyCluster(root, { memberCount: s.members, nodeArgs: s.proxyNodeArgs });
    console.log(`\n## ${kind === 'direct' ? 'direct etcd' : `proxy over ${s.members} members`} (started in ${((nowMs() - t) / 1000).toFixed(1)} s; pids ${target.processes.map((p) => `${p.label} ${p.pid}`).join(', ')})`);
    try {
      results.push(await benchTarget(target, s));
    } finally {
      await target.stop();
    }
  }
  console.log('\n## Summary (proxy/direct: > 1 means the proxy is higher)\n');
  console.log(finalTable(results));
  // The simulated Kubernetes control plane (bench/kube.ts), opt-in: BENCH_KUBE=1.
  if (process.env.BENCH_KUBE === '1') await runKubeBench({ built: true, members: s.members });
  if (warnings.length) console.log(`\nWARNINGS (under 1% of operations failed):\n${warnings.map((w) => `- ${w}`).join('\n')}`);
  if (problems.length) {
    console.log(`\nPROBLEMS:\n${problems.map((p) => `- ${p}`).join('\n')}`);
    return 1;
  }
  return 0;
}

let interrupted = false;
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    if (interrupted) return;
    interrupted = true;
    console.error(`\nbench: ${sig}, stopping every process it started`);
    void stopEverything().finally(() => process.exit(130));
  });
}

const started = nowMs();
main()
  .then(
    (code) => code,
    (err: unknown) => {
      // After a signal, requests fail because their target is being stopped: not worth a stack.
      if (!interrupted) console.error(`\nbench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
      return 1;
    },
  )
  .then(async (code) => {
    await stopEverything();
    if (interrupted) return; // the signal handler exits once everything is stopped
    console.log(`\n(bench took ${((nowMs() - started) / 1000).toFixed(0)} s)`);
    process.exit(code);
  });
